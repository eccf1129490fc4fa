"""Diagonal Fisher information of a Q-network's policy, from per-sample gradients.

The policy is pi(a|s) = softmax(Q(s, .) / tau). The Fisher diagonal is the mean over states of the
*per-sample* squared gradient of log pi(a|s); squaring a minibatch-mean gradient instead gives a
different (and much smaller) quantity, so every estimator here works sample by sample.

Estimators:
    sampled    a ~ pi(.|s): F = mean_s (d log pi(a|s))^2           (unbiased, one backward per state)
    exact      F = mean_s sum_a pi(a|s) (d log pi(a|s))^2           (the expectation, A backwards per state)
    empirical  F = mean_s (d TD-loss(s, a, y))^2 at stored actions (the "empirical Fisher")

Per-sample gradients come from ``torch.func`` (``vmap`` over ``grad``), evaluated in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Estimator = Literal["sampled", "exact", "empirical"]
FisherDict = dict[str, Tensor]


def policy_log_probs(q_values: Tensor, tau: float) -> Tensor:
    """log softmax(Q / tau) over the action dimension."""
    return F.log_softmax(q_values / tau, dim=-1)


def sample_actions(q_net: nn.Module, obs: Tensor, tau: float, generator: torch.Generator | None = None,
                   chunk_size: int = 256) -> Tensor:
    """One action per state drawn from pi(.|s); the draw is separate so tests can reuse it."""
    out = []
    with torch.no_grad():
        for start in range(0, len(obs), chunk_size):
            probs = policy_log_probs(q_net(obs[start:start + chunk_size]), tau).exp()
            out.append(torch.multinomial(probs, 1, generator=generator).squeeze(1))
    return torch.cat(out)


def _pick(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for one sample, written with ``gather`` so that it batches under ``vmap``."""
    return values.gather(0, index.reshape(1)).squeeze(0)


def _per_sample_sq_grad_sum(q_net: nn.Module, loss_fn: Callable[..., Tensor], inputs: tuple[Tensor, ...],
                            chunk_size: int) -> FisherDict:
    """Sum over samples of the squared gradient of ``loss_fn(q_values_of_one_sample, *row)``."""
    params = {k: v.detach() for k, v in q_net.named_parameters()}
    buffers = {k: v.detach() for k, v in q_net.named_buffers()}

    def one(p: dict[str, Tensor], obs: Tensor, *row: Tensor) -> Tensor:
        q = functional_call(q_net, (p, buffers), (obs.unsqueeze(0),)).squeeze(0)
        return loss_fn(q, *row)

    per_sample = vmap(grad(one), in_dims=(None,) + (0,) * len(inputs))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, len(inputs[0]), chunk_size):
        grads = per_sample(params, *(x[start:start + chunk_size] for x in inputs))
        for k, g in grads.items():
            total[k] += g.pow(2).sum(0)
    return total


def sampled_fisher(q_net: nn.Module, obs: Tensor, actions: Tensor, tau: float = 1.0,
                   chunk_size: int = 32) -> FisherDict:
    """mean_s (d log pi(a_s|s))^2 for given actions (draw them with :func:`sample_actions`)."""
    total = _per_sample_sq_grad_sum(
        q_net, lambda q, a: _pick(policy_log_probs(q, tau), a), (obs, actions), chunk_size)
    return {k: v / len(obs) for k, v in total.items()}


def exact_fisher(q_net: nn.Module, obs: Tensor, tau: float = 1.0, chunk_size: int = 32) -> FisherDict:
    """mean_s sum_a pi(a|s) (d log pi(a|s))^2: the expectation the sampled estimator approximates."""
    with torch.no_grad():
        n_actions = q_net(obs[:1]).shape[-1]
    total: FisherDict | None = None
    for a in range(n_actions):
        # Weighting by pi(a|s) inside the squared term: (sqrt(pi) * d log pi)^2 = pi * (d log pi)^2.
        def weighted(q: Tensor, action: int = a) -> Tensor:
            logp = policy_log_probs(q, tau)
            return logp.detach()[action].mul(0.5).exp() * logp[action]

        part = _per_sample_sq_grad_sum(q_net, weighted, (obs,), chunk_size)
        total = part if total is None else {k: total[k] + part[k] for k in total}
    assert total is not None
    return {k: v / len(obs) for k, v in total.items()}


def empirical_fisher(q_net: nn.Module, obs: Tensor, actions: Tensor, td_targets: Tensor,
                     chunk_size: int = 32) -> FisherDict:
    """mean over transitions of the squared gradient of the per-sample Huber TD loss."""
    def td_loss(q: Tensor, a: Tensor, y: Tensor) -> Tensor:
        return F.smooth_l1_loss(_pick(q, a), y)

    total = _per_sample_sq_grad_sum(q_net, td_loss, (obs, actions, td_targets), chunk_size)
    return {k: v / len(obs) for k, v in total.items()}
