"""Q-network bodies, as stable-baselines3 feature extractors so SB3's DQN policy wraps them.

* ``nature``: SB3's ``NatureCNN`` (conv 32-8x8/4, 64-4x4/2, 64-3x3/1, FC 512) for 84x84 Atari frames;
* ``wide``: the EWC paper's wider version (conv 32, 64, 128 filters, FC 1024);
* ``minatar``: conv 16-3x3/1 then FC 128, the network of the MinAtar paper, for 10x10 planes.

With ``per_game_layers`` every layer, the Q head included, computes y = (W x + b_game) * g_game: W is
shared, each game has its own bias b (starts at 0) and gain g (starts at 1), selected by
:func:`set_game`. Each game's b and g are separate parameters, so while one game trains the others'
receive no gradient at all (``grad`` stays None) and no optimiser state moves them. They are not part of
the consolidation penalty or the Fisher (:func:`is_per_game`): only their own game uses them, so later
games cannot make it forget through them.

With ``heads`` > 0 the Q head is one linear layer per game (:class:`GameHeads`, multi-head): a game trains and
is evaluated with its own head, which starts freshly initialised and is never touched by other games; like the
per-game biases and gains, the heads are excluded from the penalty. Both bodies also take ``activation`` (``relu``
or ``crelu``, concatenated ReLU: every unit gives relu(x) and relu(-x), so the next layer reads twice as many
inputs; Abbas et al. 2023) and ``layer_norm`` (a LayerNorm between every hidden layer and its activation; on a
convolution, over channels and positions with a gain and bias per channel, i.e. ``GroupNorm(1, C)``; Lyle et al.
2024), options against loss of plasticity.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.dqn.policies import CnnPolicy, QNetwork
from torch import nn

from ewc_rl.errors import UsageError

NETWORKS = ("auto", "nature", "wide", "minatar")
ACTIVATIONS = ("relu", "crelu")
_PER_GAME = ("game_bias.", "game_gain.", "game_heads.")


class CReLU(nn.Module):
    """Concatenated ReLU along the channel dimension: cat(relu(x), relu(-x)); never silences a unit entirely."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return th.cat([th.relu(x), th.relu(-x)], dim=1)


class GameLayer(nn.Module):
    """A bias-free linear or convolutional layer followed by a per-game bias and gain."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, n_games: int) -> None:
        super().__init__()
        assert layer.bias is None, "the per-game bias replaces the layer's own"
        self.layer = layer
        out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        self.game_bias = nn.ParameterDict({str(i): nn.Parameter(th.zeros(out)) for i in range(n_games)})
        self.game_gain = nn.ParameterDict({str(i): nn.Parameter(th.ones(out)) for i in range(n_games)})
        self.game = 0
        self._shape = (1, -1, 1, 1) if isinstance(layer, nn.Conv2d) else (1, -1)

    def forward(self, x: th.Tensor) -> th.Tensor:
        key = str(self.game)
        return (self.layer(x) + self.game_bias[key].view(self._shape)) * self.game_gain[key].view(self._shape)

    def reset_parameters(self) -> None:
        """Biases 0 and gains 1, as at construction (the wrapped layer resets itself)."""
        with th.no_grad():
            for b in self.game_bias.values():
                b.zero_()
            for g in self.game_gain.values():
                g.fill_(1.0)


class GameHeads(nn.Module):
    """One linear Q head per game; :func:`set_game` picks the one that runs."""

    def __init__(self, n_in: int, n_out: int, n_games: int) -> None:
        super().__init__()
        self.game_heads = nn.ModuleDict({str(i): nn.Linear(n_in, n_out) for i in range(n_games)})
        self.game = 0

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.game_heads[str(self.game)](x)


def _hidden(layer: nn.Module, out: int, conv: bool, activation: str, layer_norm: bool) -> list[nn.Module]:
    """A hidden layer followed by its optional LayerNorm and its activation."""
    norm: list[nn.Module] = [nn.GroupNorm(1, out) if conv else nn.LayerNorm(out)] if layer_norm else []
    return [layer, *norm, CReLU() if activation == "crelu" else nn.ReLU()]


def _linear(n_in: int, n_out: int, n_games: int) -> nn.Module:
    return GameLayer(nn.Linear(n_in, n_out, bias=False), n_games) if n_games else nn.Linear(n_in, n_out)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, n_games: int) -> nn.Module:
    if n_games:
        return GameLayer(nn.Conv2d(c_in, c_out, kernel, stride, bias=False), n_games)
    return nn.Conv2d(c_in, c_out, kernel, stride)


def set_game(module: nn.Module, game: int) -> None:
    """Select game ``game``'s biases, gains and head in every per-game layer of ``module``."""
    for m in module.modules():
        if isinstance(m, (GameLayer, GameHeads)):
            m.game = game


def is_per_game(name: str) -> bool:
    """Whether a parameter name is one game's bias or gain (excluded from the penalty and the Fisher)."""
    return any(part in name for part in _PER_GAME)


