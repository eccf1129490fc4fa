"""Consolidation penalties: none, L2, EWC (one anchor per game) and online EWC.

EWC with K anchors (theta*_k, F_k) adds  lambda/2 * sum_k sum_i F_ki (theta_i - theta*_ki)^2  to the loss.
Expanding the square shows that the K quadratics are one quadratic:

    sum_k F_k (theta - theta*_k)^2 = A (theta - mu)^2 + c,
    A = sum_k F_k,   mu = sum_k F_k theta*_k / A,   c = sum_k F_k (theta*_k - mu)^2,

so an update costs O(parameters) whatever K is. The merge runs once per consolidation in float64
(c is a small difference of large sums; float32 would lose several percent of it).

Kinds:
    none        no penalty
    l2          F = 1 everywhere, one anchor per game (the "too rigid" baseline)
    ewc         one anchor per game (Kirkpatrick et al. 2017); revisiting a game replaces its anchor
    online-ewc  one running Fisher F <- decay * F + F_new at the latest parameters (Schwarz et al. 2018)
With ``normalize``, each new Fisher is divided by its mean over all parameters before it is used,
so lambda has the same meaning whatever the Fisher's scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor

Params = Mapping[str, Tensor]
KINDS = ("none", "l2", "ewc", "online-ewc")  # the kinds above, in the order agent files list them


class Penalty:
    """A consolidation penalty over named parameters; call it with the current parameters."""

    def __init__(self, kind: str = "ewc", lam: float = 1.0, decay: float = 1.0, normalize: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown penalty kind {kind!r}; known: {', '.join(KINDS)}")
        self.kind, self.lam, self.decay, self.normalize = kind, lam, decay, normalize
        # Per-anchor copies (CPU, float32) so that revisits can replace an anchor exactly.
        self.anchors: dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        self.A: dict[str, Tensor] = {}
        self.mu: dict[str, Tensor] = {}
        self.c: float = 0.0
        self._lam_a: dict[str, Tensor] = {}
        # (theta - mu) of the latest update, per parameter name: reused, because allocating a fresh multi-MB
        # tensor on every update (page faults on first touch) cost as much as the arithmetic
        self._diffs: dict[str, Tensor] = {}

    @property
    def needs_fisher(self) -> bool:
        return self.kind in ("ewc", "online-ewc")

    @property
    def active(self) -> bool:
        return self.kind != "none" and bool(self.A) and self.lam > 0

    def consolidate(self, key: str, params: Params, fisher: Params | None = None) -> None:
        """Add (or, for ``ewc``/``l2``, replace) the anchor ``key`` at ``params`` with ``fisher``."""
        if self.kind == "none":
            return
        theta = {k: v.detach().to("cpu", torch.float32).clone() for k, v in params.items()}
        if self.kind == "l2":
            fisher = {k: torch.ones_like(v) for k, v in theta.items()}
        elif fisher is None:
            raise ValueError(f"penalty kind {self.kind!r} needs a Fisher")
        new_f = {k: v.detach().to("cpu", torch.float32) for k, v in fisher.items()}
        if self.normalize:
            mean = torch.cat([v.flatten() for v in new_f.values()]).double().mean().item()
            new_f = {k: v / mean for k, v in new_f.items()} if mean > 0 else new_f
        if self.kind == "online-ewc":
            old = next(iter(self.anchors.values()), None)
            if old is not None:
                new_f = {k: self.decay * old[1][k] + v for k, v in new_f.items()}
            self.anchors = {"online": (theta, new_f)}
        else:
            self.anchors[key] = (theta, new_f)
        device = next(iter(params.values())).device
        self._merge(device)

    def _merge(self, device: torch.device) -> None:
        names = next(iter(self.anchors.values()))[0].keys()
        A: dict[str, Tensor] = {}
        mu: dict[str, Tensor] = {}
        c = 0.0
        for n in names:
            thetas = [t[n].double() for t, _ in self.anchors.values()]
            fishers = [f[n].double() for _, f in self.anchors.values()]
            a = torch.stack(fishers).sum(0)
            b = sum(f * t for f, t in zip(fishers, thetas, strict=True))
            m = torch.where(a > 0, b / a.clamp_min(torch.finfo(torch.float64).tiny), thetas[-1])
            c += float(sum((f * (t - m) ** 2).sum() for f, t in zip(fishers, thetas, strict=True)))
            A[n] = a.to(device, torch.float32)
            mu[n] = m.to(device, torch.float32)
        if not (
            math.isfinite(c) and all(bool(torch.isfinite(A[n]).all() and torch.isfinite(mu[n]).all()) for n in names)
        ):
            raise FloatingPointError("non-finite Fisher or anchor parameters: the penalty cannot be formed")
        self.A, self.mu, self.c = A, mu, c
        self._lam_a = {n: self.lam * a for n, a in A.items()}
        self._diffs = {}

    def __call__(self, params: Params) -> Tensor:
        """lambda/2 * (sum_i A_i (theta_i - mu_i)^2 + c); differentiable in ``params``."""
        first = next(iter(params.values()))
        if not self.active:
            return first.new_zeros(())
        quad = sum(((self.A[n] * (p - self.mu[n]).pow(2)).sum() for n, p in params.items()), first.new_zeros(()))
        return 0.5 * self.lam * (quad + self.c)

    def add_gradient(self, params: Params, value: bool = True) -> float | None:
        """Add the penalty's gradient lambda * A * (theta - mu) to each parameter's ``.grad``, in place.

        The same gradient as backpropagating :meth:`__call__`, in two passes over the parameters instead of a
        graph of about nine, into a buffer kept across updates. (theta - mu) is formed first: expanding it as
        A theta - A mu would lose the small difference to float32 rounding. Returns the penalty's value if
        ``value``, else None (the value costs two more passes; training computes it only when it logs it).
        """
        if not self.active:
            return 0.0 if value else None
        if any(p.grad is None for p in params.values()):
            raise ValueError("add_gradient runs after backward(): every penalised parameter needs a .grad")
        quad = 0.0
        for n, p in params.items():
            theta, grad, lam_a = p.detach(), cast(Tensor, p.grad), self._lam_a[n]
            diff = self._diff_buffer(n, theta)
            torch.sub(theta, self.mu[n], out=diff)
            grad.addcmul_(diff, lam_a)  # += lambda * A * (theta - mu)
            if value:  # sum lambda A (theta - mu)^2, squaring the buffer in place: the next update overwrites it
                quad += float(torch.dot(diff.mul_(diff).flatten(), lam_a.flatten()))
        return 0.5 * quad + 0.5 * self.lam * self.c if value else None

    def _diff_buffer(self, name: str, like: Tensor) -> Tensor:
        """The reused (theta - mu) buffer of ``name``, made anew whenever the parameter's shape, dtype or device
        is not the buffer's (its content is overwritten on every use, so that is all that can go stale)."""
        buf = self._diffs.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._diffs[name] = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return buf

    def release(self, masks: Mapping[str, Tensor]) -> None:
        """Zero every anchor's Fisher where ``masks`` (by parameter name) is True: those parameters go free.

        What a reset asks for when the reset weights should not be pulled back to the old anchors (their
        importance belonged to weights that no longer exist); the other parameters keep their penalty.
        """
        if not self.anchors:
            return
        for _, fisher in self.anchors.values():
            for n, mask in masks.items():
                if n in fisher:
                    fisher[n] = fisher[n].masked_fill(mask.to(fisher[n].device), 0.0)
        self._merge(next(iter(self.A.values())).device if self.A else torch.device("cpu"))

    def clear(self) -> None:
        """Forget every anchor: no penalty until the next consolidation."""
        self.anchors, self.A, self.mu, self.c, self._lam_a, self._diffs = {}, {}, {}, 0.0, {}, {}

    def state_dict(self) -> dict[str, object]:
        """The anchors (parameters and Fisher per key), tensors only: the merged quadratic is derived."""
        return {
            "keys": list(self.anchors),
            "theta": [theta for theta, _ in self.anchors.values()],
            "fisher": [fisher for _, fisher in self.anchors.values()],
        }

    def load_state_dict(self, state: Mapping[str, object], device: torch.device | str) -> None:
        """Restore :meth:`state_dict` and rebuild the merged quadratic on ``device``."""
        keys = cast(list[str], state["keys"])
        thetas = cast(list[dict[str, Tensor]], state["theta"])
        fishers = cast(list[dict[str, Tensor]], state["fisher"])
        self.anchors = {
            k: ({n: v.cpu() for n, v in t.items()}, {n: v.cpu() for n, v in f.items()})
            for k, t, f in zip(keys, thetas, fishers, strict=True)
        }
        if self.anchors:
            self._merge(torch.device(device))
        else:
            self.A, self.mu, self.c, self._lam_a, self._diffs = {}, {}, 0.0, {}, {}

    def fisher_of(self, key: str) -> dict[str, Tensor] | None:
        """The Fisher stored for anchor ``key`` (for logging), if any."""
        anchor = self.anchors.get("online" if self.kind == "online-ewc" else key)
        return anchor[1] if anchor else None
