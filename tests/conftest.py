"""Shared fixtures: a tiny image environment and a tiny Q-network, so unit tests run in seconds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn


class TinyImageEnv(gym.Env):
    """A 4x8x8 uint8 'game' with 18 actions: episodes of ``length`` steps, reward 1 for action 0."""

    def __init__(self, length: int = 20, seed_offset: int = 0) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (4, 8, 8), np.uint8)
        self.action_space = gym.spaces.Discrete(18)
        self.length, self.t, self.seed_offset = length, 0, seed_offset

    def _obs(self) -> np.ndarray:
        return np.full((4, 8, 8), (self.t * 13 + self.seed_offset) % 256, dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action == 0), self.t >= self.length, False, {}


def tiny_qnet(n_actions: int = 5, channels: int = 2) -> nn.Module:
    """Conv + linear layers, like the real Q-networks but small enough for a per-sample loop."""
    th.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 3, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, n_actions),
    )
