from __future__ import annotations

import json
from pathlib import Path

import pytest

from ewc_rl.tblog import check_writable, write_json
from tests.helpers import budget, events, train


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "b": None})
    assert json.loads(path.read_text()) == {"a": 2, "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left behind


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_json_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        os.umask(0o077)
        write_json(tmp_path / "b.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def minatar_run(tmp_path_factory):
    flags = budget(400, "eval.max_episode_steps=100", every=200, episodes=2)
    return train(tmp_path_factory.mktemp("tb") / "run", "minatar-dqn", "MinAtar/Breakout,MinAtar/Freeway", *flags)


def test_forgetting_is_a_scalar_per_game_and_their_mean(minatar_run):
    ea = events(minatar_run)
    summary = json.loads((minatar_run / "summary.json").read_text())
    history = summary["eval_history"]
    for game in ("MinAtar/Breakout", "MinAtar/Freeway"):
        logged = {e.step: e.value for e in ea.Scalars(f"eval/{game}/forgetting")}
        # independent: best normalised score among this game's evaluations up to each step, minus that step's
        scores = [(e["step"], e["normalized"]) for e in history if e["game"] == game]
        expected = {s: max(v for t, v in scores if t <= s) - v for s, v in scores}
        assert logged.keys() == expected.keys()
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, abs=1e-5)
    mean = {e.step: e.value for e in ea.Scalars("eval/mean_forgetting")}
    breakout = {e.step: e.value for e in ea.Scalars("eval/MinAtar/Breakout/forgetting")}
    assert mean and all(s > 400 for s in mean)  # only once a game other than the one in training exists
    assert all(mean[s] == pytest.approx(breakout[s]) for s in mean)


def test_hparams_metrics_are_average_performance_and_forgetting(minatar_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = events(minatar_run)
    content = ea.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"metrics/average_performance", "metrics/mean_forgetting"} <= metrics
    summary = json.loads((minatar_run / "summary.json").read_text())
    for key in ("average_performance", "mean_forgetting"):  # the last value is what the HPARAMS tab shows
        assert ea.Scalars(f"metrics/{key}")[-1].value == pytest.approx(summary["metrics"][key], abs=1e-5)


def test_score_heatmap_has_a_fixed_range_and_a_colour_bar():
    from ewc_rl.tblog import score_heatmap

    low = score_heatmap([[0.2, None]], ["1: A"], ["A", "B"], "t", limits=(0.0, 1.0))
    high = score_heatmap([[0.9, None], [0.5, 0.7]], ["1: A", "2: B"], ["A", "B"], "t", limits=(0.0, 1.0))
    for fig in (low, high):
        image = fig.axes[0].images[0]
        assert image.get_clim() == (0.0, 1.0)
        assert len(fig.axes) == 2  # the heatmap and its colour bar
    out = score_heatmap([[1.7, -0.3]], ["1: A"], ["A", "B"], "t", limits=(0.0, 1.0))
    assert out.axes[0].images[0].colorbar.extend == "both"


def test_check_writable_survives_a_parallel_run_removing_the_shared_parent(tmp_path: Path, monkeypatch) -> None:
    """Two runs of one comparison check sibling directories under a parent that neither has created yet.

    The first run's check creates the parent, then removes it again; if that happens between the second run's walk
    (which found the parent) and its mkdir, the mkdir finds no parent. Simulated here deterministically: the parent
    exists when the check starts and vanishes just before the first mkdir.
    """
    shared = tmp_path / "dqn"
    shared.mkdir()
    real_mkdir = Path.mkdir
    vanished: list[Path] = []

    def mkdir(self: Path, *args, **kwargs) -> None:
        if not vanished:
            vanished.append(shared)
            shared.rmdir()
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    check_writable(shared / "seed-1")
    monkeypatch.undo()
    assert vanished and not (shared / "seed-1").exists()


def test_check_writable_survives_a_parallel_run_creating_the_shared_parent(tmp_path: Path, monkeypatch) -> None:
    """The mirror case (seen in CI): the walk finds the parent missing, and a parallel run creates it just before
    this run's mkdir, which then fails with FileExistsError; walking again finds it and goes on."""
    shared = tmp_path / "fresh"
    real_mkdir = Path.mkdir
    appeared: list[Path] = []

    def mkdir(self: Path, *args, **kwargs) -> None:
        if not appeared:
            appeared.append(shared)
            real_mkdir(shared)
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    check_writable(shared / "seed-1")
    monkeypatch.undo()
    assert appeared and shared.is_dir() and not (shared / "seed-1").exists()
