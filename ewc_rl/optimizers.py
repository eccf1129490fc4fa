"""Optimisers that torch lacks, and the choice of optimiser an agent file makes (``agent.optimizer``).

``rmsprop-dqn`` is RMSProp as DeepMind's DQN implements it (Mnih et al. 2015; the Lua ``NeuralQLearner``):
centred, with the constant ε added *inside* the square root,

    g_avg  <- α g_avg  + (1 - α) g
    g2_avg <- α g2_avg + (1 - α) g²
    θ      <- θ - lr · g / sqrt(g2_avg - g_avg² + ε)

where torch's ``RMSprop(centered=True)`` divides by ``sqrt(g2_avg - g_avg²) + ε``. With Nature DQN's ε = 0.01
("min squared gradient") the two differ by 5-9x for gradients of 1e-2 to 1e-3, so the paper's value needs the
paper's form. Written here because torch has no option for it; it uses torch's ``_foreach_*`` kernels over the
whole parameter list (one kernel per operation, not one per tensor).

The learners also ask torch for its fastest implementation of an optimiser on a device: torch's optimisers default
to the single-tensor loop on CPU (one small kernel per parameter and per arithmetic step); the fused kernel (Adam,
AdamW) or the multi-tensor ``foreach`` path (RMSprop, which has no fused kernel) do the same arithmetic in far
fewer passes over the weights, and torch does not pick them itself on CPU.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch as th
from torch.optim import Optimizer

from ewc_rl.config import AgentConfig


class RMSpropDQN(Optimizer):
    """RMSProp with ε inside the square root, centred by default (DeepMind's DQN)."""

    def __init__(
        self,
        params: Iterable[th.Tensor] | Iterable[dict[str, Any]],
        lr: float = 2.5e-4,
        alpha: float = 0.95,
        eps: float = 0.01,
        centered: bool = True,
    ) -> None:
        if not (lr > 0 and 0 < alpha <= 1 and eps > 0):
            raise ValueError(f"RMSpropDQN needs lr > 0, 0 < alpha <= 1, eps > 0; got {lr}, {alpha}, {eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})

    @th.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]  # torch's overloads
        loss = None
        if closure is not None:
            with th.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # foreach kernels need one device and dtype per list
            lists: dict[tuple[th.device, th.dtype], tuple[list, list, list, list]] = {}
            for p in group["params"]:
                if p.grad is None:  # untouched, as in torch's optimisers (another game's per-game layers)
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = th.zeros_like(p, memory_format=th.preserve_format)
                    if group["centered"]:
                        state["grad_avg"] = th.zeros_like(p, memory_format=th.preserve_format)
                params, grads, squares, means = lists.setdefault((p.device, p.dtype), ([], [], [], []))
                params.append(p)
                grads.append(p.grad)
                squares.append(state["square_avg"])
                if group["centered"]:
                    means.append(state["grad_avg"])
            alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
            for params, grads, squares, means in lists.values():
                th._foreach_mul_(squares, alpha)
                th._foreach_addcmul_(squares, grads, grads, value=1 - alpha)
                if group["centered"]:
                    th._foreach_lerp_(means, grads, 1 - alpha)
                    denom = th._foreach_addcmul(squares, means, means, value=-1)
                    th._foreach_add_(denom, eps)
                else:
                    denom = th._foreach_add(squares, eps)
                th._foreach_sqrt_(denom)
                th._foreach_addcdiv_(params, grads, denom, value=-lr)
        return loss


def policy_kwargs(agent: AgentConfig, device: th.device | str = "cpu") -> dict[str, Any]:
    """SB3's ``optimizer_class``/``optimizer_kwargs`` for ``agent.optimizer``, in its fastest form on ``device``."""
    rmsprop = {"alpha": agent.rmsprop_alpha, "eps": agent.rmsprop_eps, "centered": agent.rmsprop_centered}
    optimizer_class, kwargs = {
        "rmsprop": (th.optim.RMSprop, rmsprop),  # torch's: eps outside the square root
        "rmsprop-dqn": (RMSpropDQN, rmsprop),
    }.get(agent.optimizer, (th.optim.Adam, {}))  # SB3's DQN default: Adam with torch's defaults
    fast = fast_optimizer_kwargs(optimizer_class, device)
    return {"optimizer_class": optimizer_class, "optimizer_kwargs": kwargs | fast}


def fast_optimizer_kwargs(optimizer_class: type[th.optim.Optimizer], device: th.device | str = "cpu") -> dict[str, Any]:
    """``{"fused": True}``, else ``{"foreach": True}``, else ``{}``: the first that ``optimizer_class`` accepts
    and steps with on ``device`` for float32 parameters (the learners' dtype).

    Each candidate is tried on a one-element parameter (one construction and one step), so an optimiser or a
    device without the kernel falls back instead of failing at the first update.
    """
    return dict(_fast_kwargs(optimizer_class, str(th.device(device))))  # type: ignore[arg-type]  # classes hash


@functools.cache
def _fast_kwargs(optimizer_class: type[th.optim.Optimizer], device: str) -> tuple[tuple[str, bool], ...]:
    accepted = inspect.signature(optimizer_class.__init__).parameters
    for flag in ("fused", "foreach"):
        if flag in accepted and _steps(optimizer_class, device, {flag: True}):
            return ((flag, True),)
    return ()


def _steps(optimizer_class: type[th.optim.Optimizer], device: str, kwargs: dict[str, Any]) -> bool:
    try:
        param = th.zeros(1, device=device, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = optimizer_class([param], **kwargs)
        param.grad = th.ones_like(param)
        optimizer.step()
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    return True


def match_layouts(optimizer: th.optim.Optimizer) -> None:
    """Lay out each parameter-shaped state tensor (Adam's moments, RMSprop's averages) as its parameter is.

    torch's fused Adam on CPU reads its state in the parameter's memory order whatever the state's strides say
    (torch 2.13: a channels-last weight with a contiguous ``exp_avg`` steps to wrong values, silently), and
    ``load_state_dict`` keeps the strides a checkpoint was saved with, which another version or device may not share.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, th.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = th.empty_like(p, dtype=value.dtype).copy_(value)
