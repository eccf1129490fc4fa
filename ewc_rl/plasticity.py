"""Network surgery and measurements shared by the plasticity remedies (resets, ReDo) and their diagnostics.

A Q-network is read as a chain of *unit layers*: a linear or convolutional layer (or a per-game
:class:`~ewc_rl.networks.GameLayer`), optionally a LayerNorm (or GroupNorm), an activation whose output channels are the
layer's units (two per unit for CReLU), and the next weight layer that reads them. Both ReDo and the dormant-unit
diagnostic need exactly that view (which units are silent, where their incoming and outgoing weights are), so it
is written once here, by walking the modules in registration order (SB3's Q-networks register them in the order
they run).

Fresh initialisations come from a deep copy whose ``reset_parameters`` run under a seeded CPU generator, so a
remedy is reproducible (an exact resume redoes it identically) and draws nothing from the global random stream.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch as th
from torch import nn

from ewc_rl.networks import CReLU, GameHeads, GameLayer

WEIGHT_LAYERS = (nn.Linear, nn.Conv2d, GameLayer)
_ACTIVATIONS = (nn.ReLU, CReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU)
_NORMS = (nn.LayerNorm, nn.GroupNorm)


@dataclass
class UnitLayer:
    """One hidden layer's units: the layer making them, its norm, the activation, and the layer reading them."""

    layer: nn.Module  # nn.Linear, nn.Conv2d or GameLayer
    norm: nn.LayerNorm | nn.GroupNorm | None
    activation: nn.Module
    next: nn.Module  # the weight layer that reads the activation's output

    @property
    def units(self) -> int:
        inner = weight_layer(self.layer)
        return inner.out_channels if isinstance(inner, nn.Conv2d) else inner.out_features

    @property
    def copies(self) -> int:
        """Output channels of the activation per unit (2 for CReLU)."""
        return 2 if isinstance(self.activation, CReLU) else 1


def weight_layer(module: nn.Module) -> nn.Linear | nn.Conv2d:
    return module.layer if isinstance(module, GameLayer) else module  # type: ignore[return-value]  # a weight layer


def _leaves(module: nn.Module) -> list[nn.Module]:
    """Weight layers, norms and activations in the order they run; of per-game heads, the current game's."""
    if isinstance(module, GameHeads):
        return [module.game_heads[str(module.game)]]
    if isinstance(module, (*WEIGHT_LAYERS, *_ACTIVATIONS, *_NORMS)):
        return [module]
    return [leaf for child in module.children() for leaf in _leaves(child)]


def head(net: nn.Module) -> nn.Module:
    """The network's last weight layer: the Q head."""
    return [m for m in _leaves(net) if isinstance(m, WEIGHT_LAYERS)][-1]


def unit_layers(net: nn.Module) -> list[UnitLayer]:
    """Every hidden layer of ``net`` whose units an activation exposes to a later weight layer."""
    leaves = _leaves(net)
    found = []
    for i, m in enumerate(leaves):
        if not isinstance(m, WEIGHT_LAYERS):
            continue
        rest = leaves[i + 1 :]
        norm = rest.pop(0) if rest and isinstance(rest[0], _NORMS) else None
        if len(rest) < 2 or not isinstance(rest[0], _ACTIVATIONS) or not isinstance(rest[1], WEIGHT_LAYERS):
            continue
        found.append(UnitLayer(m, cast("nn.LayerNorm | nn.GroupNorm | None", norm), rest[0], rest[1]))
    return found


def activation_scores(
    net: nn.Module,
    obs: th.Tensor,
    layers: list[UnitLayer] | None = None,
) -> tuple[list[th.Tensor], th.Tensor]:
    """Per layer, ReDo's score of each activation output channel on ``obs``, and the penultimate features.

    The score of channel i is E|h_i| / mean_j E|h_j| (Sokar et al. 2023), the expectation over the states and,
    for a convolution, over positions; a channel is tau-dormant when its score is <= tau. The penultimate
    features are the last unit layer's activations (N, features), for the effective rank.
    """
    layers = unit_layers(net) if layers is None else layers
    means: list[th.Tensor] = []
    last: list[th.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> None:
        h = output.detach().abs()
        means.append(h.transpose(0, 1).reshape(h.shape[1], -1).mean(1))
        last[:] = [output.detach().flatten(1)]

    handles = [u.activation.register_forward_hook(hook) for u in layers]
    try:
        with th.no_grad():
            net(obs)
    finally:
        for handle in handles:
            handle.remove()
    scores = [m / m.mean().clamp_min(1e-12) for m in means]
    return scores, (last[0] if last else th.empty(len(obs), 0))


def dormant_units(layer: UnitLayer, score: th.Tensor, tau: float) -> th.Tensor:
    """Boolean mask over the layer's units: every activation channel of the unit is tau-dormant."""
    return (score <= tau).reshape(layer.copies, layer.units).all(0)


def fresh_copy(net: nn.Module, seed: int) -> nn.Module:
    """A copy of ``net`` (on the CPU) with every layer re-initialised as at construction, from ``seed``."""
    fresh = copy.deepcopy(net).cpu()
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        for m in fresh.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def forget_optimizer_state(optimizer: th.optim.Optimizer, params: list[nn.Parameter] | None = None) -> None:
    """Empty the optimiser's state of ``params`` (all by default): it restarts as for a new parameter."""
    if params is None:
        optimizer.state.clear()
        return
    for p in params:
        optimizer.state.pop(p, None)


def zero_optimizer_entries(optimizer: th.optim.Optimizer, masks: Mapping[th.Tensor, th.Tensor]) -> None:
    """Zero the optimiser's running moments (Adam's m and v, RMSProp's averages) where ``masks`` is True."""
    for p, mask in masks.items():
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, th.Tensor) and value.shape == p.shape:
                value[mask] = 0


def effective_rank(features: th.Tensor, delta: float = 0.01) -> int:
    """srank_delta: the fewest singular values of the features holding 1 - delta of their sum (Kumar et al. 2021)."""
    if features.numel() == 0:
        return 0
    s = th.linalg.svdvals(features.double())
    if s.sum() <= 0:
        return 0
    cumulative = th.cumsum(s, 0) / s.sum()
    return int((cumulative < 1 - delta).sum().item()) + 1
