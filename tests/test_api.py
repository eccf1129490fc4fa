"""The Python API, and the README's example of it run as written."""

from __future__ import annotations

import re
from pathlib import Path

import ewc_rl

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)  # its runs/ lands in tmp_path
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    run = namespace["run"]
    assert run.logdir == Path("runs/api-demo") and (tmp_path / "runs/api-demo/models/final.zip").is_file()
    assert len(run.score_matrix) == 2 and run.games == ["MinAtar/Breakout", "MinAtar/SpaceInvaders"]
    assert run.summary["settings"]["dqn"]["learning_starts"] == 200 and run.summary["complete"]
    assert type(namespace["model"]).__name__ == "DQN"
    action = namespace["action"]
    assert action.shape == (1,) and 0 <= int(action[0]) < 6
    out = capsys.readouterr().out
    assert "average" not in out and str(run.metrics["average_performance"]) in out


def test_api_errors_are_usage_errors(tmp_path):
    import pytest

    from ewc_rl.errors import UsageError

    (tmp_path / "x").write_text("")
    with pytest.raises(UsageError, match="already holds files"):
        ewc_rl.train(["MinAtar/Breakout"], logdir=tmp_path)
    with pytest.raises(UsageError, match="unknown game"):
        ewc_rl.train(["Pongg"], logdir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_compare_returns_the_report_and_each_run(tmp_path):
    import json

    cmp = ewc_rl.compare(
        ["minatar-dqn"],
        ["MinAtar/Breakout"],
        seeds=[0],
        steps_per_game=200,
        logdir=tmp_path,
        settings={"dqn.learning_starts": 100, "eval.episodes": 1, "eval.max_episode_steps": 60},
        grid={"dqn.gamma": [0.9, 0.99]},
        workers=2,
    )
    assert cmp.report == json.loads((tmp_path / "comparison.json").read_text())
    assert sorted(cmp.runs) == ["minatar-dqn+dqn.gamma=0.9", "minatar-dqn+dqn.gamma=0.99"]
    run = cmp.runs["minatar-dqn+dqn.gamma=0.9"][0]
    assert run.summary["settings"]["dqn"]["gamma"] == 0.9 and run.summary["settings"]["eval"]["episodes"] == 1
    assert set(cmp.ranking()) == set(cmp.runs) and type(run.model).__name__ == "DQN"


def test_compare_can_run_the_fresh_references(tmp_path, monkeypatch):
    import pytest

    import ewc_rl.grid

    specs = []

    def fake_run_grid(spec, logdir, **kwargs):
        specs.append(spec)
        raise KeyboardInterrupt  # the grid is what is tested, not the training

    monkeypatch.setattr(ewc_rl.grid, "run_grid", fake_run_grid)
    for fresh, agent in ((True, "minatar-dqn"), ("minatar-ewc", "minatar-ewc")):
        with pytest.raises(KeyboardInterrupt):
            ewc_rl.compare(["minatar-dqn"], ["MinAtar/Breakout"], logdir=tmp_path, fresh_references=fresh)
        cells = [c.run_dir(tmp_path) for c in specs[-1].cells()]
        assert specs[-1].fresh_references == agent
        # the fresh run first: a report of the runs finished so far then has plasticity
        assert cells == [tmp_path / "fresh" / "MinAtar-Breakout" / "seed-0", tmp_path / "minatar-dqn" / "seed-0"]
