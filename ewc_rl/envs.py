"""Game names -> environments. Every game of a suite has one interface, so one network plays them all:

* ALE (``Pong``, ``SpaceInvaders``, ...): (4, 84, 84) uint8 frames, the full 18-action set;
* MinAtar (``MinAtar/Breakout``, ...): (10, 10, 10) {0, 1} planes, channel-first, each game's channels
  zero-padded to the 10 of the richest game, the full 6-action set.

Atari games run in ale-py's native vector environment (preprocessing, frame stacking and no-op starts
in C++, no OpenCV needed), wrapped as a stable-baselines3 ``VecEnv`` so SB3's DQN drives it directly.
The adapter adds only what the native env lacks for DQN training: reward clipping for training while
returns stay unclipped, and terminal-on-life-loss that marks the transition terminal *without*
restarting the game (the DQN-paper convention; ALE's ``episodic_life`` reports game over the same way).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from ewc_rl.config import EnvConfig
from ewc_rl.errors import UsageError

N_ACTIONS = 18
MINATAR_PREFIX = "MinAtar/"
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
MINATAR_CHANNELS = 10
MINATAR_ACTIONS = 6


class UnknownGameError(UsageError):
    """A game name that no installed suite knows."""


@functools.cache
def atari_games() -> dict[str, str]:
    """ALE names (``SpaceInvaders``) -> ROM ids (``space_invaders``) for every ROM in the ale-py wheel."""
    from ale_py import roms

    return {"".join(p.capitalize() for p in rom.split("_")): rom for rom in roms.get_all_rom_ids()}


def suite(game: str) -> str:
    """``"minatar"`` or ``"atari"``, from a canonical game name."""
    return "minatar" if game.startswith(MINATAR_PREFIX) else "atari"


def _canonical_minatar(name: str) -> str:
    rest = name[len(MINATAR_PREFIX) :].strip()
    by_lower = {g.lower(): g for g in MINATAR_GAMES}
    if rest.lower().replace("_", "") in by_lower:
        return MINATAR_PREFIX + by_lower[rest.lower().replace("_", "")]
    close = difflib.get_close_matches(rest, list(MINATAR_GAMES), n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(MINATAR_PREFIX + c for c in close)}" if close else ""
    raise UnknownGameError(f"unknown game '{name}'{hint} (MinAtar games: {', '.join(MINATAR_GAMES)})")


# gymnasium's ids of the same games: ALE/Pong-v5, Pong-v4, PongNoFrameskip-v4, PongDeterministic-v4, and
# MinAtar/Breakout-v1. They name a game only: the suite's preprocessing applies (full action set, frame skip
# and stack, sticky actions of the agent file), not the one those ids select in gymnasium.
_GYM_ID = re.compile(r"^(?:ALE/)?(?P<game>[A-Za-z0-9_]+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$")
_MINATAR_GYM_ID = re.compile(r"^(?P<game>MinAtar/[A-Za-z_]+)-v\d+$", re.IGNORECASE)


def _strip_gym_id(name: str) -> str:
    """``ALE/Pong-v5`` or ``PongNoFrameskip-v4`` -> ``Pong``; ``MinAtar/Breakout-v1`` -> ``MinAtar/Breakout``."""
    name = name.strip()
    match = _MINATAR_GYM_ID.match(name) or _GYM_ID.match(name)
    return match["game"] if match else name


def canonical_game(name: str) -> str:
    """Validate a game name and return its canonical spelling (case and underscores are forgiven; gymnasium's
    ids such as ``ALE/Pong-v5`` and ``PongNoFrameskip-v4`` name the same game)."""
    name = _strip_gym_id(name)
    if name.lower().startswith(MINATAR_PREFIX.lower()):
        return _canonical_minatar(MINATAR_PREFIX + name[len(MINATAR_PREFIX) :])
    games = atari_games()
    if name in games:
        return name
    folded = {g.lower(): g for g in games} | {rom: g for g, rom in games.items()}
    key = name.strip().lower()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(name, list(games), n=3, cutoff=0.5)
    close = close or [folded[k] for k in difflib.get_close_matches(key, list(folded), n=3, cutoff=0.5)]
    hint = f"; closest: {', '.join(dict.fromkeys(close))}" if close else ""
    raise UnknownGameError(f"unknown game '{name}'{hint} (ALE names such as Pong, Breakout, SpaceInvaders)")


def parse_games(text: str) -> list[str]:
    """``"Pong,Breakout"`` -> canonical names; every name is checked before anything runs."""
    names = [g.strip() for g in text.split(",") if g.strip()]
    if not names:
        raise UsageError("--games needs at least one game name")
    games = [canonical_game(n) for n in names]
    suites = {suite(g) for g in games}
    if len(suites) > 1:
        raise UsageError(
            "--games mixes ALE and MinAtar games, whose observations differ (4x84x84 frames vs "
            "10x10x10 planes) so one network cannot play both; use one suite per sequence"
        )
    return games


class AtariVecEnv(VecEnv):
    """ale-py's ``AtariVectorEnv`` as an SB3 ``VecEnv``.

    ``training=True`` clips rewards to their sign and, if configured, ends an episode for the learner
    at every life loss (the game itself goes on). Episode statistics (``info["episode"]``, SB3's
    Monitor format) always carry the raw, unclipped game score over a full game.
    """

    def __init__(
        self,
        game: str,
        n_envs: int,
        cfg: EnvConfig,
        *,
        training: bool,
        seed: int | None = None,
        max_episode_steps: int = 27_000,
        num_threads: int = 1,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        self.game = canonical_game(game)
        self.training = training
        self.life_loss_terminal = training and cfg.terminal_on_life_loss
        self._env = AtariVectorEnv(
            atari_games()[self.game],
            n_envs,
            num_threads=num_threads,
            full_action_space=True,
            repeat_action_probability=cfg.repeat_action_probability,
            frameskip=cfg.frame_skip,
            noop_max=cfg.noop_max,
            img_height=cfg.screen_size,
            img_width=cfg.screen_size,
            stack_num=cfg.frame_stack,
            max_num_frames_per_episode=max_episode_steps * cfg.frame_skip,
            reward_clipping=False,
            episodic_life=False,
            autoreset_mode="SameStep",
        )
        obs_space = gym.spaces.Box(0, 255, (cfg.frame_stack, cfg.screen_size, cfg.screen_size), np.uint8)
        super().__init__(n_envs, obs_space, gym.spaces.Discrete(N_ACTIONS))
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._returns = np.zeros(n_envs, dtype=np.float64)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._t0 = time.time()
        if seed is not None:
            self.seed(seed)

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        if seed is not None:  # ALE takes int32 seeds, consecutive from this one; see MinAtarPlanes.reset
            seed = int(seed) % (2**31 - self.num_envs)
        obs, info = self._env.reset(seed=seed)
        self._reset_seeds()
        self._returns[:] = 0
        self._lengths[:] = 0
        self._lives[:] = info["lives"]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self._env.step(self._actions)
        reward = np.asarray(reward, dtype=np.float64)
        game_over = terminated | truncated
        self._returns += reward
        self._lengths += 1
        lives = np.asarray(info["lives"])
        life_lost = (lives < self._lives) & ~game_over if self.life_loss_terminal else np.zeros_like(game_over)
        self._lives = lives
        dones = game_over | life_lost
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            if game_over[i]:
                infos[i]["terminal_observation"] = info["final_obs"][i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                infos[i]["episode"] = {
                    "r": float(self._returns[i]),
                    "l": int(self._lengths[i]),
                    "t": round(time.time() - self._t0, 6),
                }
                self._returns[i] = 0
                self._lengths[i] = 0
            else:  # a lost life: terminal for the learner, but the game continues from `obs`
                infos[i]["terminal_observation"] = obs[i]
        out_reward = np.sign(reward) if self.training else reward
        return obs, out_reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self._env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        n = len(list(self._get_indices(indices)))
        return [getattr(self, attr_name, None)] * n

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError("AtariVecEnv has no per-environment methods")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))


class MinAtarPlanes(gym.ObservationWrapper):
    """(10, 10, C) bool -> (10, 10, 10) uint8 channel-first, zero-padded: one shape for every MinAtar game."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 1, (MINATAR_CHANNELS, 10, 10), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        # MinAtar seeds numpy's legacy RandomState, which takes 0 to 2**32 - 1 only; a run resumed late (its
        # environment seed grows with the step) or a large --seed's evaluation seeds give more. Smaller seeds stay.
        return super().reset(seed=None if seed is None else int(seed) % 2**32, options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        planes = np.zeros((MINATAR_CHANNELS, 10, 10), dtype=np.uint8)
        planes[: observation.shape[-1]] = np.moveaxis(observation, -1, 0)
        return planes


@functools.cache
def _register_minatar() -> None:
    import logging

    # minatar imports seaborn for its own display only (this suite draws MinAtar frames itself: ewc_rl/watch.py),
    # about a second of every run's start-up; a None in sys.modules makes that import fail, as if not installed.
    hidden = "seaborn" not in sys.modules
    if hidden:
        sys.modules["seaborn"] = None  # type: ignore[assignment]  # Python's documented way to block an import
    try:
        logging.disable(logging.WARNING)  # minatar warns that it cannot render without seaborn
        import minatar.gym
    except ImportError:
        raise UsageError('MinAtar games need the minatar package: pip install "ewc_rl[minatar]"') from None
    finally:
        logging.disable(logging.NOTSET)
        if hidden:
            del sys.modules["seaborn"]  # importable again for anyone else
    minatar.gym.register_envs()


class MinAtarVecEnv(DummyVecEnv):
    """SB3's ``DummyVecEnv`` without deep copies on every step: the observations are returned as one array copy,
    the infos (new dicts from the environments at every step) as shallow copies. SB3 deep-copies a dict of
    buffers and the info list, a tenth of the MinAtar acting loop."""

    def _obs_from_buf(self) -> np.ndarray:
        return np.copy(self.buf_obs[None])  # type: ignore[index]  # SB3 keys a non-dict space's buffer by None

    def step_wait(self) -> VecEnvStepReturn:  # SB3's loop; only the copies at its end differ
        for i, env in enumerate(self.envs):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(self.actions[i])
            self.buf_dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[i]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_infos[i] = info
            self._save_obs(i, obs)
        infos = [dict(info) for info in self.buf_infos]
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), infos


