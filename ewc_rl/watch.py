"""``ewc-rl evaluate RUN``: a run's latest learner on any game of its suite, with intervals, and videos of it.

The learner comes from the run's latest code-free checkpoint (so a run still training can be watched, and no
pickle is loaded). Videos show what the agent sees, coloured: MinAtar's planes one colour per channel, Atari's
newest 84x84 grey frame; written as GIF through Pillow (a dependency already), or MP4 through imageio with its
ffmpeg plugin (``pip install "ewc_rl[video]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch as th

from ewc_rl.config import Config
from ewc_rl.envs import make_env, suite
from ewc_rl.errors import UsageError
from ewc_rl.evaluation import evaluate
from ewc_rl.export import safe_name
from ewc_rl.recognition import context_key

VIDEO_FORMATS = ("gif", "mp4")
# One colour per MinAtar channel (matplotlib's tab10), on black.
_PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


def render(observation: np.ndarray, game: str) -> np.ndarray:
    """An RGB frame (H, W, 3) of one observation: MinAtar planes 16x enlarged, Atari's newest frame 2x."""
    if suite(game) == "minatar":
        planes = observation.astype(bool)
        frame = np.zeros((*planes.shape[1:], 3), dtype=np.uint8)
        for channel in range(planes.shape[0]):  # later channels drawn over earlier ones
            frame[planes[channel]] = _PALETTE[channel % len(_PALETTE)]
        scale = 16
    else:
        frame = np.repeat(observation[-1][..., None], 3, axis=2)
        scale = 2
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def record_episode(
    q_net: th.nn.Module, game: str, cfg: Config, *, epsilon: float, seed: int, device: th.device | str = "cpu"
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The frames (the first observation, then one per step, the last at game over) and the episode's statistics
    (``r``: return, ``l``: length in agent steps)."""
    env = make_env(game, cfg.env, training=False, n_envs=1, seed=seed, max_episode_steps=cfg.eval.max_episode_steps)
    rng = np.random.default_rng(seed)
    was_training = q_net.training
    q_net.eval()
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]  # every suite's space is Discrete
    try:
        obs = cast(np.ndarray, env.reset())  # the suite's envs give one array
        frames = [render(obs[0], game)]
        while True:
            with th.no_grad():
                action = q_net(th.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
            if rng.random() < epsilon:
                action[0] = rng.integers(n_actions)
            stepped, _, dones, infos = env.step(action)
            obs = cast(np.ndarray, stepped)
            if dones[0]:
                frames.append(render(infos[0]["terminal_observation"], game))
                return frames, infos[0]["episode"]
            frames.append(render(obs[0], game))
    finally:
        env.close()
        q_net.train(was_training)


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """A GIF (Pillow) or an MP4 (imageio + ffmpeg), by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise UsageError(
                'MP4 videos need imageio and its ffmpeg plugin: pip install "ewc_rl[video]" (or use --video-format gif)'
            ) from None
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
        return path
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def check_games(games: list[str], run_games: list[str], per_game_layers: bool) -> None:
    """Refuse games the run's learner cannot play: another suite, or a game without its own layers."""
    if suite(games[0]) != suite(run_games[0]):
        names = {"atari": "ALE", "minatar": "MinAtar"}
        raise UsageError(
            f"the run's learner plays {names[suite(run_games[0])]} games; {games[0]} is an "
            f"{names[suite(games[0])]} game"
        )
    if per_game_layers:
        unknown = [g for g in games if g not in run_games]
        if unknown:
            raise UsageError(
                f"the run has per-game layers for {', '.join(run_games)} only; not for {', '.join(unknown)}"
            )


def evaluate_run(
    run_dir: Path,
    games: list[str] | None,
    *,
    episodes: int,
    epsilon: float | None,
    seed: int,
    video_dir: Path | None = None,
    video_format: str = "gif",
) -> dict[str, Any]:
    """Per game: the returns of ``episodes`` episodes, and the path of one recorded episode with ``video_dir``."""
    from ewc_rl.diagnose import load_agent, run_config

    cfg, run_games = run_config(run_dir)
    games = games or run_games
    check_games(games, run_games, cfg.agent.per_game_layers)
    eps = cfg.eval.epsilon if epsilon is None else epsilon
    agent, _ = load_agent(run_dir)
    results: dict[str, Any] = {}
    for j, game in enumerate(games):
        before_play = None
        if agent.recognizer is not None:  # inferred tasks: the context the recogniser assigns to the game's frames

            def before_play(obs: np.ndarray) -> None:
                assert agent.recognizer is not None
                agent.select_game(context_key(agent.recognizer.classify(obs)))

        else:
            agent.select_game(game)
        returns = evaluate(
            agent.q_net,
            game,
            cfg.env,
            episodes=episodes,
            epsilon=eps,
            max_episode_steps=cfg.eval.max_episode_steps,
            seed=seed * 100_003 + j,
            device=agent.device,
            before_play=before_play,
        )
        results[game] = {"returns": returns}
        if video_dir is not None:
            frames, episode = record_episode(
                agent.q_net, game, cfg, epsilon=eps, seed=seed * 100_003 + j, device=agent.device
            )
            fps = 15.0 if suite(game) == "atari" else 10.0  # Atari: 60 Hz / frame skip 4
            path = write_video(frames, video_dir / f"{safe_name(game)}.{video_format}", fps)
            results[game] |= {
                "video": path,
                "frames": len(frames),
                "video_return": float(episode["r"]),
                "video_length": int(episode["l"]),
            }
    return {"epsilon": eps, "episodes": episodes, "step": agent.num_timesteps, "games": results}
