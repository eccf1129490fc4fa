"""Where a run's scalars go besides TensorBoard: SB3's csv/json files, Weights & Biases, MLflow.

All of them are outputs of the one SB3 ``Logger`` the run logs through, so every tag reaches every output at
the same step. Weights & Biases and MLflow are optional extras (``pip install "ewc_rl[track]"``) and run
offline by default: W&B in offline mode (``wandb sync`` uploads later; ``WANDB_MODE=online`` to stream), MLflow
into ``<run>/mlruns`` (``mlflow ui --backend-store-uri <run>/mlruns``) unless ``MLFLOW_TRACKING_URI`` is set.
SB3 has writers for csv and json but none for these two, hence the two small writers here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import KVWriter

from ewc_rl.errors import UsageError

LOG_FORMATS = ("tensorboard", "csv", "json")
TRACKERS = ("wandb", "mlflow")


def _scalars(key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], name: str) -> dict[str, float]:
    """The numeric values not excluded from ``name`` (images, histograms and texts stay in TensorBoard)."""
    out = {}
    for key, value in key_values.items():
        excluded = key_excluded.get(key) or ()
        if name in excluded or isinstance(value, (str, bool)):
            continue
        if isinstance(value, (int, float)) or (hasattr(value, "shape") and getattr(value, "shape", None) == ()):
            out[key] = float(value)
    return out


class WandbWriter(KVWriter):
    """Scalars to a Weights & Biases run (offline unless ``WANDB_MODE`` says otherwise)."""

    def __init__(self, logdir: Path, config: dict[str, Any], resume: bool) -> None:
        try:
            import wandb
        except ImportError:
            raise UsageError('--track wandb needs the wandb package: pip install "ewc_rl[track]"') from None
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ewc_rl"),
            name=logdir.name,
            dir=str(logdir),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            resume="allow" if resume else None,
            id=os.environ.get("WANDB_RUN_ID"),
        )

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        scalars = _scalars(key_values, key_excluded, "wandb")
        if scalars:
            self.run.log(scalars | {"global_step": step})

    def close(self) -> None:
        self.run.finish()


class MlflowWriter(KVWriter):
    """Scalars to an MLflow run: into ``<logdir>/mlruns`` unless ``MLFLOW_TRACKING_URI`` names a server."""

    def __init__(self, logdir: Path, config: dict[str, Any], resume: bool) -> None:
        try:
            import mlflow
        except ImportError:
            raise UsageError('--track mlflow needs the mlflow package: pip install "ewc_rl[track]"') from None
        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:
            mlflow.set_tracking_uri((logdir.resolve() / "mlruns").as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "ewc_rl"))
        self.run = mlflow.start_run(run_name=logdir.name)
        if not resume:
            mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        scalars = _scalars(key_values, key_excluded, "mlflow")
        if scalars:
            self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def tracker(name: str, logdir: Path, config: dict[str, Any], resume: bool) -> KVWriter:
    """The writer of ``--track name``."""
    if name == "wandb":
        return WandbWriter(logdir, config, resume)
    if name == "mlflow":
        return MlflowWriter(logdir, config, resume)
    raise UsageError(f"--track must be one of {', '.join(TRACKERS)}; got {name!r}")
