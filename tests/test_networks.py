from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from ewc_rl.errors import UsageError
from ewc_rl.networks import MinAtarCNN, policy_kwargs, resolve


def test_auto_picks_by_suite_and_mismatches_are_errors():
    assert resolve("auto", "atari") == "nature" and resolve("auto", "minatar") == "minatar"
    assert resolve("minatar", "minatar") == "minatar"
    with pytest.raises(UsageError, match="agent.network = 'nature' is built for 84x84 Atari frames"):
        resolve("nature", "minatar")


def test_minatar_cnn_shapes_and_no_image_scaling():
    space = gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)
    net = MinAtarCNN(space)
    assert net(th.ones(3, 10, 10, 10, dtype=th.uint8)).shape == (3, 128)
    assert policy_kwargs("minatar")["normalize_images"] is False
    assert sum(p.numel() for p in net.parameters()) == 10 * 16 * 9 + 16 + 16 * 8 * 8 * 128 + 128
