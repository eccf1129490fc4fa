"""Q-network bodies, as stable-baselines3 feature extractors so SB3's DQN policy wraps them unchanged.

* ``nature``: SB3's ``NatureCNN`` (conv 32-8x8/4, 64-4x4/2, 64-3x3/1, FC 512) for 84x84 Atari frames;
* ``minatar``: conv 16-3x3/1 then FC 128, the network of the MinAtar paper, for 10x10 planes.
The Q head (one linear layer to the actions) is SB3's.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from ewc_rl.errors import UsageError

NETWORKS = ("auto", "nature", "minatar")


class MinAtarCNN(BaseFeaturesExtractor):
    """conv 16x3x3 (stride 1) -> ReLU -> FC 128 -> ReLU, for (C, 10, 10) {0, 1} inputs."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * (height - 2) * (width - 2), features_dim), nn.ReLU(),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations.float())


def resolve(network: str, suite: str) -> str:
    """The network an agent file asks for, checked against the games' suite (``auto`` picks by suite)."""
    wanted = {"atari": "nature", "minatar": "minatar"}[suite]
    if network == "auto":
        return wanted
    if network != wanted:
        shape = "84x84 Atari frames" if network == "nature" else "10x10 MinAtar planes"
        raise UsageError(f"agent.network = '{network}' is built for {shape}, not {suite} games; "
                         f"use agent.network = 'auto' or '{wanted}'")
    return network


def policy_kwargs(network: str) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` selecting the network body; the Q head is a single linear layer."""
    if network == "nature":
        return {"features_extractor_class": NatureCNN, "net_arch": []}
    if network == "minatar":
        return {"features_extractor_class": MinAtarCNN, "net_arch": [], "normalize_images": False}
    raise ValueError(f"unknown network {network!r}")
