"""Diagonal Fisher information of a Q-network's policy, from per-sample gradients; and the other importances
(MAS, SI) that the quadratic anchor can use in its place.

The policy is pi(a|s) = softmax(Q(s, .) / tau). The Fisher diagonal is the mean over states of the
*per-sample* squared gradient of log pi(a|s); squaring a minibatch-mean gradient instead gives a
different (and much smaller) quantity, so every estimator here works sample by sample.

Estimators:
    sampled    a ~ pi(.|s): F = mean_s (d log pi(a|s))^2           (unbiased, one backward per state)
    exact      F = mean_s sum_a pi(a|s) (d log pi(a|s))^2           (the expectation, A backwards per state)
    empirical  F = mean_s (d TD-loss(s, a, y))^2 at stored actions (the "empirical Fisher")
    mas        Omega = mean_s |d ||Q(s, .)||^2|                     (Aljundi et al. 2018: output sensitivity)
    si         Omega = max(omega, 0) / ((theta_end - theta_start)^2 + xi), omega = sum_t -g(t) dtheta(t) over
               the game's updates (Zenke et al. 2017), accumulated during training by :class:`PathIntegral`

Per-sample squared gradients are computed in one batched forward and backward: forward hooks record each
layer's input x and output y, one ``autograd.grad`` gives every output gradient gy, and for each sample
a linear layer's weight gradient is the outer product gy x^T, whose square is (gy^2)(x^2)^T, summed over
samples as one matrix product; a convolution's is gy (unfolded x)^T, summed over positions, computed as a
batched matrix product and squared; a LayerNorm's (or ``GroupNorm(1, C)``'s) gain gradient is gy times the
normalised input, summed over positions. That costs about one ordinary backward pass. Networks with other
parameterised layers use ``torch.func`` (``vmap`` over ``grad``) instead, several times slower. MAS's sum of
absolute per-sample gradients comes from the same passes: |gy x^T| = |gy| |x|^T as (gy^2)(x^2)^T does for squares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ewc_rl.networks import GameLayer

FisherDict = dict[str, Tensor]
# (q-values (N, A), *rows) -> per-sample losses (N, K): K separate terms, each squared on its own
LossFn = Callable[..., Tensor]


def policy_log_probs(q_values: Tensor, tau: float) -> Tensor:
    """log softmax(Q / tau) over the action dimension."""
    return F.log_softmax(q_values / tau, dim=-1)


def sample_actions(
    q_net: nn.Module, obs: Tensor, tau: float, generator: torch.Generator | None = None, chunk_size: int = 256
) -> Tensor:
    """One action per state drawn from pi(.|s); the draw is separate so tests can reuse it."""
    out = []
    with torch.no_grad():
        for start in range(0, len(obs), chunk_size):
            probs = policy_log_probs(q_net(obs[start : start + chunk_size]), tau).exp()
            out.append(torch.multinomial(probs, 1, generator=generator).squeeze(1))
    return torch.cat(out)


def _covered_parameters(module: nn.Module) -> list[nn.Parameter]:
    if isinstance(module, GameLayer):
        return [*module.game_bias.parameters(), *module.game_gain.parameters()]
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm)):
        return list(module.parameters(recurse=False))
    return []


def hooks_supported(net: nn.Module) -> bool:
    """Whether every parameter of ``net`` sits in a layer the hook-based per-sample gradients handle."""
    covered: set[int] = set()
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        covered |= {id(p) for p in _covered_parameters(m)}
    return all(id(p) in covered for p in net.parameters())


def _magnitude(absolute: bool) -> Callable[[Tensor], Tensor]:
    """g -> g^2 (Fisher) or |g| (MAS); both are multiplicative, |ab| = |a||b|, which the outer products use."""
    return torch.abs if absolute else torch.square


def _accumulate(
    total: FisherDict, names: dict[int, str], m: nn.Module, x: Tensor, y: Tensor, gy: Tensor, absolute: bool = False
) -> None:
    """Add this layer's sum over samples of squared (or absolute) per-sample parameter gradients to ``total``."""
    f = _magnitude(absolute)
    n = gy.shape[0]
    if isinstance(m, GameLayer):
        key = str(m.game)
        bias, gain = m.game_bias[key], m.game_gain[key]
        with torch.no_grad():  # z + b, the gain's input; computed functionally so that no hook fires again
            layer = m.layer
            z = (
                F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
                if isinstance(layer, nn.Conv2d)
                else F.linear(x, layer.weight)
            )
            pre = z + bias.view(m._shape)
        g_bias = (gy * gain.view(m._shape)).reshape(n, gy.shape[1], -1).sum(2)
        g_gain = (gy * pre).reshape(n, gy.shape[1], -1).sum(2)
        total[names[id(bias)]] += f(g_bias).sum(0)
        total[names[id(gain)]] += f(g_gain).sum(0)
        return
    if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
        with torch.no_grad():  # the normalised input, the gain's factor
            if isinstance(m, nn.LayerNorm):
                xhat = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
            else:
                xhat = F.group_norm(x, m.num_groups, None, None, m.eps)
        if isinstance(m, nn.LayerNorm):  # positions are the dimensions between the batch and the normalised ones
            shape = (n, -1, *m.normalized_shape)
            g_gain, g_bias = (gy * xhat).reshape(shape).sum(1), gy.reshape(shape).sum(1)
        else:  # per channel, summed over positions
            g_gain, g_bias = (gy * xhat).reshape(n, gy.shape[1], -1).sum(2), gy.reshape(n, gy.shape[1], -1).sum(2)
        if m.weight is not None:
            total[names[id(m.weight)]] += f(g_gain).sum(0)
        if m.bias is not None:
            total[names[id(m.bias)]] += f(g_bias).sum(0)
        return
    if isinstance(m, nn.Linear):
        if x.dim() == 2:
            total[names[id(m.weight)]] += f(gy).t() @ f(x)
        else:  # a sequence dimension: per-sample gradients are sums of outer products
            per_sample = torch.bmm(gy.reshape(n, -1, gy.shape[-1]).transpose(1, 2), x.reshape(n, -1, x.shape[-1]))
            total[names[id(m.weight)]] += f(per_sample).sum(0)
        if m.bias is not None:
            total[names[id(m.bias)]] += f(gy.reshape(n, -1, gy.shape[-1]).sum(1)).sum(0)
        return
    assert isinstance(m, nn.Conv2d)
    padding = cast(tuple[int, ...], m.padding)  # string paddings take the vmap path (hooks_supported)
    cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)  # (N, K, P)
    per_sample = torch.bmm(gy.reshape(n, gy.shape[1], -1), cols.transpose(1, 2))  # (N, C_out, K)
    total[names[id(m.weight)]] += f(per_sample).sum(0).view_as(m.weight)
    if m.bias is not None:
        total[names[id(m.bias)]] += f(gy.sum((2, 3))).sum(0)


