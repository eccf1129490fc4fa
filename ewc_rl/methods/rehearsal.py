"""Rehearsal (section ``[rehearsal]``): a share of every batch from earlier games' transitions, with the TD loss.

The CLEAR-style baseline (Rolnick et al. 2019, without its V-trace and behaviour cloning terms, which need a
policy-gradient learner): at the end of each game's segment a uniform sample of at most ``memory`` transitions of
its replay is kept (on a revisit, the kept sample and the new replay are merged so that the memory stays a uniform
sample of everything the game's replay held at its segments' ends: a reservoir). While later games train,
``round(fraction * batch_size)`` of every update's samples are drawn uniformly from the union of the earlier games'
memories, the rest from the current replay, and the update's loss is the mean Huber TD loss over the whole mixed
batch. With per-game layers each remembered transition is scored (and its target computed) with its own game's
layers. Stacked Atari frames are kept as the observation and the next observation's newest frame only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from ewc_rl.config import ConfigError, setting
from ewc_rl.envs import observation_shape, suite
from ewc_rl.methods import Method, SegmentEnd, register
from ewc_rl.methods.store import GameStore, Rows, one_forward, playing
from ewc_rl.replay import stored_indices
from ewc_rl.schedule import unique_games

if TYPE_CHECKING:
    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment

FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "discounts")


@dataclass
class RehearsalSettings:
    """How much of each finished game is kept, and how much of every batch it supplies."""

    memory: int = setting(10_000, min=1)  # M: transitions kept per finished game
    fraction: float = setting(0.25, min=0, max=1)  # rho: share of every batch drawn from earlier games


def _compact(rows: Rows) -> Rows:
    """Keep only the newest frame of next observations that are the observation shifted by one frame."""
    obs, nxt = rows["observations"], rows["next_observations"]
    if obs.dim() == 4 and obs.shape[1] > 1 and th.equal(nxt[:, :-1], obs[:, 1:]):
        rows = {k: v for k, v in rows.items() if k != "next_observations"}
        rows["next_frames"] = nxt[:, -1:].clone()
    return rows


def _expand(rows: Rows) -> Rows:
    if "next_frames" not in rows:
        return rows
    out = {k: v for k, v in rows.items() if k != "next_frames"}
    out["next_observations"] = th.cat([rows["observations"][:, 1:], rows["next_frames"]], dim=1)
    return out


def _samples(rows: Rows) -> ReplayBufferSamples:
    return ReplayBufferSamples(**{k: rows.get(k) for k in FIELDS})  # type: ignore[arg-type]  # discounts: None


@register
class Rehearsal(Method):
    """Mean TD loss over batches of which a fraction rho comes from earlier games' bounded memories."""

    name = "rehearsal"
    Settings = RehearsalSettings
    example = {"memory": 64, "fraction": 0.5}

    def __init__(self, settings: RehearsalSettings | None = None) -> None:
        super().__init__(settings)
        self.store = GameStore()
        self.seen: dict[str, int] = {}  # transitions each game's memory is a uniform sample of
        self._last: list[tuple[str, th.Tensor]] = []
        self._joined: ReplayBufferSamples | None = None  # the latest joined draw's transitions (see inputs)

    # -- before a run --------------------------------------------------------------------------------

    @classmethod
    def check(cls, settings: RehearsalSettings, cfg: Config) -> None:
        if not cfg.agent.per_game_replay:
            raise ConfigError(
                f"{cfg.source}: 'rehearsal' keeps a sample of each finished game's own replay and "
                "needs 'agent.per_game_replay' = true (one shared memory already replays earlier games)"
            )

    @staticmethod
    def bytes_per_transition(cfg: Config, game: str) -> int:
        """Bytes one kept transition takes (uint8 observations; next observation as one frame when stacked)."""
        shape = observation_shape(game, cfg.env)
        obs = int(np.prod(shape))
        stacked = suite(game) == "atari" and shape[0] > 1 and cfg.dqn.n_steps == 1
        nxt = obs // shape[0] if stacked else obs
        return obs + nxt + 8 + 4 + 4 + (4 if cfg.dqn.n_steps > 1 else 0)

    @classmethod
    def describe(cls, settings: RehearsalSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        per_game = settings.memory * cls.bytes_per_transition(cfg, schedule[0].game)
        kept = max(len(unique_games(schedule)) - 1, 0)
        share = min(round(settings.fraction * cfg.dqn.batch_size), cfg.dqn.batch_size - 1)
        return [
            f"rehearsal: {share} of every {cfg.dqn.batch_size} batch samples from earlier games' memories of "
            f"at most {settings.memory:,} transitions each ({per_game / 1e6:.1f} MB per game, at most {kept} "
            f"kept: peak {kept * per_game / 1e6:.1f} MB, in every checkpoint)"
        ]

    @classmethod
    def warnings(cls, settings: RehearsalSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        if round(settings.fraction * cfg.dqn.batch_size) == 0:
            return [
                f"rehearsal.fraction = {settings.fraction:g} of a {cfg.dqn.batch_size}-sample batch rounds to "
                "no remembered sample: rehearsal does nothing"
            ]
        return []

    # -- hooks ---------------------------------------------------------------------------------------

    def batch_share(self, agent: ContinualDQN, batch_size: int) -> int:
        if not self.store.others(agent.game):
            return 0
        return min(round(self.settings.fraction * batch_size), batch_size - 1)

    def loss(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        self._last = self.store.draw(self.batch_share(agent, agent.batch_size), exclude=agent.game)
        return self._td_sum(agent, self._last)

    def inputs(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        n = self.batch_share(agent, agent.batch_size)
        if not n or not one_forward(agent):
            return None
        self._last = self.store.draw(n, exclude=agent.game)
        parts = [_expand(self.store.rows(game, index)) for game, index in self._last]
        self._joined = _samples({k: th.cat([p[k] for p in parts]) for k in parts[0]})
        return self._joined.observations

    def joined_loss(self, agent: ContinualDQN, batch: ReplayBufferSamples, q: th.Tensor) -> th.Tensor | None:
        data = self._joined
        assert data is not None, "joined_loss follows inputs"
        target = agent.td_targets(data)  # no per-game layers here (one_forward): one target forward for all games
        return F.smooth_l1_loss(q.gather(1, data.actions.long()), target, reduction="sum") / agent.batch_size

    def objective(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        """The term of the latest :meth:`loss`, at its draw."""
        return self._td_sum(agent, self._last)

    def samples(self, game: str, index: th.Tensor) -> ReplayBufferSamples:
        """Remembered transitions of ``game`` as a replay batch."""
        return _samples(_expand(self.store.rows(game, index)))

    def _td_sum(self, agent: ContinualDQN, draw: list[tuple[str, th.Tensor]]) -> th.Tensor | None:
        """Sum of the per-sample Huber TD losses over the drawn transitions, divided by the batch size."""
        if not draw:
            return None
        total = None
        for game, index in draw:
            data = self.samples(game, index)
            with playing(agent, game):
                target = agent.td_targets(data)
                q = agent.q_net(data.observations).gather(1, data.actions.long())
                part = F.smooth_l1_loss(q, target, reduction="sum")
            total = part if total is None else total + part
        assert total is not None
        return total / agent.batch_size

    def on_segment_end(self, agent: ContinualDQN, end: SegmentEnd) -> None:
        if end.last or agent.replay_buffer is None:
            return
        end.status(f"rehearsal memory ({self.settings.memory} transitions)")
        self.remember(agent, end.game, np.random.default_rng(end.seed * 7919 + end.index + 17))

    def remember(self, agent: ContinualDQN, game: str, rng: np.random.Generator) -> None:
        """Merge a uniform sample of the current replay into ``game``'s memory, keeping it a uniform sample of
        everything stored so far (reservoir sampling, a segment at a time)."""
        buffer = agent.replay_buffer
        assert buffer is not None
        valid = stored_indices(buffer)
        old, seen = self.store.size(game), self.seen.get(game, 0)
        keep = min(self.settings.memory, seen + len(valid))
        # how many of the ``keep`` come from the new transitions: hypergeometric, as a uniform draw from the union
        new = int(rng.hypergeometric(len(valid), seen, keep)) if seen and len(valid) else min(keep, len(valid))
        parts = []
        if new:
            picked = buffer._get_samples(np.sort(rng.choice(valid, size=new, replace=False)))
            parts.append(
                {
                    k: getattr(picked, k).detach().to(agent.device)
                    for k in FIELDS
                    if getattr(picked, k, None) is not None
                }
            )
        if keep - new and old:
            index = th.as_tensor(
                np.sort(rng.choice(old, size=min(keep - new, old), replace=False)), device=agent.device
            )
            parts.insert(0, _expand(self.store.rows(game, index)))
        if parts:
            self.store.put(game, _compact({k: th.cat([p[k] for p in parts]) for k in parts[0]}))
        self.seen[game] = seen + len(valid)

    def state_dict(self) -> dict[str, Any]:
        return {
            "store": self.store.state_dict(),
            "seen_games": list(self.seen),
            "seen": [int(n) for n in self.seen.values()],
        }

    def load_state_dict(self, state: dict[str, Any], device: Any) -> None:
        self.store.load_state_dict(state["store"], device)
        self.seen = {str(g): int(n) for g, n in zip(state["seen_games"], state["seen"], strict=True)}
