"""The functional anchor (section ``[functional]``): distillation on earlier games' states.

At the end of each game's segment, ``states`` states drawn uniformly from its replay (the states the Fisher uses)
and the network's Q-values on them are kept: outputs, not a copy of the network. While later games train, every
update adds ``lambda`` times the mean over ``batch_size`` of those states (drawn uniformly from all earlier games'
states) of

* ``target = "policy"``: KL(pi_old(s) || pi(s)) with pi = softmax(Q / tau), the quantity whose second-order
  expansion at the stored network is EWC's penalty with the exact policy Fisher (Kirkpatrick et al. 2017 anchor
  the parameters; this anchors the function itself), or
* ``target = "q"``: the mean over actions of (Q(s, a) - Q_old(s, a))^2, divided, with ``normalize``, by the
  variance of that game's stored Q-values (so that games whose returns differ in scale weigh alike).

With per-game layers each state is evaluated with its own game's layers. A revisited game's states and outputs are
replaced by the latest ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
import torch.nn.functional as F

from ewc_rl.config import ConfigError, setting
from ewc_rl.envs import observation_shape
from ewc_rl.methods import Method, SegmentEnd, register
from ewc_rl.methods.store import GameStore, Rows, one_forward, playing
from ewc_rl.replay import sample_transitions
from ewc_rl.schedule import unique_games

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment

TARGETS = ("policy", "q")
N_ACTIONS = 18  # the most any game of the suites has: used for the dry-run's memory figure only


@dataclass
class FunctionalSettings:
    """Which outputs are kept, how many, and how strongly later games are held to them."""

    lam: float = setting(1.0, key="lambda", min=0)
    target: str = setting("policy", choices=TARGETS)
    tau: float = setting(1.0, above=0)  # policy temperature, as penalty.tau
    normalize: bool = setting(False)  # target "q": divide by the variance of the game's stored Q-values
    states: int = setting(2_000, min=1)  # S: states kept per finished game
    batch_size: int = setting(8, min=1)  # states per update


@register
class FunctionalAnchor(Method):
    """lambda * mean over stored states of KL(pi_old || pi) (or of the squared Q difference)."""

    name = "functional"
    Settings = FunctionalSettings
    example = {"lambda": 1.0, "states": 32, "batch_size": 8}

    def __init__(self, settings: FunctionalSettings | None = None) -> None:
        super().__init__(settings)
        self.store = GameStore()
        self._last: list[tuple[str, th.Tensor]] = []
        self._rows: list[tuple[str, Rows]] = []  # the latest joined draw's rows (see inputs)

    # -- before a run --------------------------------------------------------------------------------

    @classmethod
    def check(cls, settings: FunctionalSettings, cfg: Config) -> None:
        if not cfg.agent.per_game_replay:
            raise ConfigError(
                f"{cfg.source}: 'functional' keeps states of each finished game's own replay and needs "
                "'agent.per_game_replay' = true (a shared memory mixes the games)"
            )

    @classmethod
    def describe(cls, settings: FunctionalSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        if settings.lam == 0:
            return []
        per_game = settings.states * (int(np.prod(observation_shape(schedule[0].game, cfg.env))) + 4 * N_ACTIONS)
        kept = max(len(unique_games(schedule)) - 1, 0)
        what = f"KL(pi_old || pi), tau {settings.tau:g}" if settings.target == "policy" else "squared Q difference"
        return [
            f"functional anchor: lambda {settings.lam:g} x {what}, mean over {settings.batch_size} states per "
            f"update from {settings.states:,} kept per earlier game with their Q-values ({per_game / 1e6:.1f} MB "
            f"per game, at most {kept} kept: peak {kept * per_game / 1e6:.1f} MB, in every checkpoint)"
        ]

    # -- hooks ---------------------------------------------------------------------------------------

    def loss(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        if self.settings.lam == 0:
            return None
        self._last = self.store.draw(self.settings.batch_size, exclude=agent.game)
        return self._value(agent, self._last)

    def inputs(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        if self.settings.lam == 0 or not one_forward(agent) or not self.store.others(agent.game):
            return None
        self._last = self.store.draw(self.settings.batch_size, exclude=agent.game)
        self._rows = [(game, self.store.rows(game, index)) for game, index in self._last]
        return th.cat([rows["observations"] for _, rows in self._rows])

    def joined_loss(self, agent: ContinualDQN, batch: ReplayBufferSamples, q: th.Tensor) -> th.Tensor | None:
        total, start = q.new_zeros(()), 0
        for game, rows in self._rows:
            old = rows["q_values"]
            total = total + self._divergence(game, q[start : start + len(old)], old)
            start += len(old)
        return self.settings.lam * total / start

    def objective(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor | None:
        """The term of the latest :meth:`loss`, at its draw."""
        return self._value(agent, self._last)

    def value(self, agent: ContinualDQN, game: str, index: th.Tensor) -> th.Tensor:
        """The sum over the states ``index`` of ``game`` of the per-state divergence from the stored outputs."""
        rows = self.store.rows(game, index)
        with playing(agent, game):
            q = agent.q_net(rows["observations"])
        return self._divergence(game, q, rows["q_values"])

    def _divergence(self, game: str, q: th.Tensor, old: th.Tensor) -> th.Tensor:
        """The sum over states of the divergence of the Q-values ``q`` from the stored ``old`` (rows of ``game``)."""
        s = self.settings
        if s.target == "policy":
            return F.kl_div(
                F.log_softmax(q / s.tau, 1), F.log_softmax(old / s.tau, 1), reduction="sum", log_target=True
            )
        per_state = (q - old).pow(2).mean(1)
        if s.normalize:
            per_state = per_state / self.store.games[game]["q_values"].var().clamp_min(1e-8)
        return per_state.sum()

    def _value(self, agent: ContinualDQN, draw: list[tuple[str, th.Tensor]]) -> th.Tensor | None:
        if not draw:
            return None
        total = sum((self.value(agent, game, index) for game, index in draw), th.zeros((), device=agent.device))
        return self.settings.lam * total / sum(len(index) for _, index in draw)

    def on_segment_end(self, agent: ContinualDQN, end: SegmentEnd) -> None:
        if end.last or self.settings.lam == 0 or agent.replay_buffer is None:
            return
        end.status(f"functional anchor ({self.settings.states} states)")
        data = sample_transitions(
            agent.replay_buffer, self.settings.states, np.random.default_rng(end.seed * 7919 + end.index + 29)
        )
        self.remember(agent, end.game, data.observations)

    def remember(self, agent: ContinualDQN, game: str, observations: th.Tensor, chunk_size: int = 256) -> None:
        """Keep ``observations`` and the current network's Q-values on them (``game``'s layers) for ``game``."""
        agent.policy.set_training_mode(False)
        with th.no_grad(), playing(agent, game):
            q = th.cat([agent.q_net(observations[i : i + chunk_size]) for i in range(0, len(observations), chunk_size)])
        self.store.put(game, {"observations": observations.detach().clone(), "q_values": q})

    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: Any) -> None:
        self.store.load_state_dict(state["store"], device)
