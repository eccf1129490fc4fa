"""Grids of runs (agents x settings x seeds), each exactly an ``ewc-rl train`` in ``<logdir>/<run>/seed-<s>/``.

``<run>`` is the agent's name, followed by ``+key=value`` for each ``--grid`` setting, so that
``ewc-rl report`` and TensorBoard see every (agent, setting) as one line of the comparison. With
``--fresh-references`` the grid also holds one single-game run per game and seed, in
``<logdir>/fresh/<game>/seed-<s>/`` (one level deeper than the runs, so ``report.load_runs`` never takes it for an
agent): the baselines of the plasticity metric and forward transfer, shared by every agent.

Two backends run the cells: ``local`` worker processes, the machine's cores divided between them
(torch threads per worker = cores // workers, since two processes that each use every core slow each
other several-fold), or ``ray`` (:mod:`ewc_rl.raytune`), one Ray Tune trial per cell. Finished runs
(summary.json with ``complete``) are skipped when the command is repeated; unfinished ones continue from
their latest checkpoint (``train --resume``), or start again if they have none. The local backend's progress
bar counts agent steps over the whole grid, read from each run's ``steps.json`` (:mod:`ewc_rl.progress`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from ewc_rl.checkpoints import latest_path
from ewc_rl.config import eval_overrides
from ewc_rl.errors import UsageError
from ewc_rl.progress import read_progress
from ewc_rl.schedule import Budget, budget_text, random_count, steps_of
from ewc_rl.tblog import is_complete, write_json

FRESH = "fresh"  # <logdir>/fresh: the single-game reference runs; no agent may have this name


class GridInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a comparison; every unfinished run wrote a checkpoint."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class GridSpec:
    """Everything that defines a comparison; stored as compare.json so a repeat can be checked."""

    agents: list[str]
    seeds: list[int]
    games: list[str]
    steps_per_game: Budget  # one number, or game -> steps (ewc_rl/schedule.py)
    cycles: int = 1
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[str]] = field(default_factory=dict)  # section.key -> values, crossed
    eval_every: int | None = None
    eval_episodes: int | None = None
    eval_all_games: bool = False
    pool: str | None = None  # with games = ["randomN"]: every run draws the same games (schedule_seed)
    schedule_seed: int | None = None
    checkpoint_every: int = 100_000
    checkpoint_replay: bool = False
    fresh_references: str | None = None  # the agent whose settings the single-game reference runs use
    fresh_games: list[str] = field(default_factory=list)  # their games: each game of the sequence once

    def identity(self) -> dict[str, object]:
        """What must match for two invocations to be the same comparison (agents, seeds, references may grow)."""
        ignored = ("agents", "seeds", "checkpoint_every", "checkpoint_replay", "fresh_references", "fresh_games")
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    def variants(self) -> list[list[tuple[str, str]]]:
        """Each combination of ``grid`` values, as (key, value) pairs (one empty variant without a grid)."""
        keys = list(self.grid)
        return [list(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def cells(self) -> list[Cell]:
        """Every run, each once; two that would share a run directory (a repeat, or two agent files with one
        name) are refused: the second would silently "resume" the first."""
        cells = list(
            dict.fromkeys(Cell(a, s, tuple(v)) for a in self.agents for v in self.variants() for s in self.seeds)
        )
        if any(cell.label == FRESH for cell in cells):
            raise UsageError(f"the run name '{FRESH}' is kept for --fresh-references' runs; rename that agent file")
        # Fresh references first, so that a report of the runs finished so far has plasticity (short runs first can
        # leave a worker idle at the end: a few minutes on a grid of many runs).
        if self.fresh_references is not None:
            cells = [Cell(self.fresh_references, s, game=g) for g in self.fresh_games for s in self.seeds] + cells
        seen: dict[tuple[str, int], Cell] = {}
        for cell in cells:
            other = seen.setdefault((cell.label, cell.seed), cell)
            if other is not cell:
                raise UsageError(
                    f"--agents {other.agent} and {cell.agent} would share the run directory "
                    f"{cell.label}/seed-{cell.seed}; rename one of the agent files"
                )
        return cells

    def steps_per_run(self) -> int:
        """Agent steps of each run: every game (or each of the N drawn for ``randomN``) once per cycle."""
        if self.pool is not None:  # randomN: the games are drawn later, so one budget for all (the CLI checks)
            assert isinstance(self.steps_per_game, int)
            return self.steps_per_game * self.cycles * (random_count(self.games[0]) or 0)
        return self.cycles * sum(steps_of(self.steps_per_game, g) for g in self.games)

    def steps_of(self, cell: Cell) -> int:
        """Agent steps of one run: a reference run trains its game once."""
        return steps_of(self.steps_per_game, cell.game) if cell.game is not None else self.steps_per_run()


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``agent`` on the whole sequence, or, with ``game``, a fresh network on that game alone."""

    agent: str
    seed: int
    variant: tuple[tuple[str, str], ...] = ()
    game: str | None = None

    @property
    def label(self) -> str:
        """The run's name in reports: the agent, then ``+key=value`` per grid setting; ``fresh/<game>`` for a
        reference run."""
        if self.game is not None:
            return f"{FRESH}/{self.game.replace('/', '-')}"
        return Path(self.agent).stem + "".join(f"+{k}={v}" for k, v in self.variant)

    def run_dir(self, logdir: Path) -> Path:
        return logdir / self.label / f"seed-{self.seed}"

    def log(self, logdir: Path) -> Path:
        return logdir / "logs" / f"{self.label.replace('/', '-')}-seed-{self.seed}.log"


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["penalty.lambda=1e2,1e3"]`` -> ``{"penalty.lambda": ["1e2", "1e3"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values.strip():
            raise UsageError(f"--grid expects section.key=value1,value2,..., got '{item}'")
        if key.strip() in grid:
            raise UsageError(f"--grid names '{key.strip()}' twice")
        listed = [v.strip() for v in values.split(",") if v.strip()]
        grid[key.strip()] = list(dict.fromkeys(listed))
        if len(grid[key.strip()]) < len(listed):
            print(f"ewc-rl: note: --grid {key.strip()} repeats a value; each is run once", file=sys.stderr)
    return grid


def steps_done(spec: GridSpec, logdir: Path, cells: list[Cell], ended: set[Cell]) -> int:
    """Agent steps done over ``cells``: a finished run, or one whose process ``ended`` (failed runs too: their
    steps will not come), counts fully; any other as far as its progress file (:mod:`ewc_rl.progress`) says."""
    done = 0
    for cell in cells:
        path, per_run = cell.run_dir(logdir), spec.steps_of(cell)
        if cell in ended or is_complete(path):
            done += per_run
        elif (progress := read_progress(path)) is not None:
            done += min(progress[0], per_run)
    return done


def train_argv(spec: GridSpec, cell: Cell, logdir: Path, device: str, threads: int) -> list[str]:
    """The ``ewc-rl train`` arguments of one grid cell (``--resume`` is added by whoever starts it); a reference
    run trains its game once, with the comparison's --set overrides and evaluation settings."""
    argv = [
        "train",
        "--agent",
        cell.agent,
        "--games",
        ",".join(spec.games) if cell.game is None else cell.game,
        "--steps-per-game",
        budget_text(spec.steps_per_game, spec.games) if cell.game is None else str(spec.steps_of(cell)),
        "--cycles",
        str(spec.cycles if cell.game is None else 1),
        "--seed",
        str(cell.seed),
        "--logdir",
        str(cell.run_dir(logdir)),
        "--device",
        device,
        "--threads",
        str(threads),
        "--no-progress",
    ]
    for override in [*spec.overrides, *(f"{k}={v}" for k, v in cell.variant)]:
        argv += ["--set", override]
    if spec.eval_every is not None:
        argv += ["--eval-every", str(spec.eval_every)]
    if spec.eval_episodes is not None:
        argv += ["--eval-episodes", str(spec.eval_episodes)]
    if spec.eval_all_games:
        argv.append("--eval-all-games")
    if spec.pool is not None and cell.game is None:
        argv += ["--pool", spec.pool, "--schedule-seed", str(spec.schedule_seed)]
    argv += ["--checkpoint-every", str(spec.checkpoint_every)]
    if spec.checkpoint_replay:
        argv.append("--checkpoint-replay")
    return argv


def prepare_run_dir(cell: Cell, logdir: Path, argv: list[str]) -> list[str]:
    """``argv`` plus ``--resume`` when the cell has a checkpoint; a run that died before one is removed."""
    path = cell.run_dir(logdir)
    if path.exists() and latest_path(path) is not None:
        tqdm.write(f"resuming unfinished run {path} from its checkpoint", file=sys.stderr)
        return [*argv, "--resume"]
    if path.exists():  # an earlier attempt died before its first checkpoint: nothing to keep
        tqdm.write(f"restarting unfinished run {path} (it had no checkpoint)", file=sys.stderr)
        shutil.rmtree(path)
    return argv


def check_spec(logdir: Path, spec: GridSpec) -> None:
    """Refuse to mix two different comparisons in one directory."""
    path = logdir / "compare.json"
    if path.exists():
        saved = json.loads(path.read_text())
        diff = [k for k, v in spec.identity().items() if saved.get(k) != v]
        if diff:
            raise UsageError(
                f"{logdir} holds a comparison with other settings ({', '.join(diff)} differ); use another --logdir"
            )
        ran = saved.get("fresh_references")
        if spec.fresh_references is not None and ran is not None and ran != spec.fresh_references:
            raise UsageError(
                f"{logdir}'s fresh references ran with agent {ran}, not {spec.fresh_references}; "
                f"use --fresh-references {ran}, or another --logdir"
            )
    elif logdir.exists() and any(p.name != "logs" for p in logdir.iterdir()):
        raise UsageError(f"--logdir {logdir} already holds files that are not a comparison; use another directory")


def cell_overrides(spec: GridSpec, cell: Cell) -> list[str]:
    """The agent-file overrides a cell's ``train`` applies: --set, its grid values, the --eval-* shortcuts."""
    overrides = [*spec.overrides, *(f"{k}={v}" for k, v in cell.variant)]
    return [*overrides, *eval_overrides(spec.eval_every, spec.eval_episodes)]


def combined(spec: GridSpec, logdir: Path) -> GridSpec:
    """The comparison ``logdir`` holds once this invocation joins it: agents, seeds and references may grow."""
    return replace(
        spec,
        agents=sorted({*spec.agents, *_saved(logdir, "agents")}),
        seeds=sorted({*spec.seeds, *_saved(logdir, "seeds")}),
        fresh_references=spec.fresh_references or _saved_value(logdir, "fresh_references"),
        fresh_games=spec.fresh_games or _saved(logdir, "fresh_games"),
    )


def check_finished(spec: GridSpec, logdir: Path) -> None:
    """Refuse finished runs whose recorded settings differ from what their agent file and overrides give now.

    Skipping them would report one agent file's results under another's settings (an agent file edited after its
    runs finished). Every run the report will read is checked: this invocation's, and the agents, seeds and
    references that earlier invocations added to the directory. A setting the run did not record (added to the
    schema since) is compared with its default, as ``train --resume`` does.
    """
    from ewc_rl.config import from_dict, load_config

    try:
        cells = combined(spec, logdir).cells()
    except UsageError:  # earlier invocations named one agent two ways: check what this one names
        cells = spec.cells()
    known: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[dict[str, Any], dict[str, Any]] | None] = {}
    stale: list[str] = []
    for cell in cells:
        path = cell.run_dir(logdir)
        if not is_complete(path):
            continue
        recorded = json.loads((path / "summary.json").read_text()).get("settings")
        key = (cell.agent, cell.variant)
        if key not in known:
            try:
                cfg = load_config(cell.agent, cell_overrides(spec, cell))
            except UsageError:  # an agent file removed since: nothing to compare its runs with
                known[key] = None
            else:
                tables = cfg.to_dict()
                defaults = from_dict({**{s: {} for s in tables}, "agent": {"methods": tables["agent"]["methods"]}})
                # as JSON gives them back, like the run's summary.json
                known[key] = json.loads(json.dumps(cfg.flat())), json.loads(json.dumps(defaults.flat()))
        expected = known[key]
        if expected is None or not isinstance(recorded, dict):
            continue
        now, default = expected
        saved = {f"{s}.{k}": v for s, table in recorded.items() if isinstance(table, dict) for k, v in table.items()}
        diff = [k for k in now if saved.get(k, default.get(k)) != now[k]]
        if diff:
            shown = "; ".join(f"{k}: ran {saved.get(k, default.get(k))!r}, now {now[k]!r}" for k in diff[:3])
            stale.append(f"{path} ({shown}{', ...' if len(diff) > 3 else ''})")
    if stale:
        more = f" (and {len(stale) - 1} more run(s))" if len(stale) > 1 else ""
        raise UsageError(
            f"{stale[0]}{more} finished with other settings than the agent file, --set, --grid and --eval-* give "
            "now; remove it, or use another --logdir"
        )


def pending(spec: GridSpec, logdir: Path) -> list[Cell]:
    """Write compare.json and return the cells still to run (finished ones are skipped)."""
    check_spec(logdir, spec)
    check_finished(spec, logdir)
    whole = combined(spec, logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    write_json(logdir / "compare.json", asdict(whole))
    (logdir / "logs").mkdir(exist_ok=True)
    cells = spec.cells()
    todo = [c for c in cells if not is_complete(c.run_dir(logdir))]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} runs already finished: skipped", file=sys.stderr)
    return todo


def run_grid(
    spec: GridSpec,
    logdir: Path,
    *,
    workers: int,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
) -> int:
    """Run every unfinished cell in local worker processes; returns the number of failed runs.

    ``threads``: torch threads per run; by default the cores divided between the runs at once. Name it when the
    machine has other work: a lone run with every core's threads slows to a crawl when it shares them."""
    todo = pending(spec, logdir)
    pool = _Pool(spec, logdir, max(1, min(workers, len(todo) or 1)), device, threads)
    cells = spec.cells()
    # SIGINT/SIGTERM only set a flag the loop checks: a KeyboardInterrupt raised inside Popen.poll() can leave
    # the Popen's internal lock held, and the wait() that follows would then hang forever.
    previous = {sig: signal.signal(sig, pool.interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # One bar of agent steps over all runs (finished ones count fully): its rate and ETA are the grid's.
        with tqdm(
            total=sum(spec.steps_of(c) for c in cells),
            initial=steps_done(spec, logdir, cells, set()),
            unit="step",
            unit_scale=True,
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            failed = pool.run(todo, bar, cells)
        if pool.signum is not None:
            pool.stop()
            raise GridInterrupted(pool.signum)
        return failed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Pool:
    """Worker processes, each an ``ewc-rl train`` with ``threads`` (default ``cores // workers``) torch threads."""

    def __init__(self, spec: GridSpec, logdir: Path, workers: int, device: str, threads: int | None = None) -> None:
        self.spec, self.logdir, self.workers, self.device = spec, logdir, workers, device
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.running: dict[subprocess.Popen, tuple[Cell, float]] = {}
        self.signum: int | None = None

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: stop starting runs; ``run_grid`` then stops the running ones."""
        self.signum = signum

    def _start(self, cell: Cell) -> None:
        argv = prepare_run_dir(cell, self.logdir, train_argv(self.spec, cell, self.logdir, self.device, self.threads))
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        with open(cell.log(self.logdir), "a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ewc_rl", *argv], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.running[proc] = (cell, time.perf_counter())

    def run(self, todo: list[Cell], bar: tqdm, cells: list[Cell]) -> int:
        """Run ``todo``; ``bar`` counts agent steps over ``cells`` (the whole grid), read every few seconds."""
        queue, failed, ended, next_read = list(todo), 0, set(), 0.0
        while (queue or self.running) and self.signum is None:
            while queue and len(self.running) < self.workers and self.signum is None:
                self._start(queue.pop(0))
                bar.set_postfix_str(self._labels())
            time.sleep(0.5)
            exited = [p for p in self.running if p.poll() is not None]
            if exited or time.monotonic() >= next_read:
                ended |= {self.running[p][0] for p in exited}
                bar.update(max(0, steps_done(self.spec, self.logdir, cells, ended) - bar.n))
                next_read = time.monotonic() + 2.0
            for proc in exited:
                cell, t0 = self.running.pop(proc)
                if proc.returncode == 0:
                    tqdm.write(
                        f"finished {cell.label} seed {cell.seed} in {(time.perf_counter() - t0) / 60:.1f} min",
                        file=sys.stderr,
                    )
                else:
                    failed += 1
                    tqdm.write(
                        f"FAILED {cell.label} seed {cell.seed} (exit {proc.returncode}); see {cell.log(self.logdir)}",
                        file=sys.stderr,
                    )
            if exited:
                bar.set_postfix_str(self._labels())
        return failed

    def _labels(self) -> str:
        return ", ".join(f"{c.label}/seed-{c.seed}" for c, _ in self.running.values())

    def stop(self) -> None:
        """Ctrl-C: the workers got it too (one process group), or get SIGTERM now; each writes a checkpoint."""
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.running:
            proc.wait()


def _saved(logdir: Path, key: str) -> list:
    return list(_saved_value(logdir, key) or [])


def _saved_value(logdir: Path, key: str) -> Any:
    try:
        return json.loads((logdir / "compare.json").read_text()).get(key)
    except (OSError, ValueError):
        return None
