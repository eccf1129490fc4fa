"""Shared fixtures: a tiny image environment and a tiny Q-network, so unit tests run in seconds; and a check that
the suite leaves nothing in the system temporary directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from torch import nn

if TYPE_CHECKING:
    from ewc_rl.agent import ContinualDQN


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
        nn.Conv2d(channels, 3, kernel_size=3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 8),
        nn.Tanh(),
        nn.Linear(8, n_actions),
    )


def silent(agent):
    """``agent`` with a logger that writes nothing: learn() without one makes an SB3-<time> folder in /tmp."""
    from stable_baselines3.common.logger import Logger

    agent.set_logger(Logger(folder=None, output_formats=[]))
    return agent


@pytest.fixture(scope="session", autouse=True)
def temp_dir_left_as_found(tmp_path_factory):
    """Fail the session if any test (or a process it starts) leaves a file in the temporary directory.

    For the session, tempfile and every child process (TMPDIR) use a fresh directory instead of the system one; it
    must be empty at the end, and it is then removed, so the system's is left as it was found. Comparing the system
    directory's listing before and after would fail at random: other programs on the machine write there too.
    Tests keep their files under pytest's own ``tmp_path``, whose base is fixed before the switch, and so does
    torch.func's compiler cache (by default ``<temp>/torchinductor_<user>``, kept on purpose across runs).
    """
    caches = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("torchinductor"))}
    sandbox = Path(tempfile.mkdtemp(prefix="ewc-tests-"))
    saved_env = {k: os.environ.get(k) for k in ("TMPDIR", *caches)}
    saved_tempdir = tempfile.tempdir
    os.environ.update(caches, TMPDIR=str(sandbox))
    tempfile.tempdir = str(sandbox)
    try:
        yield sandbox
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        left = sorted(p.name for p in sandbox.iterdir())
        shutil.rmtree(sandbox, ignore_errors=True)
    assert not left, f"the tests left {len(left)} entries in the temporary directory: {', '.join(left[:5])}"


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny networks: a second thread only contends on a loaded machine)."""
    before = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(before)


OFFSETS = {"A": 0, "B": 80, "C": 160}  # episodes of 5 steps: each game's pixel values lie in its own range


def game_of(obs: th.Tensor) -> str:
    """Which of the games of :data:`OFFSETS` an observation of :func:`sequence_agent`'s environments comes from."""
    value = int(obs.flatten()[0])
    return next(g for g, off in sorted(OFFSETS.items(), key=lambda kv: -kv[1]) if value >= off)


def sequence_agent(methods: list, tmp_path, per_game_layers: bool = True, **kw):
    """A ContinualDQN with the MinAtar network and per-game layers (unless not ``per_game_layers``) for the games
    A, B, C of :data:`OFFSETS`."""
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ewc_rl import networks
    from ewc_rl.agent import ContinualDQN

    policy, policy_kwargs = networks.policy("minatar", len(OFFSETS) if per_game_layers else 0)
    args = dict(
        learning_starts=20,
        buffer_size=500,
        batch_size=16,
        train_freq=1,
        learning_rate=1e-2,
        target_update_interval=20,
        seed=0,
        device="cpu",
        policy_kwargs=policy_kwargs,
        games=list(OFFSETS),
    )
    agent = ContinualDQN(policy, DummyVecEnv([lambda: TinyImageEnv(length=5)]), methods=methods, **(args | kw))
    agent.set_logger(configure(str(tmp_path / "log"), []))
    return agent


def train_game(agent, game: str, steps: int = 60, end: bool = True) -> None:
    """Train ``game`` for ``steps`` steps; with ``end``, run the methods' segment end and free its replay."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ewc_rl.methods import SegmentEnd

    env = DummyVecEnv([lambda: TinyImageEnv(length=5, seed_offset=OFFSETS[game])])
    agent.begin_segment(env, game, steps)
    agent.learn(steps, reset_num_timesteps=False, log_interval=None)
    if end:
        for method in agent.methods:
            method.on_segment_end(agent, SegmentEnd(game, list(OFFSETS).index(game), last=False, seed=0))
        agent.end_segment(game, keep_replay=False)


ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


class Frames(gym.Env):
    """84x84x4 uint8 observations, different at every step, 6 actions: an Atari-shaped input for the Nature CNN."""

    def __init__(self) -> None:
        self.observation_space, self.action_space = ATARI, gym.spaces.Discrete(6)  # per instance: seeded per agent

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.random.default_rng(self.t).integers(0, 256, ATARI.shape, dtype=np.uint8)

    def step(self, action):
        self.t += 1
        return self._obs(), float(action == self.t % 6), self.t >= 12, False, {}


def atari_agent() -> ContinualDQN:
    """A small-replay DQN agent with the Nature CNN on `Frames`, acting at random (batches depend on the seed only)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from ewc_rl.agent import make_agent
    from ewc_rl.config import load_config

    settings = ["dqn.buffer_size=100", "dqn.learning_starts=16", "dqn.batch_size=8", "dqn.train_freq=1"]
    settings += ["dqn.exploration_initial_eps=1.0", "dqn.exploration_final_eps=1.0", "agent.replay='sb3'"]
    return silent(make_agent(load_config("dqn", settings), DummyVecEnv([Frames]), ["Breakout"], seed=0, device="cpu"))
