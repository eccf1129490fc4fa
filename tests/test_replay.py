"""FrameReplayBuffer returns exactly what SB3's ReplayBuffer returns for the same transitions and RNG state."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer

from ewc_rl.replay import FrameReplayBuffer, buffer_state, load_buffer_state, sample_transitions

STACK, H, W = 4, 6, 5
OBS = gym.spaces.Box(0, 255, (STACK, H, W), np.uint8)
ACT = gym.spaces.Discrete(18)


class StackedSource:
    """Frame-stacked transitions of ``n_envs`` envs with short random episodes, like an Atari vector env.

    An episode starts either as ale-py does (three zero frames, then the first frame) or with four
    non-zero frames; some episodes end by time limit; frames may repeat or be all zero mid-episode.
    """

    def __init__(self, n_envs: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n = n_envs
        self.obs = np.stack([self._start() for _ in range(n_envs)])
        self.left = self.rng.integers(1, 7, n_envs)

    def _frame(self) -> np.ndarray:
        if self.rng.random() < 0.05:
            return np.zeros((H, W), np.uint8)
        return self.rng.integers(0, 256, (H, W), dtype=np.uint8)

    def _start(self) -> np.ndarray:
        if self.rng.random() < 0.5:
            return np.stack([np.zeros((H, W), np.uint8)] * 3 + [self._frame()])
        return np.stack([self._frame() for _ in range(STACK)])

    def step(self):
        obs = self.obs.copy()
        next_obs = np.stack([np.concatenate([o[1:], self._frame()[None]]) for o in obs])
        self.left -= 1
        done = self.left == 0
        infos = [{"TimeLimit.truncated": bool(d and self.rng.random() < 0.3)} for d in done]
        action = self.rng.integers(0, 18, (self.n, 1))
        reward = self.rng.normal(size=self.n).astype(np.float32)
        self.obs = next_obs.copy()
        for i in np.flatnonzero(done):
            self.obs[i] = self._start()
            self.left[i] = self.rng.integers(1, 7)
        return obs, next_obs, action, reward, done.astype(np.float32), infos


def _same(a, b) -> None:
    for name in ("observations", "actions", "next_observations", "dones", "rewards"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert th.equal(x, y), name


@pytest.mark.parametrize("n_envs", [1, 2])
def test_batches_equal_sb3_across_episodes_and_wraparound(n_envs):
    size = 37  # odd size, wraps several times
    plain = ReplayBuffer(size, OBS, ACT, device="cpu", n_envs=n_envs, handle_timeout_termination=True)
    lean = FrameReplayBuffer(size, OBS, ACT, device="cpu", n_envs=n_envs, handle_timeout_termination=True)
    lean.capacity = n_envs * (size // n_envs) + 2  # start tight so that the ring has to grow
    lean.frames = np.zeros((lean.capacity, H, W), np.uint8)
    source = StackedSource(n_envs, seed=n_envs)
    for t in range(5 * size):
        transition = source.step()
        plain.add(*transition)
        lean.add(*transition)
        assert (plain.pos, plain.full) == (lean.pos, lean.full)
        for draw in range(3):
            np.random.seed(1000 * t + draw)
            want = plain.sample(16)
            np.random.seed(1000 * t + draw)
            _same(lean.sample(16), want)
    assert lean.capacity > n_envs * (size // n_envs) + 2  # it grew, and kept every referenced frame
    np.random.seed(7)
    everything = np.arange(size // n_envs)
    _same(lean._get_samples(everything), (np.random.seed(7), plain._get_samples(everything))[1])
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    np.random.seed(9)
    a = sample_transitions(plain, 20, rng_a)
    np.random.seed(9)
    _same(sample_transitions(lean, 20, rng_b), a)


def test_memory_per_transition_is_about_one_frame():
    size = 2_000
    lean = FrameReplayBuffer(size, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), ACT, device="cpu")
    plain_bytes = 2 * 4 * 84 * 84 + 8 + 4 + 4 + 4
    assert lean.nbytes / size <= 7200 < plain_bytes / 7  # the target of issue 4; SB3: 56 KB


def test_state_round_trip_continues_identically():
    size = 23
    a = FrameReplayBuffer(size, OBS, ACT, device="cpu", n_envs=2)
    source = StackedSource(2, seed=5)
    for _ in range(40):
        a.add(*source.step())
    b = FrameReplayBuffer(size, OBS, ACT, device="cpu", n_envs=2)
    load_buffer_state(b, {k: v.copy() for k, v in buffer_state(a).items()})
    for t in range(30):  # both keep storing the same stream, and keep sampling the same batches
        transition = source.step()
        a.add(*transition)
        b.add(*transition)
        np.random.seed(t)
        want = a.sample(8)
        np.random.seed(t)
        _same(b.sample(8), want)


def test_refuses_what_it_cannot_store():
    with pytest.raises(ValueError, match="uint8 observations"):
        FrameReplayBuffer(10, gym.spaces.Box(0, 1, (10, 10), np.float32), ACT)
    lean = FrameReplayBuffer(10, OBS, ACT, device="cpu")
    obs = np.zeros((1, STACK, H, W), np.uint8)
    unrelated = np.ones((1, STACK, H, W), np.uint8)
    with pytest.raises(ValueError, match="not the observation shifted by one frame"):
        lean.add(obs, unrelated, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])


def test_real_atari_transitions_match_sb3():
    """Breakout with life losses and a game over, through the environment the trainer uses."""
    from ewc_rl.config import EnvConfig
    from ewc_rl.envs import make_env

    env = make_env("Breakout", EnvConfig(), training=True, seed=3, n_envs=2, max_episode_steps=150)
    space = env.observation_space
    plain = ReplayBuffer(100, space, env.action_space, device="cpu", n_envs=2)
    lean = FrameReplayBuffer(100, space, env.action_space, device="cpu", n_envs=2)
    rng = np.random.default_rng(0)
    obs = env.reset()
    ends = 0
    for _ in range(400):
        action = rng.integers(0, 18, 2)
        new_obs, reward, done, infos = env.step(action)
        next_obs = new_obs.copy()
        for i in np.flatnonzero(done):
            next_obs[i] = infos[i]["terminal_observation"]
            ends += 1
        for buffer in (plain, lean):
            buffer.add(obs, next_obs, action[:, None], reward, done, infos)
        obs = new_obs
    env.close()
    assert ends > 5
    np.random.seed(11)
    want = plain.sample(64)
    np.random.seed(11)
    _same(lean.sample(64), want)
