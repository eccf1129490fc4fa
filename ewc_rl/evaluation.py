"""Playing games with a frozen Q-network: all episodes of a game run side by side, one batched forward."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch as th
from torch import nn

from ewc_rl.config import EnvConfig
from ewc_rl.envs import make_env


def evaluate(
    q_net: nn.Module,
    game: str,
    env_cfg: EnvConfig,
    *,
    episodes: int,
    epsilon: float,
    max_episode_steps: int,
    seed: int,
    device: th.device | str = "cpu",
    threads: int | None = None,
    before_play: Callable[[np.ndarray], None] | None = None,
) -> list[float]:
    """Unclipped returns of ``episodes`` full games played epsilon-greedily (games are capped in steps).

    ``before_play`` sees the episodes' first observations before any action: with inferred tasks the learner picks
    the per-game layers for the frames it is shown there, as it would in training, not by the game's name."""
    env = make_env(
        game, env_cfg, training=False, n_envs=episodes, seed=seed, max_episode_steps=max_episode_steps, threads=threads
    )
    rng = np.random.default_rng(seed)
    returns = np.full(episodes, np.nan)
    was_training = q_net.training
    q_net.eval()
    try:
        obs = env.reset()
        if before_play is not None:
            before_play(np.asarray(obs))
        n_actions = int(env.action_space.n)  # type: ignore[attr-defined]  # every suite's space is Discrete
        while np.isnan(returns).any():
            with th.no_grad():
                actions = q_net(th.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
            explore = rng.random(episodes) < epsilon
            actions[explore] = rng.integers(0, n_actions, size=int(explore.sum()))
            obs, _, dones, infos = env.step(actions)
            for i in np.flatnonzero(dones & np.isnan(returns)):
                returns[i] = infos[i]["episode"]["r"]
    finally:
        env.close()
        q_net.train(was_training)
    return returns.tolist()
