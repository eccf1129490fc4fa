"""The Python API for notebooks and scripts: ``ewc_rl.train(...)`` and ``ewc_rl.compare(...)``.

The same runs as ``ewc-rl train`` and ``ewc-rl compare`` (same directories, files and TensorBoard events),
returning objects instead of printing: the summary, the score matrix and metrics, and the trained model as a
stock stable-baselines3 ``DQN`` (``models/final.zip``). Settings are the agent file's keys, as ``--set`` takes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecEnv

from ewc_rl.errors import UsageError


def _text(value: Any) -> str:
    """A setting's value as ``--set`` reads it (TOML, else a bare string)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _overrides(settings: dict[str, Any] | None) -> list[str]:
    """``{"penalty.lambda": 1000}`` -> ``["penalty.lambda=1000"]``."""
    return [f"{key}={_text(value)}" for key, value in (settings or {}).items()]


@dataclass
class Run:
    """One finished run: its directory, summary.json, and its model."""

    logdir: Path
    summary: dict[str, Any]

    @property
    def score_matrix(self) -> list[list[float | None]]:
        """Row k: every game's mean evaluation return when training segment k ended (columns: ``games``)."""
        return self.summary["score_matrix"]

    @property
    def games(self) -> list[str]:
        return self.summary["columns"]

    @property
    def metrics(self) -> dict[str, Any]:
        """Average performance, forgetting per game and its mean, ... (docs/metrics.md)."""
        return self.summary["metrics"]

    def make_env(self, game: str, *, n_envs: int = 1, seed: int = 0) -> VecEnv:
        """An evaluation environment of ``game`` with the run's settings (raw rewards, full games)."""
        from ewc_rl.config import from_dict
        from ewc_rl.envs import canonical_game, make_env

        cfg = from_dict(self.summary["settings"])
        return make_env(
            canonical_game(game),
            cfg.env,
            training=False,
            n_envs=n_envs,
            seed=seed,
            max_episode_steps=cfg.eval.max_episode_steps,
        )

    @property
    def model(self) -> DQN:
        """The final model, loaded with stock ``DQN.load`` (greedy: ``model.predict(obs, deterministic=True)``)."""
        from ewc_rl import export

        return DQN.load(export.final_path(self.logdir), device="cpu")


@dataclass
class Comparison:
    """A finished comparison: comparison.json's content and every run, by label (agent[+settings]) and seed."""

    logdir: Path
    report: dict[str, Any]
    runs: dict[str, dict[int, Run]] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Labels, best average performance first."""
        from ewc_rl.report import ranking

        return ranking(self.report)


def train(
    games: list[str] | str,
    *,
    agent: str = "minatar-ewc",
    steps_per_game: int | Sequence[int] = 100_000,
    seed: int = 0,
    logdir: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    cycles: int = 1,
    checkpoint_every: int = 100_000,
    device: str = "auto",
    progress: bool = False,
) -> Run:
    """Train ``agent`` on ``games`` in order (as ``ewc-rl train``); the run directory must be new or empty."""
    from ewc_rl import networks
    from ewc_rl.config import load_config
    from ewc_rl.envs import parse_games, suite
    from ewc_rl.schedule import budget_for
    from ewc_rl.trainer import RunSpec, Trainer

    cfg = load_config(agent, _overrides(settings))
    names = parse_games(games if isinstance(games, str) else ",".join(games))
    networks.resolve(cfg.agent.network, suite(names[0]))
    budget = budget_for(names, [steps_per_game] if isinstance(steps_per_game, int) else list(steps_per_game))
    path = Path(logdir) if logdir is not None else Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"logdir {path} already holds files; choose a new directory")
    spec = RunSpec(
        games=names,
        steps_per_game=budget,
        logdir=path,
        cycles=cycles,
        seed=seed,
        device=device,
        progress=progress,
        eval_all_games=cfg.eval.all_games,
        checkpoint_every=checkpoint_every,
        command=["ewc_rl.train", json.dumps({"games": names, "agent": agent, "settings": settings})],
    )
    summary = Trainer(cfg, spec).run()
    return Run(path, summary)


def compare(
    agents: list[str],
    games: list[str] | str,
    *,
    seeds: Sequence[int] = (0,),
    steps_per_game: int | Sequence[int] = 100_000,
    logdir: str | Path,
    settings: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
    fresh_references: bool | str = False,
    threads: int | None = None,
) -> Comparison:
    """Train every agent x ``grid`` value x seed (as ``ewc-rl compare``), then write and return the report.

    ``fresh_references``: also a fresh network per game and seed (``True``: the first agent's file, or name one),
    the baselines of the report's plasticity and forward transfer (``compare --fresh-references``). ``threads``:
    torch threads per run (``compare --threads``; default: the cores divided between the runs at once)."""
    from ewc_rl.config import load_config
    from ewc_rl.envs import parse_games
    from ewc_rl.errors import RunError
    from ewc_rl.grid import GridSpec, parse_grid, run_grid
    from ewc_rl.report import load_runs, write_report
    from ewc_rl.schedule import budget_for

    names = parse_games(games if isinstance(games, str) else ",".join(games))
    budget = budget_for(names, [steps_per_game] if isinstance(steps_per_game, int) else list(steps_per_game))
    parsed = parse_grid([f"{k}={','.join(_text(v) for v in values)}" for k, values in (grid or {}).items()])
    fresh = agents[0] if fresh_references is True else fresh_references or None
    for agent in [*agents, *([fresh] if fresh else [])]:
        load_config(agent, _overrides(settings))
    spec = GridSpec(
        agents=list(agents),
        seeds=list(seeds),
        games=names,
        steps_per_game=budget,
        overrides=_overrides(settings),
        grid=parsed,
        fresh_references=fresh,
        fresh_games=list(dict.fromkeys(names)) if fresh else [],
    )
    path = Path(logdir)
    failed = run_grid(spec, path, workers=workers, device=device, progress=progress, threads=threads)
    if failed:
        raise RunError(f"{failed} run(s) failed; their logs are in {path / 'logs'}")
    write_report(path)
    runs = {
        label: {seed: Run(path / label / f"seed-{seed}", s) for seed, s in by_seed.items()}
        for label, by_seed in load_runs(path).items()
    }
    return Comparison(path, json.loads((path / "comparison.json").read_text()), runs)