def _minatar_env(game: str, cfg: EnvConfig, *, training: bool, seed: int, max_episode_steps: int) -> gym.Env:
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3.common.atari_wrappers import ClipRewardEnv
    from stable_baselines3.common.monitor import Monitor

    env = gym.make(f"{game}-v1", use_minimal_action_set=False, sticky_action_prob=cfg.repeat_action_probability)
    env = Monitor(TimeLimit(env.unwrapped, max_episode_steps))  # Monitor: raw returns for "episode" infos
    env = MinAtarPlanes(env)
    if training:
        env = ClipRewardEnv(env)
    env.reset(seed=seed)
    return env


def observation_shape(game: str, cfg: EnvConfig) -> tuple[int, ...]:
    """The observation shape of ``game``'s suite."""
    if suite(game) == "minatar":
        return (MINATAR_CHANNELS, 10, 10)
    return (cfg.frame_stack, cfg.screen_size, cfg.screen_size)


def make_env(
    game: str,
    cfg: EnvConfig,
    *,
    training: bool,
    n_envs: int = 1,
    seed: int | None = None,
    max_episode_steps: int = 27_000,
    threads: int | None = None,
) -> VecEnv:
    """The environment for ``game``: a training env (clipped rewards) or an evaluation env (raw rewards).

    ``threads`` caps the emulator threads of an ALE vector env (default: the cores); give a run's own CPU
    budget when several runs share the machine.
    """
    if suite(game) == "minatar":
        _register_minatar()
        base = 0 if seed is None else seed
        vec = MinAtarVecEnv(
            [
                functools.partial(
                    _minatar_env, game, cfg, training=training, seed=base + i, max_episode_steps=max_episode_steps
                )
                for i in range(n_envs)
            ]
        )
        vec.seed(base)
        return vec
    # Stepping alternates with the learner's torch work, so the emulators may use the run's cores meanwhile.
    threads = max(1, min(n_envs, threads or os.cpu_count() or 1))
    return AtariVecEnv(
        game, n_envs, cfg, training=training, seed=seed, max_episode_steps=max_episode_steps, num_threads=threads
    )
