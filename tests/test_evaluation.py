"""The evaluator plays several episodes side by side with a batched forward."""

from __future__ import annotations

import math

import torch as th
from torch import nn

from ewc_rl.config import EnvConfig
from ewc_rl.evaluation import evaluate


class ConstantQ(nn.Module):
    """Always prefers one action."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, obs: th.Tensor) -> th.Tensor:
        q = th.zeros(obs.shape[0], 18)
        q[:, self.action] = 1.0
        return q


def test_returns_one_score_per_episode_and_respects_the_cap():
    returns = evaluate(ConstantQ(0), "Pong", EnvConfig(), episodes=3, epsilon=0.0, max_episode_steps=120, seed=0)
    assert len(returns) == 3 and all(math.isfinite(r) for r in returns)
    assert all(-21 <= r <= 0 for r in returns)


def test_is_deterministic_for_a_seed():
    kw = dict(episodes=2, epsilon=0.5, max_episode_steps=300, seed=3)
    first = evaluate(ConstantQ(1), "Breakout", EnvConfig(), **kw)
    assert first == evaluate(ConstantQ(1), "Breakout", EnvConfig(), **kw)
