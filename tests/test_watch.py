"""ewc-rl evaluate: a run's learner replayed with intervals, and its videos."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ewc_rl.cli import main
from ewc_rl.watch import evaluate_run, render
from tests.helpers import budget, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    flags = budget(200, "eval.max_episode_steps=60", every=200)
    return train(tmp_path_factory.mktemp("watch") / "run", "minatar-dqn", "MinAtar/Breakout", *flags)


def test_evaluate_prints_means_with_student_t_intervals(run, capsys):
    assert main(["evaluate", str(run), "--episodes", "4", "--epsilon", "0.5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    returns = evaluate_run(run, None, episodes=4, epsilon=0.5, seed=3)["games"]["MinAtar/Breakout"]["returns"]
    mean, sd = float(np.mean(returns)), float(np.std(returns, ddof=1))
    row = next(line for line in out.splitlines() if line.startswith("MinAtar/Breakout")).split()
    assert float(row[1]) == pytest.approx(mean, abs=0.005)
    assert float(row[2]) == pytest.approx(3.182 * sd / math.sqrt(4), abs=0.005)  # t_{0.975, 3}
    assert "epsilon 0.5" in out and not (run / "videos").exists()


def test_video_has_one_frame_per_step_at_the_rendered_size(run, tmp_path, capsys):
    assert main(["evaluate", str(run), "--episodes", "1", "--video", "--video-dir", str(tmp_path)]) == 0
    result = evaluate_run(run, None, episodes=1, epsilon=None, seed=0, video_dir=tmp_path / "again")
    game = result["games"]["MinAtar/Breakout"]
    assert game["frames"] == game["video_length"] + 1  # the first observation, then one per step
    path = tmp_path / "MinAtar-Breakout.gif"
    assert path.read_bytes() == game["video"].read_bytes()
    with Image.open(path) as gif:
        assert gif.size == (160, 160)
        durations = []
        for i in range(gif.n_frames):  # Pillow merges identical consecutive frames, adding up their durations
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == 100 * game["frames"]


def test_minatar_frames_colour_each_channel():
    planes = np.zeros((10, 10, 10), dtype=np.uint8)
    planes[0, 0, 0] = 1
    planes[3, 9, 9] = 1
    frame = render(planes, "MinAtar/Breakout")
    assert frame.shape == (160, 160, 3)
    assert frame[:16, :16].reshape(-1, 3).tolist() == [[31, 119, 180]] * 256
    assert frame[-1, -1].tolist() == [214, 39, 40] and frame[80, 80].tolist() == [0, 0, 0]


def test_games_the_learner_cannot_play_are_refused(run, capsys):
    assert main(["evaluate", str(run), "--games", "Pong"]) == 2
    assert "plays MinAtar games; Pong is an ALE game" in capsys.readouterr().err
    assert main(["evaluate", str(run / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_top_level_help_lists_evaluate(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "evaluate" in capsys.readouterr().out