def _hooks_sq_grad_sum(
    net: nn.Module, loss_fn: LossFn, inputs: tuple[Tensor, ...], chunk_size: int, absolute: bool = False
) -> FisherDict:
    names = {id(p): name for name, p in net.named_parameters()}
    total = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    records: list[tuple[nn.Module, Tensor, Tensor]] = []
    kinds = (nn.Linear, nn.Conv2d, GameLayer, nn.LayerNorm, nn.GroupNorm)
    layers = [m for m in net.modules() if isinstance(m, kinds)]
    handles = [m.register_forward_hook(lambda m, args, out: records.append((m, args[0], out))) for m in layers]
    try:
        for start in range(0, len(inputs[0]), chunk_size):
            records.clear()
            rows = [x[start : start + chunk_size] for x in inputs]
            with torch.enable_grad():
                losses = loss_fn(net(rows[0]), *rows[1:])
                outputs = [y for _, _, y in records]
                for k in range(losses.shape[1]):
                    grads = torch.autograd.grad(
                        losses[:, k].sum(), outputs, retain_graph=k + 1 < losses.shape[1], allow_unused=True
                    )
                    for (m, x, y), gy in zip(records, grads, strict=True):
                        if gy is not None:
                            _accumulate(total, names, m, x.detach(), y.detach(), gy, absolute)
    finally:
        for h in handles:
            h.remove()
    return total


def _vmap_sq_grad_sum(
    net: nn.Module, loss_fn: LossFn, inputs: tuple[Tensor, ...], chunk_size: int, absolute: bool = False
) -> FisherDict:
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    n_terms = loss_fn(net(inputs[0][:1]).detach(), *(x[:1] for x in inputs[1:])).shape[1]
    for k in range(n_terms):

        def one(p: dict[str, Tensor], obs: Tensor, *row: Tensor, term: int = k) -> Tensor:
            q = functional_call(net, (p, buffers), (obs.unsqueeze(0),))
            return loss_fn(q, *(r.unsqueeze(0) for r in row))[0, term]

        per_sample = vmap(grad(one), in_dims=(None,) + (0,) * len(inputs))
        for start in range(0, len(inputs[0]), chunk_size):
            grads = per_sample(params, *(x[start : start + chunk_size] for x in inputs))
            for name, g in grads.items():
                total[name] += _magnitude(absolute)(g).sum(0)
    return total


