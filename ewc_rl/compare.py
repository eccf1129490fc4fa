"""Grids of runs (agents x seeds), each exactly an ``ewc-rl train`` in ``<logdir>/<agent>/seed-<s>/``.

Runs go to parallel worker processes; the machine's cores are divided between them (torch threads per
worker = cores // workers), since two processes that each use every core slow each other several-fold.
Finished runs (summary.json with ``complete``) are skipped when the command is repeated; unfinished
ones continue from their latest checkpoint (``train --resume``), or start again if they have none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ewc_rl.checkpoints import latest_path
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
    pool: str | None = None  # with games = ["randomN"]: every run draws the same games (schedule_seed)
    schedule_seed: int | None = None
    checkpoint_every: int = 100_000
    checkpoint_replay: bool = False

    def identity(self) -> dict[str, object]:
        """What must match for two invocations to be the same comparison (checkpointing may differ)."""
        return {k: v for k, v in asdict(self).items() if k not in ("agents", "seeds", "checkpoint_every",
                                                                    "checkpoint_replay")}


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
    if spec.pool is not None:
        argv += ["--pool", spec.pool, "--schedule-seed", str(spec.schedule_seed)]
    argv += ["--checkpoint-every", str(spec.checkpoint_every)]
    if spec.checkpoint_replay:
        argv.append("--checkpoint-replay")
    return argv


def check_spec(logdir: Path, spec: GridSpec) -> None:
    """Refuse to mix two different comparisons in one directory."""
    path = logdir / "compare.json"
    if path.exists():
        saved = json.loads(path.read_text())
        diff = [k for k, v in spec.identity().items() if saved.get(k) != v]
        if diff:
            raise UsageError(f"{logdir} holds a comparison with other settings ({', '.join(diff)} differ); "
                             "use another --logdir")
    elif logdir.exists() and any(p.name != "logs" for p in logdir.iterdir()):
        raise UsageError(f"--logdir {logdir} already holds files that are not a comparison; use another directory")


def run_grid(spec: GridSpec, logdir: Path, *, workers: int, device: str = "auto", progress: bool = True) -> int:
    """Run every unfinished (agent, seed); returns the number of failed runs."""
    check_spec(logdir, spec)
    logdir.mkdir(parents=True, exist_ok=True)
    saved = {**asdict(spec), "agents": sorted(set(spec.agents) | set(_saved_agents(logdir)))}
    write_json(logdir / "compare.json", saved)
    (logdir / "logs").mkdir(exist_ok=True)
    cells = [(a, s) for a in spec.agents for s in spec.seeds]
    todo = [(a, s) for a, s in cells if not is_finished(run_dir(logdir, a, s))]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} runs already finished: skipped", file=sys.stderr)
    workers = max(1, min(workers, len(todo) or 1))
    pool = _Pool(spec, logdir, workers, device)
    with tqdm(total=len(todo), unit="run", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            return pool.run(todo, bar)
        except KeyboardInterrupt:
            pool.stop()
            raise


class _Pool:
    """Worker processes, each an ``ewc-rl train`` with ``cores // workers`` torch threads."""

    def __init__(self, spec: GridSpec, logdir: Path, workers: int, device: str) -> None:
        self.spec, self.logdir, self.workers, self.device = spec, logdir, workers, device
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.running: dict[subprocess.Popen, tuple[str, int, float]] = {}

    def _log(self, agent: str, seed: int) -> Path:
        return self.logdir / "logs" / f"{Path(agent).stem}-seed-{seed}.log"

    def _start(self, agent: str, seed: int) -> None:
        path = run_dir(self.logdir, agent, seed)
        argv = train_argv(self.spec, agent, seed, self.logdir, self.device, self.threads)
        if path.exists() and latest_path(path) is not None:
            tqdm.write(f"resuming unfinished run {path} from its checkpoint", file=sys.stderr)
            argv.append("--resume")
        elif path.exists():  # an earlier attempt died before its first checkpoint: nothing to keep
            tqdm.write(f"restarting unfinished run {path} (it had no checkpoint)", file=sys.stderr)
            shutil.rmtree(path)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        with open(self._log(agent, seed), "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ewc_rl", *argv], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
        self.running[proc] = (agent, seed, time.perf_counter())

    def run(self, todo: list[tuple[str, int]], bar: tqdm) -> int:
        queue, failed = list(todo), 0
        while queue or self.running:
            while queue and len(self.running) < self.workers:
                self._start(*queue.pop(0))
                bar.set_postfix_str(", ".join(f"{a}/seed-{s}" for a, s, _ in self.running.values()))
            time.sleep(0.5)
            for proc in [p for p in self.running if p.poll() is not None]:
                agent, seed, t0 = self.running.pop(proc)
                if proc.returncode == 0:
                    tqdm.write(f"finished {agent} seed {seed} in {(time.perf_counter() - t0) / 60:.1f} min",
                               file=sys.stderr)
                else:
                    failed += 1
                    tqdm.write(f"FAILED {agent} seed {seed} (exit {proc.returncode}); see {self._log(agent, seed)}",
                               file=sys.stderr)
                bar.update(1)
        return failed

    def stop(self) -> None:
        """Ctrl-C: the workers got it too (one process group), or get SIGTERM now; each writes a checkpoint."""
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.running:
            proc.wait()


def _saved_agents(logdir: Path) -> list[str]:
    try:
        return list(json.loads((logdir / "compare.json").read_text()).get("agents", []))
    except (OSError, ValueError):
        return []
