"""SB3's csv/json logs beside TensorBoard, and --track wandb|mlflow (offline; stand-ins where not installed)."""

from __future__ import annotations

import csv
import importlib.machinery
import json
import sys
import types

import pytest

from ewc_rl.cli import main
from tests.helpers import budget

TINY = ["--games", "MinAtar/Breakout", "--agent", "minatar-dqn", *budget(200, "eval.max_episode_steps=60", every=100)]


def _fake_mlflow() -> tuple[types.ModuleType, list]:
    """A stand-in for the mlflow module that records what it is given."""
    calls: list = []
    mod = types.ModuleType("mlflow")
    mod.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    mod.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    mod.set_experiment = lambda name: calls.append(("experiment", name))
    mod.start_run = lambda run_name: calls.append(("start", run_name))
    mod.log_params = lambda params: calls.append(("params", params))
    mod.log_metrics = lambda metrics, step: calls.append(("metrics", step, metrics))
    mod.end_run = lambda: calls.append(("end",))
    return mod, calls


def test_csv_and_json_logs_and_mlflow_get_the_same_scalars(tmp_path, monkeypatch):
    mod, calls = _fake_mlflow()
    monkeypatch.setitem(sys.modules, "mlflow", mod)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logdir = tmp_path / "run"
    assert main(["train", *TINY, "--log-formats", "csv,json", "--track", "mlflow", "--logdir", str(logdir)]) == 0
    summary = json.loads((logdir / "summary.json").read_text())
    evals = {e["step"]: e["mean"] for e in summary["eval_history"]}
    tag = "eval/MinAtar/Breakout/return"
    with open(logdir / "progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(tag)]
    assert sorted(float(r[tag]) for r in rows) == sorted(evals.values())
    lines = [json.loads(line) for line in (logdir / "progress.json").read_text().splitlines()]
    assert sorted(line[tag] for line in lines if tag in line) == sorted(evals.values())
    assert not any(k.startswith("fisher/") or k == "eval/score_matrix" for line in lines for k in line)
    logged = {step: m[tag] for kind, *rest in calls if kind == "metrics" for step, m in [rest] if tag in m}
    assert logged == pytest.approx(evals)
    assert calls[0] == ("uri", (logdir.resolve() / "mlruns").as_uri()) and calls[-1] == ("end",)
    params = next(c[1] for c in calls if c[0] == "params")
    assert params["run.agent"] == "minatar-dqn"


def test_tracking_without_the_package_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert main(["train", *TINY, "--track", "wandb", "--logdir", str(tmp_path / "run")]) == 2
    assert 'pip install "ewc_rl[track]"' in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["train", *TINY, "--log-formats", "xml", "--logdir", str(tmp_path / "run")]) == 2


def test_real_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["train", *TINY, "--track", "wandb", "--logdir", str(tmp_path / "run")]) == 0
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_real_mlflow_into_the_run_directory(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", *TINY, "--track", "mlflow", "--logdir", str(tmp_path / "run")]) == 0
    mlflow.set_tracking_uri((tmp_path / "run" / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["ewc_rl"])
    assert len(runs) == 1 and "metrics.eval/MinAtar/Breakout/return" in runs.columns
