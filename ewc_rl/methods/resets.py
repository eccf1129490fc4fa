"""Resets at every game switch, against loss of plasticity: optimiser state, shrink-and-perturb, Q head, everything.

Each is its own method (``agent.methods = ["penalty", "reset-head"]``), off unless listed. A *switch* is the start
of a segment after an earlier one (not the first segment, and not a segment resumed in its middle), so a run
resumed at a game boundary redoes the reset exactly: the fresh weights come from a seed derived from the run's
seed and the step, not from the global random stream.

    reset-optimizer   the optimiser's state (Adam's moments and step counts) emptied
    shrink-perturb    theta <- alpha * theta + sigma * theta_fresh on the shared parameters (Ash & Adams 2020)
    reset-head        the Q head (the last layer) re-initialised, with its optimiser state (Nikishin et al. 2022)
    reset-all         a fresh network and optimiser: keeps nothing, the upper bound of plasticity

The resets that move weights also copy the online network into the target network, so that the next TD targets
come from the network being trained rather than from the one that was reset away.

With a quadratic anchor (EWC, L2) in ``agent.methods``, the setting ``anchor`` says what the penalty does about
the moved weights (docs/plasticity.md): ``keep`` (it still pulls them back towards the old anchors), ``release``
(their importance is zeroed in every anchor: they are free, the rest stays anchored) or ``drop`` (every anchor is
forgotten).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch as th

from ewc_rl import plasticity
from ewc_rl.config import setting
from ewc_rl.methods import Method, register
from ewc_rl.methods.anchor import QuadraticAnchor

if TYPE_CHECKING:
    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment

ANCHOR_CHOICES = ("keep", "release", "drop")


def is_switch(agent: ContinualDQN) -> bool:
    """A segment starts now, after an earlier one (not the first segment, not a resume in mid-segment)."""
    return bool(agent.game_steps) and agent.num_timesteps == agent.segment_start


def reset_seed(agent: ContinualDQN, salt: int) -> int:
    """The seed of a reset's fresh weights: the run's seed, the step, and which reset it is."""
    return (agent.seed or 0) * 1_000_003 + agent.num_timesteps * 31 + salt


def settle_anchor(agent: ContinualDQN, choice: str, moved: dict[str, th.Tensor]) -> None:
    """Apply the ``anchor`` choice to every quadratic anchor; ``moved`` masks the reset entries by parameter name."""
    if choice == "keep":
        return
    shared = agent.shared_parameters()
    for method in agent.methods:
        if isinstance(method, QuadraticAnchor):
            if choice == "drop":
                method.penalty.clear()
            else:
                method.penalty.release({n: m for n, m in moved.items() if n in shared})


def _sync_target(agent: ContinualDQN) -> None:
    agent.q_net_target.load_state_dict(agent.q_net.state_dict())


def _anchor_line(name: str, choice: str) -> str:
    return {
        "keep": f"{name}: the penalty still pulls the reset weights back to the old anchors (anchor = keep)",
        "release": f"{name}: the reset weights are released from every anchor (anchor = release)",
        "drop": f"{name}: every anchor is forgotten at a reset (anchor = drop)",
    }[choice]


def _has_anchor(cfg: Config) -> bool:
    return QuadraticAnchor.name in cfg.agent.methods and cfg.section(QuadraticAnchor.name).kind != "none"


@dataclass
class MovedAnchorSettings:
    """What the penalty does about the weights a reset moved."""

    anchor: str = setting("keep", choices=ANCHOR_CHOICES)


@register
class ResetOptimizer(Method):
    """Empties the optimiser's state at every game switch (Adam then starts its moments and bias correction anew)."""

    name = "reset-optimizer"

    @classmethod
    def describe(cls, settings: object, cfg: Config, schedule: list[Segment]) -> list[str]:
        return ["reset-optimizer: the optimiser's state is emptied at every game switch"]

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        if is_switch(agent):
            plasticity.forget_optimizer_state(agent.policy.optimizer)


