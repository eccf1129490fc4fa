"""Grids of runs (agents x seeds), each exactly an ``ewc-rl train`` in ``<logdir>/<agent>/seed-<s>/``.

Runs go to parallel worker processes; the machine's cores are divided between them (torch threads per
worker = cores // workers), since two processes that each use every core slow each other several-fold.
Finished runs (summary.json with ``complete``) are skipped when the command is repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ewc_rl.errors import UsageError
from ewc_rl.logging import write_json


@dataclass
class GridSpec:
    """Everything that defines a comparison; stored as compare.json so a repeat can be checked."""

    agents: list[str]
    seeds: list[int]
    games: list[str]
    steps_per_game: int
    cycles: int = 1
    overrides: list[str] = field(default_factory=list)
    eval_every: int | None = None
    eval_episodes: int | None = None
    eval_all_games: bool = False


def run_dir(logdir: Path, agent: str, seed: int) -> Path:
    return logdir / Path(agent).stem / f"seed-{seed}"


def is_finished(path: Path) -> bool:
    try:
        return bool(json.loads((path / "summary.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def train_argv(spec: GridSpec, agent: str, seed: int, logdir: Path, device: str, threads: int) -> list[str]:
    """The ``ewc-rl train`` arguments of one grid cell."""
    argv = ["train", "--agent", agent, "--games", ",".join(spec.games), "--steps-per-game",
            str(spec.steps_per_game), "--cycles", str(spec.cycles), "--seed", str(seed), "--logdir",
            str(run_dir(logdir, agent, seed)), "--device", device, "--threads", str(threads), "--no-progress"]
    for override in spec.overrides:
        argv += ["--set", override]
    if spec.eval_every is not None:
        argv += ["--eval-every", str(spec.eval_every)]
    if spec.eval_episodes is not None:
        argv += ["--eval-episodes", str(spec.eval_episodes)]
    if spec.eval_all_games:
        argv.append("--eval-all-games")
    return argv


def check_spec(logdir: Path, spec: GridSpec) -> None:
    """Refuse to mix two different comparisons in one directory."""
    path = logdir / "compare.json"
    if path.exists():
        saved = json.loads(path.read_text())
        same_keys = ("games", "steps_per_game", "cycles", "overrides", "eval_every", "eval_episodes",
                     "eval_all_games")
        diff = [k for k in same_keys if saved.get(k) != asdict(spec)[k]]
        if diff:
            raise UsageError(f"{logdir} holds a comparison with other settings ({', '.join(diff)} differ); "
                             "use another --logdir")
    elif logdir.exists() and any(p.name != "logs" for p in logdir.iterdir()):
        raise UsageError(f"--logdir {logdir} already holds files that are not a comparison; use another directory")


def run_grid(spec: GridSpec, logdir: Path, *, workers: int, device: str = "auto", progress: bool = True) -> int:
    """Run every unfinished (agent, seed); returns the number of failed runs."""
    check_spec(logdir, spec)
    logdir.mkdir(parents=True, exist_ok=True)
    saved = {**asdict(spec), "agents": sorted(set(asdict(spec)["agents"]) | set(_saved_agents(logdir)))}
    write_json(logdir / "compare.json", saved)
    logs = logdir / "logs"
    logs.mkdir(exist_ok=True)
    cells = [(a, s) for a in spec.agents for s in spec.seeds]
    todo = [(a, s) for a, s in cells if not is_finished(run_dir(logdir, a, s))]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} runs already finished: skipped", file=sys.stderr)
    workers = max(1, min(workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    running: dict[subprocess.Popen, tuple[str, int, float]] = {}
    failed = 0
    bar = tqdm(total=len(todo), unit="run", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    queue = list(todo)
    while queue or running:
        while queue and len(running) < workers:
            agent, seed = queue.pop(0)
            path = run_dir(logdir, agent, seed)
            if path.exists():  # left by an interrupted earlier attempt: start it again
                print(f"restarting unfinished run {path}", file=sys.stderr)
                shutil.rmtree(path)
            log = open(logs / f"{Path(agent).stem}-seed-{seed}.log", "w")  # noqa: SIM115 (closed below)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            proc = subprocess.Popen([sys.executable, "-m", "ewc_rl", *train_argv(spec, agent, seed, logdir, device,
                                                                                  threads)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            running[proc] = (agent, seed, time.perf_counter())
            bar.set_postfix_str(", ".join(f"{a}/seed-{s}" for a, s, _ in running.values()))
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            agent, seed, t0 = running.pop(proc)
            minutes = (time.perf_counter() - t0) / 60
            if proc.returncode == 0:
                tqdm.write(f"finished {agent} seed {seed} in {minutes:.1f} min", file=sys.stderr)
            else:
                failed += 1
                tqdm.write(f"FAILED {agent} seed {seed} (exit {proc.returncode}); see "
                           f"{logs / f'{Path(agent).stem}-seed-{seed}.log'}", file=sys.stderr)
            bar.update(1)
    bar.close()
    return failed


def _saved_agents(logdir: Path) -> list[str]:
    try:
        return list(json.loads((logdir / "compare.json").read_text()).get("agents", []))
    except (OSError, ValueError):
        return []
