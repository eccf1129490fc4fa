"""Plain helpers that several test files share: tiny runs through the command line, fabricated run summaries, and a
run's TensorBoard events. (The tiny environment, network and agents, and the fixtures, are in conftest.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ewc_rl.cli import main


def budget(
    steps: int, *sets: str, every: int | None = None, episodes: int = 1, starts: int = 100, progress: bool = False
) -> list[str]:
    """The flags of a tiny run: ``steps`` per game, evaluated every ``every`` steps (else the agent's default) on
    ``episodes`` episodes, learning from step ``starts``, no progress bar unless ``progress``, then ``--set`` each of
    ``sets`` (in order, after the learning start)."""
    flags = ["--steps-per-game", str(steps)]
    if every is not None:
        flags += ["--eval-every", str(every)]
    flags += ["--eval-episodes", str(episodes)]
    if not progress:
        flags.append("--no-progress")
    for setting in (f"dqn.learning_starts={starts}", *sets):
        flags += ["--set", setting]
    return flags


def train(logdir: Path, agent: str, games: str, *flags: str) -> Path:
    """``ewc-rl train --agent agent --games games *flags --logdir logdir`` in this process; fails unless it exits 0."""
    assert main(["train", "--agent", agent, "--games", games, *flags, "--logdir", str(logdir)]) == 0
    return logdir


def fake_summary(games: list[str], matrix: list, steps_per_game: int = 10, **extra: Any) -> dict[str, Any]:
    """A fabricated finished run's summary.json: one segment per game of ``games``, the raw scores ``matrix`` (a row
    per segment's end, None where not yet evaluated), no evaluation history; ``extra`` adds keys (seed, ...)."""
    return {
        "complete": True,
        "games": games,
        "columns": games,
        "steps_per_game": steps_per_game,
        "eval_history": [],
        "score_matrix": matrix,
        **extra,
    }


def write_summary(run_dir: Path, content: dict[str, Any]) -> None:
    """Make the run directory ``run_dir`` (as compare lays it out) holding just ``content`` as its summary.json."""
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(content))


def events(logdir: Path) -> EventAccumulator:
    """The TensorBoard events under ``logdir``, every one kept (by default EventAccumulator keeps a sample)."""
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea
