"""Replay memories: a frame-deduplicating buffer for stacked Atari frames, and Fisher state sampling.

SB3's ``ReplayBuffer`` stores every observation and next observation whole: a (4, 84, 84) frame stack
twice, 56 KB per transition (28 KB with ``optimize_memory_usage``), so the EWC paper's per-game memories
of 1M transitions do not fit in RAM. Consecutive stacks share three of their four frames, so
:class:`FrameReplayBuffer` stores each frame once and a transition as five frame references (about 7.1 KB).
It is a drop-in SB3 buffer: it draws its random indices exactly as ``ReplayBuffer`` does, so with the
same numpy RNG state it returns the very same batches (``tests/test_replay.py`` checks that against
SB3's buffer, across episode boundaries and the circular store's wrap-around).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

_ZERO = -1  # frame reference meaning "an all-zero frame" (the padding of a new episode's first stack)


class FrameReplayBuffer(BaseBuffer):
    """Replay memory for (stack, H, W) uint8 frame stacks that stores each frame once.

    A transition holds the sequence numbers of its observation's ``stack`` frames and of the newest frame
    of its next observation (the other frames of the next observation are the observation's last
    ``stack - 1``). Frames live in a ring indexed by sequence number; a frame is only overwritten once
    no stored transition refers to it (the ring grows by 1/128 in the rare case that episode starts, which
    add frames of their own, crowd it).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        shape = observation_space.shape or ()
        if not (isinstance(observation_space, spaces.Box) and len(shape) == 3 and observation_space.dtype == np.uint8):
            raise ValueError("FrameReplayBuffer needs (stack, height, width) uint8 observations")
        if not isinstance(action_space, spaces.Discrete) or action_space.n > 256:
            raise ValueError("FrameReplayBuffer stores discrete actions in one byte")
        self.stack, self.frame_shape = shape[0], shape[1:]
        self.handle_timeout_termination = handle_timeout_termination
        self.buffer_size = rows = max(buffer_size // n_envs, 1)  # rows of n_envs transitions, as SB3's buffer
        self.capacity = n_envs * (rows + 2 * self.stack)
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=np.uint8)
        self.obs_refs = np.full((rows, n_envs, self.stack), _ZERO, dtype=np.int64)
        self.next_refs = np.full((rows, n_envs), _ZERO, dtype=np.int64)
        self.actions = np.zeros((rows, n_envs), dtype=np.uint8)
        self.rewards = np.zeros((rows, n_envs), dtype=np.float32)
        self.dones = np.zeros((rows, n_envs), dtype=bool)
        self.timeouts = np.zeros((rows, n_envs), dtype=bool)
        self.next_seq = 0  # sequence number of the next frame stored
        self.oldest_needed = 0  # no stored transition refers to a frame older than this (a lower bound)
        self._last: list[np.ndarray | None] = [None] * n_envs  # refs of each env's latest next observation

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's arrays."""
        return sum(
            a.nbytes
            for a in (self.frames, self.obs_refs, self.next_refs, self.actions, self.rewards, self.dones, self.timeouts)
        )

    # -- storing -------------------------------------------------------------------------------------

    def _frame(self, seq: int) -> np.ndarray:
        return self.frames[seq % self.capacity]

    def _stored(self, refs: np.ndarray) -> np.ndarray:
        """The frame stack that ``refs`` points to."""
        out = np.zeros((self.stack, *self.frame_shape), dtype=np.uint8)
        for k, seq in enumerate(refs):
            if seq != _ZERO:
                out[k] = self._frame(int(seq))
        return out

    def _append(self, frame: np.ndarray) -> int:
        if not frame.any():
            return _ZERO
        seq = self.next_seq
        if seq - self.capacity >= self.oldest_needed:  # the slot may still be referenced: look again
            self.oldest_needed = self._oldest_referenced()
            if seq - self.capacity >= self.oldest_needed:
                self._grow()
        self.frames[seq % self.capacity] = frame
        self.next_seq += 1
        return seq

    def _oldest_referenced(self) -> int:
        rows = slice(None) if self.full else slice(0, self.pos)
        refs = np.concatenate([self.obs_refs[rows].ravel(), self.next_refs[rows].ravel()])
        pending = [r for r in self._last if r is not None]
        refs = np.concatenate([refs, *pending]) if pending else refs
        refs = refs[refs != _ZERO]
        return int(refs.min()) if refs.size else self.next_seq

    def _grow(self) -> None:
        old, old_capacity = self.frames, self.capacity
        self.capacity = old_capacity + max(old_capacity // 128, self.n_envs * self.stack)
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=np.uint8)
        for start in range(self.oldest_needed, self.next_seq, 4096):  # in chunks: no full-size temporary
            seqs = np.arange(start, min(start + 4096, self.next_seq))
            self.frames[seqs % self.capacity] = old[seqs % old_capacity]

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one transition per environment, as SB3's ``ReplayBuffer.add`` does."""
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        for e in range(self.n_envs):
            last = self._last[e]
            if last is not None and np.array_equal(self._stored(last), obs[e]):
                refs = last  # the usual case: this observation is the previous next observation
            else:  # a new episode (or a first step): store its frames
                refs = np.array([self._append(f) for f in obs[e]], dtype=np.int64)
            if not np.array_equal(next_obs[e, :-1], obs[e, 1:]):
                raise ValueError(
                    "next observation is not the observation shifted by one frame: FrameReplayBuffer "
                    "needs frame-stacked observations"
                )
            newest = self._append(next_obs[e, -1])
            self.obs_refs[self.pos, e] = refs
            self.next_refs[self.pos, e] = newest
            self._last[e] = np.append(refs[1:], newest)
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs)
        self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs)
        self.dones[self.pos] = np.asarray(done).reshape(self.n_envs)
        if self.handle_timeout_termination:
            self.timeouts[self.pos] = [info.get("TimeLimit.truncated", False) for info in infos]
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    # -- sampling ------------------------------------------------------------------------------------

    def _gather(self, refs: np.ndarray) -> np.ndarray:
        """(B, stack) frame references -> (B, stack, H, W) frames."""
        out = self.frames[refs % self.capacity]
        out[refs == _ZERO] = 0
        return out

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        # The same draws, in the same order, as SB3's ReplayBuffer._get_samples.
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        obs_refs = self.obs_refs[batch_inds, env_indices]
        next_refs = np.concatenate([obs_refs[:, 1:], self.next_refs[batch_inds, env_indices][:, None]], axis=1)
        dones = self.dones[batch_inds, env_indices] & ~self.timeouts[batch_inds, env_indices]
        data = (
            self._normalize_obs(self._gather(obs_refs), env),
            self.actions[batch_inds, env_indices].astype(np.int64).reshape(-1, 1),
            self._normalize_obs(self._gather(next_refs), env),
            dones.astype(np.float32).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything stored, as plain arrays (only the frames still referenced)."""
        first = self._oldest_referenced()
        seqs = np.arange(first, self.next_seq)
        return {
            "frames": self.frames[seqs % self.capacity],
            "frame_seqs": seqs,
            "obs_refs": self.obs_refs,
            "next_refs": self.next_refs,
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": self.dones,
            "timeouts": self.timeouts,
            "last": np.array([r if r is not None else np.full(self.stack, _ZERO) for r in self._last]),
            "has_last": np.array([r is not None for r in self._last]),
            "position": np.array([self.pos, int(self.full), self.next_seq], dtype=np.int64),
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.pos, full, self.next_seq = (int(x) for x in arrays["position"])
        self.full = bool(full)
        seqs = arrays["frame_seqs"]
        self.capacity = max(self.capacity, len(seqs) + self.n_envs * self.stack)
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=np.uint8)
        self.frames[seqs % self.capacity] = arrays["frames"]
        self.oldest_needed = int(seqs[0]) if len(seqs) else self.next_seq
        for k in ("obs_refs", "next_refs", "actions", "rewards", "dones", "timeouts"):
            getattr(self, k)[...] = arrays[k]
        self._last = [row.copy() if has else None for row, has in zip(arrays["last"], arrays["has_last"], strict=True)]


# -- any buffer ---------------------------------------------------------------------------------------

_SB3_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def buffer_state(buffer: BaseBuffer) -> dict[str, np.ndarray]:
    """The stored part of a replay buffer (ours or SB3's) as plain arrays, for a checkpoint."""
    if isinstance(buffer, FrameReplayBuffer):
        return buffer.state_arrays()
    n = buffer.buffer_size if buffer.full else buffer.pos
    out = {k: getattr(buffer, k)[:n] for k in _SB3_ARRAYS if getattr(buffer, k, None) is not None}
    out["position"] = np.array([buffer.pos, int(buffer.full)], dtype=np.int64)
    return out


def load_buffer_state(buffer: BaseBuffer, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`buffer_state` into a new buffer of the same kind and size."""
    if isinstance(buffer, FrameReplayBuffer):
        buffer.load_state_arrays(arrays)
        return
    pos, full = (int(x) for x in arrays["position"][:2])
    for k in _SB3_ARRAYS:
        if k in arrays and getattr(buffer, k, None) is not None:
            target = getattr(buffer, k)
            if arrays[k].shape[1:] != target.shape[1:] or len(arrays[k]) > len(target):
                raise ValueError(f"replay array {k} has shape {arrays[k].shape}, the buffer {target.shape}")
            target[: len(arrays[k])] = arrays[k]
    buffer.pos, buffer.full = pos, bool(full)


def stored_indices(buffer: BaseBuffer) -> np.ndarray:
    """Indices of the transitions a uniform ``buffer.sample`` may return (SB3's own validity rule)."""
    if not buffer.full:
        return np.arange(buffer.pos)
    if isinstance(buffer, ReplayBuffer) and buffer.optimize_memory_usage:  # slot `pos` holds a next-obs only
        return (np.arange(1, buffer.buffer_size) + buffer.pos) % buffer.buffer_size
    return np.arange(buffer.buffer_size)


def sample_transitions(buffer: BaseBuffer, n: int, rng: np.random.Generator) -> ReplayBufferSamples:
    """Up to ``n`` distinct stored transitions, uniformly (all of them if fewer are stored)."""
    valid = stored_indices(buffer)
    if len(valid) == 0:
        raise ValueError("the replay memory is empty: no states to estimate a Fisher from")
    chosen = rng.choice(valid, size=min(n, len(valid)), replace=False)
    return cast(ReplayBufferSamples, buffer._get_samples(np.sort(chosen)))