def _per_sample_sq_grad_sum(
    q_net: nn.Module,
    loss_fn: LossFn,
    inputs: tuple[Tensor, ...],
    chunk_size: int,
    method: str = "auto",
    absolute: bool = False,
) -> FisherDict:
    """Sum over samples (and loss terms) of the squared (``absolute``: absolute) per-sample gradient of ``loss_fn``."""
    use_hooks = method == "hooks" or (method == "auto" and hooks_supported(q_net))
    return (_hooks_sq_grad_sum if use_hooks else _vmap_sq_grad_sum)(q_net, loss_fn, inputs, chunk_size, absolute)


def sampled_fisher(
    q_net: nn.Module, obs: Tensor, actions: Tensor, tau: float = 1.0, chunk_size: int = 32, method: str = "auto"
) -> FisherDict:
    """mean_s (d log pi(a_s|s))^2 for given actions (draw them with :func:`sample_actions`)."""

    def log_pi(q: Tensor, a: Tensor) -> Tensor:
        return policy_log_probs(q, tau).gather(1, a.long().reshape(-1, 1))

    total = _per_sample_sq_grad_sum(q_net, log_pi, (obs, actions), chunk_size, method)
    return {k: v / len(obs) for k, v in total.items()}


def exact_fisher(
    q_net: nn.Module, obs: Tensor, tau: float = 1.0, chunk_size: int = 32, method: str = "auto"
) -> FisherDict:
    """mean_s sum_a pi(a|s) (d log pi(a|s))^2: the expectation the sampled estimator approximates."""

    def weighted(q: Tensor) -> Tensor:
        # One term per action: (sqrt(pi_a) d log pi_a)^2 = pi_a (d log pi_a)^2, with pi_a held constant.
        logp = policy_log_probs(q, tau)
        return logp.detach().mul(0.5).exp() * logp

    total = _per_sample_sq_grad_sum(q_net, weighted, (obs,), chunk_size, method)
    return {k: v / len(obs) for k, v in total.items()}


def empirical_fisher(
    q_net: nn.Module, obs: Tensor, actions: Tensor, td_targets: Tensor, chunk_size: int = 32, method: str = "auto"
) -> FisherDict:
    """mean over transitions of the squared gradient of the per-sample Huber TD loss."""

    def td_loss(q: Tensor, a: Tensor, y: Tensor) -> Tensor:
        return F.smooth_l1_loss(q.gather(1, a.long().reshape(-1, 1)), y.reshape(-1, 1), reduction="none")

    total = _per_sample_sq_grad_sum(q_net, td_loss, (obs, actions, td_targets), chunk_size, method)
    return {k: v / len(obs) for k, v in total.items()}


def mas_importance(q_net: nn.Module, obs: Tensor, chunk_size: int = 32, method: str = "auto") -> FisherDict:
    """mean_s |d ||Q(s, .)||^2|: MAS's sensitivity of the squared L2 norm of the output (Aljundi et al. 2018)."""

    def squared_norm(q: Tensor) -> Tensor:
        return q.pow(2).sum(1, keepdim=True)

    total = _per_sample_sq_grad_sum(q_net, squared_norm, (obs,), chunk_size, method, absolute=True)
    return {k: v / len(obs) for k, v in total.items()}


