"""Replay memories: SB3's ``ReplayBuffer``, one per game, plus the state sampling the Fisher needs."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples


def stored_indices(buffer: ReplayBuffer) -> np.ndarray:
    """Indices of the transitions a uniform ``buffer.sample`` may return (SB3's own validity rule)."""
    if not buffer.full:
        return np.arange(buffer.pos)
    if buffer.optimize_memory_usage:  # the slot at `pos` holds a next-observation only
        return (np.arange(1, buffer.buffer_size) + buffer.pos) % buffer.buffer_size
    return np.arange(buffer.buffer_size)


def sample_transitions(buffer: ReplayBuffer, n: int, rng: np.random.Generator) -> ReplayBufferSamples:
    """Up to ``n`` distinct stored transitions, uniformly (all of them if fewer are stored)."""
    valid = stored_indices(buffer)
    if len(valid) == 0:
        raise ValueError("the replay memory is empty: no states to estimate a Fisher from")
    chosen = rng.choice(valid, size=min(n, len(valid)), replace=False)
    return buffer._get_samples(np.sort(chosen))
