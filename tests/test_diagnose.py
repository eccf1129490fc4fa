"""ewc-rl inspect-fisher on a tiny MinAtar run: the report, and its one-line errors."""

from __future__ import annotations

import pytest

from ewc_rl.cli import main
from tests.helpers import budget, train

TINY = budget(400, "eval.max_episode_steps=100")


@pytest.fixture(scope="module")
def run_with_replay(tmp_path_factory):
    run = tmp_path_factory.mktemp("diag") / "run"
    return train(
        run, "minatar-dqn", "MinAtar/Breakout", *TINY, "--checkpoint-replay", "--set", "agent.keep_replay=true"
    )


def test_report_lists_gaps_entropy_and_every_layer(run_with_replay, capsys):
    assert main(["inspect-fisher", str(run_with_replay), "--tau", "1", "0.01", "--states", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "MinAtar/Breakout, 64 replay states, sampled Fisher" in out[0]
    assert out[2].startswith("gap between the best and second-best action's Q: 10% ")
    rows = {line.split()[0]: line.split() for line in out if line.strip() and line.split()[0] in ("1", "0.01")}
    assert float(rows["0.01"][1]) < float(rows["1"][1]) <= 1.792  # sharper policy, lower entropy; log 6 at most
    assert any("head.0.bias" in line for line in out)


def test_a_checkpoint_without_replay_is_one_line(tmp_path, capsys):
    run = train(tmp_path / "run", "minatar-dqn", "MinAtar/Breakout", *TINY)
    capsys.readouterr()
    assert main(["inspect-fisher", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds no replay memory" in err and err.count("\n") == 1
