"""ReDo (section ``[redo]``): recycle dormant units every N updates (Sokar et al. 2023, "The Dormant Neuron
Phenomenon in Deep RL").

Every ``every`` updates it scores each hidden unit on ``states`` states of the current replay memory (score =
E|h_i| / mean_j E|h_j|, :func:`ewc_rl.plasticity.activation_scores`); a unit whose every activation channel scores
<= ``tau`` is dormant. A dormant unit's incoming weights (its row of the layer, its bias, its per-game biases and
gains, its LayerNorm gain and bias) are re-initialised, its outgoing weights (its columns of the next layer) are
set to zero, so the network's output is unchanged, and the optimiser's moments of exactly those entries are zeroed.
The fresh weights and the states come from seeds derived from the run's seed and the update count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch as th

from ewc_rl import plasticity
from ewc_rl.config import setting
from ewc_rl.methods import Method, register
from ewc_rl.methods.resets import ANCHOR_CHOICES, _anchor_line, _has_anchor, settle_anchor
from ewc_rl.plasticity import UnitLayer, weight_layer
from ewc_rl.replay import sample_transitions

if TYPE_CHECKING:
    from torch import nn

    from ewc_rl.agent import ContinualDQN
    from ewc_rl.config import Config
    from ewc_rl.schedule import Segment


@dataclass
class ReDoSettings:
    """Recycle tau-dormant units every ``every`` updates, scored on ``states`` replay states."""

    every: int = setting(1_000, min=1)
    tau: float = setting(0.1, min=0)
    states: int = setting(256, min=1)
    anchor: str = setting("keep", choices=ANCHOR_CHOICES)


def _incoming(u: UnitLayer) -> list[nn.Parameter]:
    """Parameters indexed by the layer's units along their first dimension."""
    params = [*u.layer.parameters(), *(u.norm.parameters() if u.norm is not None else [])]
    return [p for p in params if p.dim() >= 1 and p.shape[0] == u.units]


def _input_mask(u: UnitLayer, dormant: th.Tensor) -> th.Tensor:
    """Which inputs of the next layer come from the dormant units (the inputs of a linear layer after a flattened
    convolution are channel-major, so each channel covers ``positions`` consecutive inputs)."""
    channels = dormant.repeat(u.copies)  # CReLU: channel j and units + j are both unit j
    nxt = weight_layer(u.next)
    if isinstance(nxt, th.nn.Conv2d):
        return channels
    return channels.repeat_interleave(nxt.in_features // len(channels))


def recycle(
    q_net: nn.Module,
    optimizer: th.optim.Optimizer,
    obs: th.Tensor,
    tau: float,
    seed: int,
) -> tuple[dict[str, th.Tensor], int]:
    """Re-initialise the tau-dormant units of ``q_net`` on ``obs``; return the changed entries by parameter name
    and the number of units recycled."""
    layers = plasticity.unit_layers(q_net)
    scores, _ = plasticity.activation_scores(q_net, obs, layers)
    names = {id(p): n for n, p in q_net.named_parameters()}
    fresh: dict[str, th.Tensor] | None = None
    masks: dict[th.Tensor, th.Tensor] = {}

    def mark(p: th.Tensor, mask: th.Tensor) -> None:
        masks[p] = masks.get(p, th.zeros_like(p, dtype=th.bool)) | mask

    dormant = [plasticity.dormant_units(u, score, tau) for u, score in zip(layers, scores, strict=True)]
    if not any(d.any() for d in dormant):
        return {}, 0
    fresh = {n: p.detach() for n, p in plasticity.fresh_copy(q_net, seed).named_parameters()}
    with th.no_grad():
        # Incoming weights first, outgoing second: where a recycled unit feeds another recycled unit, the
        # connection ends at zero, so no recycled unit changes the output.
        for u, d in zip(layers, dormant, strict=True):
            for p in _incoming(u) if d.any() else []:
                mask = d.to(p.device).view(-1, *([1] * (p.dim() - 1))).expand_as(p)
                p[mask] = fresh[names[id(p)]].to(p.device)[mask]
                mark(p, mask)
        for u, d in ((u, d) for u, d in zip(layers, dormant, strict=True) if d.any()):
            w = weight_layer(u.next).weight
            mask = _input_mask(u, d).to(w.device).view(1, -1, *([1] * (w.dim() - 2))).expand_as(w)
            w[mask] = 0.0
            mark(w, mask)
    plasticity.zero_optimizer_entries(optimizer, masks)
    return {names[id(p)]: m for p, m in masks.items()}, int(sum(d.sum() for d in dormant))


@register
class ReDo(Method):
    """Every N updates: dormant units get fresh incoming weights, zero outgoing weights and zero moments."""

    name = "redo"
    Settings = ReDoSettings
    example = {"every": 10, "tau": 0.5, "states": 32}

    @classmethod
    def describe(cls, settings: ReDoSettings, cfg: Config, schedule: list[Segment]) -> list[str]:
        lines = [
            f"redo: every {settings.every:,} updates, units with score <= {settings.tau:g} on "
            f"{settings.states} replay states are re-initialised"
        ]
        return lines + ([_anchor_line(cls.name, settings.anchor)] if _has_anchor(cfg) else [])

    def after_step(self, agent: ContinualDQN) -> None:
        s = self.settings
        if agent._n_updates % s.every or agent.replay_buffer is None:
            return
        seed = (agent.seed or 0) * 1_000_003 + agent._n_updates
        obs = sample_transitions(agent.replay_buffer, s.states, np.random.default_rng(seed)).observations
        moved, recycled = recycle(agent.q_net, agent.policy.optimizer, obs, s.tau, seed)
        if moved:
            settle_anchor(agent, s.anchor, moved)
        agent.logger.record("train/redo_units", recycled)