class PathIntegral:
    """SI's importance (Zenke et al. 2017), accumulated online over one game's updates.

    omega_i = sum_t -g_i(t) (theta_i(t+1) - theta_i(t)), with g the training loss's gradient before the update;
    at the end Omega_i = max(omega_i, 0) / ((theta_i(end) - theta_i(start))^2 + xi). Negative path integrals (the
    loss rose along that coordinate) are clipped to 0 so that the quadratic anchor stays convex. Four passes over
    the parameters per update, in foreach kernels, into buffers kept for the game (no allocation per update).
    """

    def __init__(self, damping: float = 1e-3) -> None:
        self.damping = damping
        self.start_params: list[Tensor] = []
        self.previous: list[Tensor] = []
        self.omega: list[Tensor] = []
        self.grad: list[Tensor] = []

    def start(self, params: Mapping[str, Tensor]) -> None:
        """A game's training begins at ``params``."""
        thetas = [p.detach() for p in params.values()]
        self.start_params = [t.clone() for t in thetas]
        self.previous = [t.clone() for t in thetas]
        self.omega = [torch.zeros_like(t) for t in thetas]
        self.grad = [torch.zeros_like(t) for t in thetas]

    def record_gradient(self, params: Mapping[str, Tensor]) -> None:
        """The update's gradient g(t), read from ``.grad`` before anything else is added to it."""
        torch._foreach_copy_(self.grad, [cast(Tensor, p.grad) for p in params.values()])

    def record_step(self, params: Mapping[str, Tensor]) -> None:
        """The optimiser has moved the parameters: omega -= g(t) * (theta(t+1) - theta(t)).

        Computed as omega += g(t) * (theta(t) - theta(t+1)) inside the buffer of theta(t), which then takes
        theta(t+1): the same numbers (a sign moved between exact negations) without a full-size temporary.
        """
        thetas = [p.detach() for p in params.values()]
        torch._foreach_sub_(self.previous, thetas)
        torch._foreach_addcmul_(self.omega, self.grad, self.previous)
        torch._foreach_copy_(self.previous, thetas)

    def importance(self, params: Mapping[str, Tensor]) -> FisherDict:
        """Omega at the current parameters (the end of the game)."""
        return {
            n: w.clamp_min(0) / ((p.detach() - s).pow(2) + self.damping)
            for (n, p), w, s in zip(params.items(), self.omega, self.start_params, strict=True)
        }

    def state_dict(self) -> dict[str, list[Tensor]]:
        return {"start": self.start_params, "previous": self.previous, "omega": self.omega}

    def load_state_dict(self, state: dict[str, list[Tensor]], device: torch.device | str) -> None:
        self.start_params, self.previous, self.omega = (
            [t.to(device) for t in state[k]] for k in ("start", "previous", "omega")
        )
        self.grad = [torch.zeros_like(t) for t in self.omega]


# -- the estimators by name ------------------------------------------------------------------------------
# Each takes the Q-network, a batch of replay transitions (``observations``, ``actions``), the temperature, the
# chunk size, a seeded generator (for the sampled actions) and a callable giving the TD targets of the batch
# (for the empirical Fisher, which needs the target network).
TdTargets = Callable[[Any], Tensor]


def _sampled(
    q_net: nn.Module, data: Any, tau: float, chunk_size: int, generator: torch.Generator, td_targets: TdTargets
) -> FisherDict:
    actions = sample_actions(q_net, data.observations, tau, generator)
    return sampled_fisher(q_net, data.observations, actions, tau, chunk_size)


def _exact(
    q_net: nn.Module, data: Any, tau: float, chunk_size: int, generator: torch.Generator, td_targets: TdTargets
) -> FisherDict:
    return exact_fisher(q_net, data.observations, tau, chunk_size)


def _empirical(
    q_net: nn.Module, data: Any, tau: float, chunk_size: int, generator: torch.Generator, td_targets: TdTargets
) -> FisherDict:
    return empirical_fisher(
        q_net, data.observations, data.actions.long().squeeze(1), td_targets(data).squeeze(1), chunk_size
    )


def _mas(
    q_net: nn.Module, data: Any, tau: float, chunk_size: int, generator: torch.Generator, td_targets: TdTargets
) -> FisherDict:
    return mas_importance(q_net, data.observations, chunk_size)


# Every importance the quadratic anchor accepts (penalty.fisher), by name. None: not computed from replay states at
# the segment's end but accumulated while the game trains (SI, :class:`PathIntegral`, driven by the anchor's hooks).
ESTIMATORS: dict[str, Callable[..., FisherDict] | None] = {
    "sampled": _sampled,
    "exact": _exact,
    "empirical": _empirical,
    "mas": _mas,
    "si": None,
}


def from_replay(estimator: str) -> bool:
    """Whether ``estimator`` is computed from replay states (every one but SI's path integral)."""
    return ESTIMATORS[estimator] is not None


def estimate(
    estimator: str,
    q_net: nn.Module,
    data: Any,
    td_targets: TdTargets,
    *,
    tau: float = 1.0,
    chunk_size: int = 32,
    seed: int = 0,
) -> FisherDict:
    """The Fisher ``estimator`` (a key of :data:`ESTIMATORS`) of ``q_net`` over the transitions ``data``."""
    fn = ESTIMATORS.get(estimator)
    if fn is None:
        known = ", ".join(k for k in ESTIMATORS if from_replay(k))
        raise ValueError(f"{estimator!r} is not an importance computed from replay states; known: {known}")
    generator = torch.Generator(device=data.observations.device).manual_seed(seed)
    return fn(q_net, data, tau, chunk_size, generator, td_targets)
