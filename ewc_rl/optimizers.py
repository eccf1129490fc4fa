"""Optimiser settings: the fastest implementation torch has of an optimiser on a device.

torch's optimisers default to the single-tensor loop on CPU (one small kernel per parameter and per
arithmetic step); the fused kernel (Adam, AdamW) or the multi-tensor ``foreach`` path (RMSprop, which has
no fused kernel) do the same arithmetic in far fewer passes over the weights. torch does not pick them
itself on CPU, so the learners ask for them here.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import torch as th


def fast_optimizer_kwargs(optimizer_class: type[th.optim.Optimizer], device: th.device | str = "cpu") -> dict[str, Any]:
    """``{"fused": True}``, else ``{"foreach": True}``, else ``{}``: the first that ``optimizer_class`` accepts
    and steps with on ``device`` for float32 parameters (the learners' dtype).

    Each candidate is tried on a one-element parameter (one construction and one step), so an optimiser or a
    device without the kernel falls back instead of failing at the first update.
    """
    return dict(_fast_kwargs(optimizer_class, str(th.device(device))))


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
