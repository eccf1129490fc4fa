"""Plasticity diagnostics (``plasticity/*``): what the network looks like on a fixed probe set of the current game.

Once per segment the probe draws ``eval.probe_states`` transitions from the current game's replay memory, as soon
as the memory holds them: at the end of the warm-up, before the first update, so the network measured there is the
one the previous game left (the *switch* point), on the new game's states. It measures again at every evaluation
of the segment (the segment's end included, before its memory is freed), on the same states:

    dormant/tau0/<layer>, dormant/tau0.1/<layer>   share of units with ReDo score <= tau (Sokar et al. 2023)
    srank                                            effective rank of the penultimate features, delta 0.01
    param_norm/<layer>, update_norm/<layer>          ||theta|| and ||theta - theta_prev|| / updates in between
    grad_norm                                        ||d TD loss / d theta|| on the probe transitions
    q_abs, action_gap                                mean |Q(s, a)|; mean over states of best minus second-best Q
    policy_entropy                                   entropy (nats) of the greedy actions' histogram on the probe
    policy_churn                                     share of probe states whose greedy action changed since the
                                                     previous measurement of the segment

docs/metrics.md defines each with its source. Everything here is a handful of forward/backward passes over a few
hundred states, far below the cost of an evaluation; the run logs its share of wall time as
``plasticity/cost_share``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
import torch.nn.functional as F

from ewc_rl import plasticity
from ewc_rl.replay import sample_transitions

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples
    from torch import nn

    from ewc_rl.agent import ContinualDQN

TAUS = (0.0, 0.1)
SRANK_DELTA = 0.01


def layer_names(q_net: nn.Module) -> dict[int, str]:
    """Short names of the weight layers (``features_extractor.net.0`` -> ``net.0``; the Q head ``head``), by id."""
    names = {
        id(m): n.removeprefix("features_extractor.")
        for n, m in q_net.named_modules()
        if isinstance(m, plasticity.WEIGHT_LAYERS)
    }
    return names | {id(plasticity.head(q_net)): "head"}


def measure(agent: ContinualDQN, data: ReplayBufferSamples, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Every diagnostic of ``agent.q_net`` on ``data``; ``previous`` is the last measurement's private state."""
    q_net = agent.q_net
    names = layer_names(q_net)
    values: dict[str, Any] = {}
    layers = plasticity.unit_layers(q_net)
    scores, features = plasticity.activation_scores(q_net, data.observations, layers)
    for u, score in zip(layers, scores, strict=True):
        for tau in TAUS:
            values[f"dormant/tau{tau:g}/{names[id(u.layer)]}"] = float((score <= tau).float().mean())
    values["srank"] = plasticity.effective_rank(features, SRANK_DELTA)
    with th.no_grad():
        q = q_net(data.observations)
    top = q.topk(min(2, q.shape[1]), dim=1).values
    values["q_abs"] = float(q.abs().mean())
    values["action_gap"] = float((top[:, 0] - top[:, -1]).mean())
    greedy = q.argmax(1)
    counts = th.bincount(greedy, minlength=q.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    values["policy_entropy"] = float(-(p * p.log()).sum())
    if previous is not None:
        values["policy_churn"] = float((greedy.cpu() != previous["greedy"]).float().mean())
    params = {n: p for n, p in q_net.named_parameters() if p.requires_grad}
    target = agent.td_targets(data)
    with th.enable_grad():
        td = F.smooth_l1_loss(q_net(data.observations).gather(1, data.actions.long()), target)
        grads = th.autograd.grad(td, list(params.values()), allow_unused=True)
    values["grad_norm"] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    snapshot: dict[str, th.Tensor] = {}
    for m in q_net.modules():
        if id(m) not in names:
            continue
        flat = th.cat([p.detach().flatten() for p in m.parameters()]).cpu()
        snapshot[names[id(m)]] = flat
        values[f"param_norm/{names[id(m)]}"] = float(flat.norm())
        if previous is not None and agent._n_updates > previous["updates"]:
            steps = agent._n_updates - previous["updates"]
            values[f"update_norm/{names[id(m)]}"] = float((flat - previous["params"][names[id(m)]]).norm()) / steps
    state = {"greedy": greedy.cpu(), "params": snapshot, "updates": agent._n_updates}
    return {"values": values, "state": state}


class Probe:
    """Holds one segment's probe states and the previous measurement; the trainer calls it."""

    def __init__(self, n_states: int, seed: int) -> None:
        self.n_states, self.seed = n_states, seed
        self.data: ReplayBufferSamples | None = None
        self.previous: dict[str, Any] | None = None
        self.last_step = -1

    def new_segment(self) -> None:
        self.data, self.previous = None, None

    def draw(self, agent: ContinualDQN) -> None:
        """Fix this segment's probe states: up to ``n_states`` transitions of the current replay memory."""
        rng = np.random.default_rng(self.seed * 1_000_003 + agent.num_timesteps)
        self.data = sample_transitions(agent.replay_buffer, self.n_states, rng)  # type: ignore[arg-type]  # set in a segment

    def __call__(self, agent: ContinualDQN) -> dict[str, Any] | None:
        """The diagnostics now, or None before this segment's probe states are drawn or when this step was
        measured already (the warm-up ending at an evaluation step: the network is the same)."""
        if self.data is None or agent.num_timesteps == self.last_step:
            return None
        self.last_step = agent.num_timesteps
        agent.policy.set_training_mode(False)
        result = measure(agent, self.data, self.previous)
        self.previous = result["state"]
        return result["values"]
