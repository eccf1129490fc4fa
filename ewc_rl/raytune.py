"""The ``ray`` backend of ``ewc-rl compare``: one Ray Tune trial per grid cell.

Ray Tune places trials on the cluster's resources (``--cpus-per-run``, ``--gpus-per-run``), retries a
failed trial (``--retries``) and keeps its own experiment state under ``<logdir>/ray/``. Each trial runs
``ewc-rl train`` for its cell, writing into ``<logdir>/<run>/seed-<s>/`` exactly as the local backend
does, so ``ewc-rl report`` and TensorBoard read both alike; a retried trial resumes from the run's own
checkpoint. On a multi-node cluster ``<logdir>`` must be a path every node can write (docs/scale-out.md).

The run is a subprocess of the trial, not a call inside it: Ray runs function trainables in a worker
thread, where the handlers that checkpoint on SIGTERM cannot be installed, and a process of its own keeps
each run's torch thread setting. If Ray kills the trial's worker, the run receives SIGTERM (Linux
``PR_SET_PDEATHSIG``), writes a checkpoint and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ewc_rl.errors import UsageError
from ewc_rl.grid import Cell, GridSpec, pending, prepare_run_dir, train_argv


def _import_tune() -> Any:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UsageError('--backend ray needs Ray Tune: pip install "ewc_rl[ray]"') from None
    return ray, tune


def run_grid_ray(
    spec: GridSpec,
    logdir: Path,
    *,
    address: str | None,
    cpus_per_run: int,
    gpus_per_run: float,
    retries: int,
    device: str = "auto",
    progress: bool = True,
) -> int:
    """Run every unfinished cell as a Ray Tune trial; returns the number of runs that failed for good."""
    ray, tune = _import_tune()
    todo = pending(spec, logdir)
    if not todo:
        return 0
    root = logdir.resolve()
    trials = [
        {
            "agent": c.agent,
            "seed": c.seed,
            "variant": [list(kv) for kv in c.variant],
            "game": c.game,
            "logdir": str(root),
            "threads": cpus_per_run,
            "argv": train_argv(spec, c, root, device, cpus_per_run),
        }
        for c in todo
    ]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trial, {"cpu": cpus_per_run, "gpu": gpus_per_run}),
            param_space={"cell": tune.grid_search(trials)},
            run_config=tune.RunConfig(
                name="compare",
                storage_path=str(root / "ray"),
                verbose=1 if progress else 0,
                failure_config=tune.FailureConfig(max_failures=retries),
            ),
        )
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    failed = 0
    for result in results:
        cell = _cell(result.config["cell"])
        if result.error is not None:
            failed += 1
            print(
                f"FAILED {cell.label} seed {cell.seed} after {retries} retries; see {cell.log(root)}", file=sys.stderr
            )
    return failed


def _cell(config: dict[str, Any]) -> Cell:
    return Cell(config["agent"], int(config["seed"]), tuple((k, v) for k, v in config["variant"]), config.get("game"))


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the trial's thread goes away."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: ``ewc-rl train`` for its cell, resumed from its checkpoint on a retry."""
    from ray import tune

    cell = _cell(config["cell"])
    logdir = Path(config["cell"]["logdir"])
    argv = prepare_run_dir(cell, logdir, list(config["cell"]["argv"]))
    threads = str(config["cell"]["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with open(cell.log(logdir), "a") as log:
        log.write(f"=== ray trial attempt: ewc-rl {' '.join(argv)}\n")
        log.flush()
        code = subprocess.Popen(
            [sys.executable, "-m", "ewc_rl", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        ).wait()
    if code != 0:
        raise RuntimeError(f"ewc-rl train exited with code {code}; see {cell.log(logdir)}")
    tune.report({"complete": 1})