class AtariCNN(BaseFeaturesExtractor):
    """Conv 8x8/4, 4x4/2, 3x3/1 with ``filters`` channels, then FC ``features_dim``; optionally per-game layers,
    CReLU (the features are then 2 * ``features_dim`` wide) and LayerNorm."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        features_dim: int = 512,
        filters: tuple[int, int, int] = (32, 64, 64),
        n_games: int = 0,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        k = 2 if activation == "crelu" else 1
        super().__init__(observation_space, k * features_dim)
        c = observation_space.shape[0]
        f1, f2, f3 = filters
        self.cnn = nn.Sequential(
            *_hidden(_conv(c, f1, 8, 4, n_games), f1, True, activation, layer_norm),
            *_hidden(_conv(k * f1, f2, 4, 2, n_games), f2, True, activation, layer_norm),
            *_hidden(_conv(k * f2, f3, 3, 1, n_games), f3, True, activation, layer_norm),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flat = self.cnn(th.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(
            *_hidden(_linear(n_flat, features_dim, n_games), features_dim, False, activation, layer_norm)
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class MinAtarCNN(BaseFeaturesExtractor):
    """conv 16x3x3 (stride 1) -> ReLU -> FC 128 -> ReLU, for (C, 10, 10) {0, 1} inputs; optionally per-game
    layers, CReLU (the features are then 256 wide) and LayerNorm."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        features_dim: int = 128,
        n_games: int = 0,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        k = 2 if activation == "crelu" else 1
        super().__init__(observation_space, k * features_dim)
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(
            *_hidden(_conv(channels, 16, 3, 1, n_games), 16, True, activation, layer_norm),
            nn.Flatten(),
            *_hidden(
                _linear(k * 16 * (height - 2) * (width - 2), features_dim, n_games),
                features_dim,
                False,
                activation,
                layer_norm,
            ),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations.float())


class PerGameCnnPolicy(CnnPolicy):
    """SB3's DQN ``CnnPolicy`` whose Q head has per-game biases and gains (``n_games``, like the body) or is one
    head per game (``heads``).

    ``game`` is the game index selected at construction: it is a constructor parameter (not only
    :func:`set_game` state) so that a model saved in SB3's format loads with that game's layers selected.
    """

    def __init__(self, *args: Any, n_games: int = 0, heads: int = 0, game: int = 0, **kwargs: Any) -> None:
        self.n_games, self.heads = n_games, heads
        self.game = game
        super().__init__(*args, **kwargs)
        self.set_game(game)

    def set_game(self, game: int) -> None:
        """Play game ``game`` (an index of the run's games, in first-visit order) from now on."""
        count = max(self.n_games, self.heads)
        if not 0 <= game < count:
            raise ValueError(f"game index {game} out of range: this policy has {count} games")
        self.game = game
        set_game(self, game)

    def make_q_net(self) -> QNetwork:
        q_net = super().make_q_net()
        head = q_net.q_net[-1]
        assert isinstance(head, nn.Linear)
        new = (
            GameHeads(head.in_features, head.out_features, self.heads)
            if self.heads
            else _linear(head.in_features, head.out_features, self.n_games)
        )
        q_net.q_net[-1] = new.to(self.device)
        return q_net

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "n_games": self.n_games,
            "heads": self.heads,
            "game": self.game,
        }


def lay_out(module: nn.Module, device: th.device) -> None:
    """Give ``module``'s convolutions channels-last weights where that is faster: the Atari bodies on CPU, whose
    84x84 convolutions oneDNN computes about a tenth faster per update in that layout (docs/performance.md).
    MinAtar's 10x10 planes gain nothing, and on CUDA it has not been measured. The parameters stay the same
    objects (an optimiser built on them keeps working); only their strides change."""
    if device.type == "cpu" and any(isinstance(m, (NatureCNN, AtariCNN)) for m in module.modules()):
        module.to(memory_format=th.channels_last)  # type: ignore[call-overload]  # torch's stubs omit the keyword


def resolve(network: str, suite: str) -> str:
    """The network an agent file asks for, checked against the games' suite (``auto`` picks by suite)."""
    fits = {"atari": ("nature", "wide"), "minatar": ("minatar",)}[suite]
    if network == "auto":
        return fits[0]
    if network not in fits:
        shape = "84x84 Atari frames" if network in ("nature", "wide") else "10x10 MinAtar planes"
        raise UsageError(
            f"agent.network = '{network}' is built for {shape}, not {suite} games; "
            f"use agent.network = 'auto' or one of {', '.join(fits)}"
        )
    return network


def policy(
    network: str, n_games: int = 0, *, heads: int = 0, activation: str = "relu", layer_norm: bool = False
) -> tuple[str | type, dict[str, Any]]:
    """SB3 (policy, ``policy_kwargs``) for ``network``; ``n_games`` > 0 gives every layer per-game b and g,
    ``heads`` > 0 one Q head per game; ``activation`` and ``layer_norm`` as in the module docstring."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    options: dict[str, Any] = {"n_games": n_games}
    if activation != "relu" or layer_norm:
        options |= {"activation": activation, "layer_norm": layer_norm}
    if network == "nature" and len(options) == 1 and not n_games:
        kwargs: dict[str, Any] = {"features_extractor_class": NatureCNN, "net_arch": []}
    elif network in ("nature", "wide"):
        if network == "wide":
            options |= {"features_dim": 1024, "filters": (32, 64, 128)}
        kwargs = {"features_extractor_class": AtariCNN, "features_extractor_kwargs": options, "net_arch": []}
    elif network == "minatar":
        kwargs = {
            "features_extractor_class": MinAtarCNN,
            "features_extractor_kwargs": options,
            "net_arch": [],
            "normalize_images": False,
        }
    else:
        raise ValueError(f"unknown network {network!r}")
    if n_games or heads:
        return PerGameCnnPolicy, {**kwargs, "n_games": n_games, "heads": heads}
    return "CnnPolicy", kwargs
