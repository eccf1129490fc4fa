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
_PER_GAME = ("game_bias.", "game_gain.")


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


def _linear(n_in: int, n_out: int, n_games: int) -> nn.Module:
    return GameLayer(nn.Linear(n_in, n_out, bias=False), n_games) if n_games else nn.Linear(n_in, n_out)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, n_games: int) -> nn.Module:
    if n_games:
        return GameLayer(nn.Conv2d(c_in, c_out, kernel, stride, bias=False), n_games)
    return nn.Conv2d(c_in, c_out, kernel, stride)


def set_game(module: nn.Module, game: int) -> None:
    """Select game ``game``'s biases and gains in every per-game layer of ``module``."""
    for m in module.modules():
        if isinstance(m, GameLayer):
            m.game = game


def is_per_game(name: str) -> bool:
    """Whether a parameter name is one game's bias or gain (excluded from the penalty and the Fisher)."""
    return any(part in name for part in _PER_GAME)


class AtariCNN(BaseFeaturesExtractor):
    """Conv 8x8/4, 4x4/2, 3x3/1 with ``filters`` channels, then FC ``features_dim``; optionally per-game layers."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 512,
                 filters: tuple[int, int, int] = (32, 64, 64), n_games: int = 0) -> None:
        super().__init__(observation_space, features_dim)
        c = observation_space.shape[0]
        self.cnn = nn.Sequential(
            _conv(c, filters[0], 8, 4, n_games), nn.ReLU(), _conv(filters[0], filters[1], 4, 2, n_games), nn.ReLU(),
            _conv(filters[1], filters[2], 3, 1, n_games), nn.ReLU(), nn.Flatten())
        with th.no_grad():
            n_flat = self.cnn(th.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(_linear(n_flat, features_dim, n_games), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class MinAtarCNN(BaseFeaturesExtractor):
    """conv 16x3x3 (stride 1) -> ReLU -> FC 128 -> ReLU, for (C, 10, 10) {0, 1} inputs."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128, n_games: int = 0) -> None:
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(
            _conv(channels, 16, 3, 1, n_games), nn.ReLU(), nn.Flatten(),
            _linear(16 * (height - 2) * (width - 2), features_dim, n_games), nn.ReLU(),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations.float())


class PerGameCnnPolicy(CnnPolicy):
    """SB3's DQN ``CnnPolicy`` whose Q head (like the body) has per-game biases and gains.

    ``game`` is the game index selected at construction: it is a constructor parameter (not only
    :func:`set_game` state) so that a model saved in SB3's format loads with that game's layers selected.
    """

    def __init__(self, *args: Any, n_games: int = 1, game: int = 0, **kwargs: Any) -> None:
        self.n_games = n_games
        self.game = game
        super().__init__(*args, **kwargs)
        self.set_game(game)

    def set_game(self, game: int) -> None:
        """Play game ``game`` (an index of the run's games, in first-visit order) from now on."""
        if not 0 <= game < self.n_games:
            raise ValueError(f"game index {game} out of range: this policy has {self.n_games} games")
        self.game = game
        set_game(self, game)

    def make_q_net(self) -> QNetwork:
        q_net = super().make_q_net()
        head = q_net.q_net[-1]
        assert isinstance(head, nn.Linear)
        q_net.q_net[-1] = _linear(head.in_features, head.out_features, self.n_games).to(self.device)
        return q_net

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_games": self.n_games, "game": self.game}


def resolve(network: str, suite: str) -> str:
    """The network an agent file asks for, checked against the games' suite (``auto`` picks by suite)."""
    fits = {"atari": ("nature", "wide"), "minatar": ("minatar",)}[suite]
    if network == "auto":
        return fits[0]
    if network not in fits:
        shape = "84x84 Atari frames" if network in ("nature", "wide") else "10x10 MinAtar planes"
        raise UsageError(f"agent.network = '{network}' is built for {shape}, not {suite} games; "
                         f"use agent.network = 'auto' or one of {', '.join(fits)}")
    return network


def policy(network: str, n_games: int = 0) -> tuple[str | type, dict[str, Any]]:
    """SB3 (policy, ``policy_kwargs``) for ``network``; ``n_games`` > 0 gives every layer per-game b and g."""
    if network == "nature" and not n_games:
        return "CnnPolicy", {"features_extractor_class": NatureCNN, "net_arch": []}
    if network in ("nature", "wide"):
        extractor: dict[str, Any] = {"n_games": n_games}
        if network == "wide":
            extractor |= {"features_dim": 1024, "filters": (32, 64, 128)}
        kwargs = {"features_extractor_class": AtariCNN, "features_extractor_kwargs": extractor, "net_arch": []}
    elif network == "minatar":
        kwargs = {"features_extractor_class": MinAtarCNN, "features_extractor_kwargs": {"n_games": n_games},
                  "net_arch": [], "normalize_images": False}
    else:
        raise ValueError(f"unknown network {network!r}")
    if n_games:
        return PerGameCnnPolicy, {**kwargs, "n_games": n_games}
    return "CnnPolicy", kwargs
