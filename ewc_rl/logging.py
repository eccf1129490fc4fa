"""TensorBoard tags and the run's summary.json.

Everything goes through stable-baselines3's ``Logger`` (TensorBoard format), so SB3's own keys and ours
land in one event stream whose x axis is the global agent step of the whole sequence. Tags:

    train/td_loss  train/penalty  train/epsilon  train/episode_return  train/fps  train/game
    eval/<Game>/return   eval/mean_return          fisher/<parameter> (histogram, at each consolidation)
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.logger import HParam, Logger, configure

PACKAGES = ("ewc_rl", "torch", "stable-baselines3", "gymnasium", "ale-py", "numpy", "tensorboard")


def create_logger(logdir: Path) -> Logger:
    """An SB3 logger writing TensorBoard events straight into ``logdir`` (no ``run_N`` sub-folder)."""
    return configure(str(logdir), ["tensorboard"])


def log_hparams(logger: Logger, hparams: dict[str, Any]) -> None:
    """The run's settings in TensorBoard's HParams tab, tied to the final mean evaluation return."""
    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    logger.record("hparams", HParam(clean, {"eval/mean_return": 0.0}), exclude=("stdout", "log", "json", "csv"))
    logger.dump(0)


def log_fisher(logger: Logger, fisher: dict[str, th.Tensor], step: int) -> None:
    """One histogram per parameter tensor of the Fisher just estimated."""
    for name, values in fisher.items():
        logger.record(f"fisher/{name}", values.detach().float().cpu())
    logger.dump(step)


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
