"""The quadratic anchor (section ``[penalty]``): none, L2, EWC or online EWC, with a diagonal Fisher from replay.

At the end of every segment but the last, once the game has been trained ``consolidate_after_steps`` agent
steps, it estimates the Fisher of the current network over ``fisher_states`` states of the game's replay
(:mod:`ewc_rl.fisher`) and anchors the merged quadratic of :mod:`ewc_rl.penalty` at the current parameters.
During training it adds the penalty's gradient to the TD loss's directly (no autograd graph for the penalty).

The importance need not be a Fisher: ``fisher`` names any estimator of :data:`ewc_rl.fisher.ESTIMATORS`, MAS's
output sensitivity from the same replay states, or SI's path integral, which is accumulated during the game through
this method's ``on_gradients`` and ``after_step`` hooks. SI and MAS are importances of this anchor, not methods of
their own, because they differ from EWC only there: every kind (per-game anchors, one online anchor) and the merged
O(parameters) penalty then serve them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch as th

from ewc_rl import fisher as fisher_lib
from ewc_rl import tblog
from ewc_rl.config import setting
from ewc_rl.methods import Method, SegmentEnd, register
from ewc_rl.penalty import KINDS, Penalty

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment


@dataclass
class AnchorSettings:
    """The consolidation penalty added to the TD loss, and the Fisher it uses."""

    kind: str = setting("none", choices=KINDS)
    lam: float = setting(400.0, key="lambda", min=0)
    fisher: str = setting("sampled", choices=tuple(fisher_lib.ESTIMATORS))
    fisher_states: int = setting(3_200, min=1)
    tau: float = setting(1.0, above=0)
    decay: float = setting(1.0, min=0, max=1)
    normalize: bool = setting(False)
    fisher_batch_size: int = setting(32, min=1)
    consolidate_after_steps: int = setting(0, min=0)
    si_damping: float = setting(1e-3, above=0)  # xi of SI's importance (fisher = "si")


@register
class QuadraticAnchor(Method):
    """lambda/2 * sum_k sum_i F_ki (theta_i - theta*_ki)^2 over the shared parameters (Kirkpatrick et al. 2017)."""

    name = "penalty"
    Settings = AnchorSettings
    example = {"kind": "ewc", "lambda": 10.0, "fisher_states": 16, "fisher_batch_size": 8}

    def __init__(self, settings: AnchorSettings | None = None, penalty: Penalty | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self.penalty = penalty if penalty is not None else Penalty(s.kind, s.lam, s.decay, s.normalize)
        # SI's importance is accumulated during training, every other one computed at the segment's end
        self.path = (
            fisher_lib.PathIntegral(s.si_damping)
            if self.penalty.needs_fisher and not fisher_lib.from_replay(s.fisher)
            else None
        )
        self._params: dict[str, th.nn.Parameter] = {}

    @classmethod
    def describe(cls, settings: AnchorSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        if settings.kind == "none":
            return []
        after = (
            f", each game anchored once trained {settings.consolidate_after_steps:,} steps"
            if settings.consolidate_after_steps
            else ""
        )
        importance = f", importance {settings.fisher}" if settings.kind in ("ewc", "online-ewc") else ""
        return [f"penalty: {settings.kind}, lambda {settings.lam:g}{importance}{after}"]

    @classmethod
    def warnings(cls, settings: AnchorSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        most = max(sum(s.steps for s in schedule if s.game == g) for g in {s.game for s in schedule})
        if settings.kind != "none" and most < settings.consolidate_after_steps:
            return [
                f"no game is trained {settings.consolidate_after_steps:,} steps in this schedule (at most "
                f"{most:,}), so the penalty never applies; raise --steps-per-game or --cycles, or lower "
                "penalty.consolidate_after_steps"
            ]
        return []

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        self._params = agent.shared_parameters()
        if self.path is not None and (agent.num_timesteps == agent.segment_start or not self.path.omega):
            self.path.start(self._params)  # a resumed segment keeps its restored integral

    def on_gradients(self, agent: ContinualDQN, params: dict[str, th.nn.Parameter], log: bool) -> dict[str, float]:
        if self.path is not None:
            self.path.record_gradient(params)  # before the penalty's own gradient
        value = self.penalty.add_gradient(params, value=log)
        return {} if value is None else {"penalty": value}

    def after_step(self, agent: ContinualDQN) -> None:
        if self.path is not None:
            self.path.record_step(self._params)

    def objective(self, agent: ContinualDQN, batch: ReplayBufferSamples) -> th.Tensor:
        return self.penalty(agent.shared_parameters())

    def on_segment_end(self, agent: ContinualDQN, end: SegmentEnd) -> None:
        s = self.settings
        if end.last or s.kind == "none":
            return
        trained = agent.steps_on(end.game)
        if trained < s.consolidate_after_steps:
            agent.logger.record(
                "schedule/consolidation",
                f"step {agent.num_timesteps}: no anchor for {end.game} yet "
                f"({trained} of penalty.consolidate_after_steps = {s.consolidate_after_steps} steps)",
            )
            agent.logger.dump(agent.num_timesteps)
            return
        fisher = None
        if self.path is not None:
            fisher = self.path.importance(agent.shared_parameters())
        elif self.penalty.needs_fisher:
            end.status(f"Fisher ({s.fisher}, {s.fisher_states} states)")
            fisher = agent.estimate_fisher(
                s.fisher, s.fisher_states, s.tau, s.fisher_batch_size, seed=end.seed * 7919 + end.index
            )
        self.consolidate(agent, end.game, fisher)
        if fisher is not None:
            tblog.log_fisher(agent.logger, fisher, agent.num_timesteps)

    def consolidate(self, agent: ContinualDQN, game: str, fisher: dict[str, th.Tensor] | None) -> None:
        """Anchor ``game`` at the learner's current shared parameters."""
        self.penalty.consolidate(game, agent.shared_parameters(), fisher)

    def state_dict(self) -> dict[str, Any]:
        state = self.penalty.state_dict()
        if self.path is not None:
            state["path"] = self.path.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], device: Any) -> None:
        self.penalty.load_state_dict(state, device)
        if self.path is not None and "path" in state:
            self.path.load_state_dict(state["path"], device)