@dataclass
class ShrinkPerturbSettings:
    """theta <- alpha * theta + sigma * theta_fresh at every switch."""

    alpha: float = setting(0.8, min=0, max=1)
    sigma: float = setting(0.2, min=0)
    anchor: str = setting("keep", choices=ANCHOR_CHOICES)


@register
class ShrinkPerturb(Method):
    """Shrinks the shared parameters towards 0 and adds a fraction of a fresh initialisation (Ash & Adams 2020).

    Per-game biases, gains and heads belong to one game each and are left alone; the optimiser's state is kept.
    """

    name = "shrink-perturb"
    Settings = ShrinkPerturbSettings
    example = {"alpha": 0.5, "sigma": 0.5}

    @classmethod
    def describe(cls, settings: ShrinkPerturbSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        lines = [f"shrink-perturb: theta <- {settings.alpha:g} theta + {settings.sigma:g} fresh, at every switch"]
        return lines + ([_anchor_line(cls.name, settings.anchor)] if _has_anchor(cfg) else [])

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        if not is_switch(agent):
            return
        s = self.settings
        fresh = dict(plasticity.fresh_copy(agent.q_net, reset_seed(agent, 1)).named_parameters())
        shared = agent.shared_parameters()
        with th.no_grad():
            for n, p in shared.items():
                p.mul_(s.alpha).add_(fresh[n].to(p.device), alpha=s.sigma)
        _sync_target(agent)
        settle_anchor(agent, s.anchor, {n: th.ones_like(p, dtype=th.bool) for n, p in shared.items()})


@register
class ResetHead(Method):
    """Re-initialises the Q head (the last layer, per-game biases and gains included; with one head per game, the
    current game's) and its optimiser state."""

    name = "reset-head"
    Settings = MovedAnchorSettings

    @classmethod
    def describe(cls, settings: MovedAnchorSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        lines = ["reset-head: the Q head is re-initialised at every game switch"]
        return lines + ([_anchor_line(cls.name, settings.anchor)] if _has_anchor(cfg) else [])

    @classmethod
    def warnings(cls, settings: MovedAnchorSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        if cfg.agent.per_game_head:
            return [
                "reset-head with agent.per_game_head changes nothing useful: every game already starts with a "
                "fresh head of its own, and the reset re-initialises only that one"
            ]
        return []

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        if not is_switch(agent):
            return
        head = plasticity.head(agent.q_net)
        names = {id(p): n for n, p in agent.q_net.named_parameters()}
        fresh = dict(plasticity.fresh_copy(agent.q_net, reset_seed(agent, 2)).named_parameters())
        params = list(head.parameters())
        with th.no_grad():
            for p in params:
                p.copy_(fresh[names[id(p)]])
        plasticity.forget_optimizer_state(agent.policy.optimizer, params)
        _sync_target(agent)
        settle_anchor(agent, self.settings.anchor, {names[id(p)]: th.ones_like(p, dtype=th.bool) for p in params})


@register
class ResetAll(Method):
    """A fresh network (every parameter, per-game ones included) and an empty optimiser at every switch."""

    name = "reset-all"
    Settings = MovedAnchorSettings

    @classmethod
    def describe(cls, settings: MovedAnchorSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        lines = ["reset-all: a fresh network and optimiser at every game switch"]
        return lines + ([_anchor_line(cls.name, settings.anchor)] if _has_anchor(cfg) else [])

    def on_segment_start(self, agent: ContinualDQN, game: str) -> None:
        if not is_switch(agent):
            return
        fresh = plasticity.fresh_copy(agent.q_net, reset_seed(agent, 3))
        agent.q_net.load_state_dict(fresh.state_dict())
        plasticity.forget_optimizer_state(agent.policy.optimizer)
        _sync_target(agent)
        settle_anchor(
            agent, self.settings.anchor, {n: th.ones_like(p, dtype=th.bool) for n, p in agent.q_net.named_parameters()}
        )
