"""The command line, end to end on real ALE games with tiny budgets, and its one-line errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ewc_rl import provenance
from ewc_rl.cli import main
from tests.helpers import budget, events, train

TINY = budget(
    300,
    "dqn.buffer_size=1000",
    "dqn.target_update_interval=100",
    "eval.max_episode_steps=150",
    "penalty.fisher_states=64",
    every=200,
)


def _scalars(logdir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """Every scalar series (as (step, value) pairs) by tag, and the histogram tags."""
    ea = events(logdir)
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}, ea.Tags()["histograms"]


def test_module_entry_point_prints_help():
    out = subprocess.run([sys.executable, "-m", "ewc_rl", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--steps-per-game" in out.stdout


def test_ewc_run_on_two_atari_games(tmp_path, capsys):
    logdir = tmp_path / "run"
    # one environment, so that 300 steps per game finish a Breakout episode (train/episode_return)
    train(logdir, "ewc", "Pong,Breakout", *TINY, "--set", "agent.n_envs=1")
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {logdir}" in printed

    summary = json.loads((logdir / "summary.json").read_text())
    assert summary["complete"] and summary["games"] == ["Pong", "Breakout"]
    matrix = summary["score_matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert matrix[0][1] is None and None not in matrix[1]
    assert summary["settings"]["penalty"]["kind"] == "ewc"
    assert summary["versions"]["torch"] and summary["wall_time_s"] > 0
    assert summary["provenance"] == {**provenance.code(), "cpu": provenance.cpu()}

    scalars, histograms = _scalars(logdir)
    for tag in (
        "train/td_loss",
        "train/penalty",
        "train/epsilon",
        "train/episode_return",
        "train/fps",
        "train/game",
        "eval/Pong/return",
        "eval/Breakout/return",
    ):
        assert scalars.get(tag), tag
    assert any(h.startswith("fisher/") for h in histograms)
    assert any(step > 300 for step, _ in scalars["eval/Pong/return"])  # Pong still evaluated during Breakout
    penalty = scalars["train/penalty"]
    assert all(v == 0 for s, v in penalty if s <= 300)
    assert any(v > 0 for s, v in penalty if s > 300)
    assert {v for s, v in scalars["train/game"] if s > 300} == {1.0}


def test_dqn_run_has_no_penalty(tmp_path):
    logdir = tmp_path / "run"
    train(logdir, "dqn", "Breakout,Pong", *TINY)
    scalars, histograms = _scalars(logdir)
    assert scalars["train/penalty"] and all(v == 0 for _, v in scalars["train/penalty"])
    assert not histograms


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--games", "Pong,Pongg"], "unknown game 'Pongg'; closest: Pong"),
        (["--games", "Pong", "--agent", "ewk"], "unknown agent 'ewk'"),
        (["--games", "Pong", "--set", "penalty.lamda=1"], "unknown key 'penalty.lamda'"),
        (["--games", "Pong", "--set", "penalty.lambda=-5"], "'penalty.lambda' must be >= 0"),
        (
            ["--games", "Pong", "--steps-per-game", "200", "--set", "penalty.lambda=nan"],
            "'penalty.lambda' must be a finite number, got nan",
        ),
        (
            ["--games", "Pong", "--steps-per-game", "200", "--set", "penalty.lambda=inf"],
            "'penalty.lambda' must be a finite number, got inf",
        ),
        (["--games", "Pong,Breakout", "--steps-per-game", "1,2,3"], "has 3 values for 2 games"),
        (["--games", "Pong,Breakout,Pong", "--steps-per-game", "1,2,3"], "gives Pong two budgets (1 and 3)"),
        (["--games", "random2", "--pool", "kirkpatrick2017", "--steps-per-game", "1,2"], "takes one --steps-per-game"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    logdir = tmp_path / "run"
    assert main(["train", "--logdir", str(logdir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not logdir.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--steps-per-game", "-5"],
        ["--steps-per-game", "100,0"],
        ["--cycles", "0"],
        ["--checkpoint-every", "-1"],
        ["--device", "tpu"],
        ["--seed", str(2**32)],  # numpy's generators, which stable-baselines3 seeds with it, stop at 2**32 - 1
    ],
)
def test_bad_numbers_and_choices_are_one_line_exit_2(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--games", "Pong", "--logdir", str(tmp_path / "r"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ewc-rl train: error: argument ") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_left_alone(tmp_path, capsys):
    logdir = tmp_path / "run"
    logdir.mkdir()
    (logdir / "summary.json").write_text("{}")
    assert main(["train", "--games", "Pong", "--logdir", str(logdir)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert [p.name for p in logdir.iterdir()] == ["summary.json"]
    assert (logdir / "summary.json").read_text() == "{}"


def _read_only(monkeypatch, mount: Path) -> None:
    """Simulate a read-only file system at ``mount``: creating a directory or a file under it fails with EROFS
    (the tests run as root, whom permission bits do not stop, and cannot mount one)."""
    real_mkdir, real_open = os.mkdir, os.open

    def under(path) -> bool:
        return Path(os.fsdecode(path)).resolve().is_relative_to(mount.resolve())

    def mkdir(path, *args, **kwargs):
        if under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize(
    "case",
    [
        "new logdir on a read-only fs",
        "empty logdir on a read-only fs",
        "logdir under a regular file",
        "agent file not UTF-8",
    ],
)
def test_unusable_logdir_or_agent_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, case):
    logdir, agent = tmp_path / "mnt" / "run", "minatar-dqn"
    (tmp_path / "mnt").mkdir()
    if case == "new logdir on a read-only fs":
        _read_only(monkeypatch, tmp_path / "mnt")
    elif case == "empty logdir on a read-only fs":
        logdir.mkdir()
        _read_only(monkeypatch, tmp_path / "mnt")
    elif case == "logdir under a regular file":
        (tmp_path / "mnt" / "file").write_text("x")
        logdir = tmp_path / "mnt" / "file" / "run"
    else:
        agent = str(tmp_path / "latin.toml")
        Path(agent).write_bytes("# r\xe9glages\n".encode("latin-1"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(
        [
            "train",
            "--agent",
            agent,
            "--games",
            "MinAtar/Breakout",
            "--steps-per-game",
            "200",
            "--no-progress",
            "--logdir",
            str(logdir),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ewc-rl: error: ") and err.count("\n") == 1, err
    assert {
        "new logdir on a read-only fs": "Read-only file system",
        "empty logdir on a read-only fs": "Read-only file system",
        "logdir under a regular file": "is a file, not a directory",
        "agent file not UTF-8": "not a UTF-8 text file",
    }[case] in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_minatar_ewc_run_through_train(tmp_path):
    logdir = tmp_path / "run"
    flags = budget(400, "penalty.fisher_states=100", every=200, episodes=2)
    train(logdir, "minatar-ewc", "MinAtar/Breakout,MinAtar/SpaceInvaders", *flags)
    summary = json.loads((logdir / "summary.json").read_text())
    assert summary["complete"] and summary["columns"] == ["MinAtar/Breakout", "MinAtar/SpaceInvaders"]
    assert len(summary["score_matrix"]) == 2 and None not in summary["score_matrix"][1]
    assert summary["settings"]["agent"]["network"] == "minatar"
    scalars, histograms = _scalars(logdir)
    assert any(v > 0 for s, v in scalars["train/penalty"] if s > 400)
    assert any(h.startswith("fisher/features_extractor.net") for h in histograms)


def test_atari_network_on_minatar_is_refused_before_writing(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--agent",
                "ewc",
                "--games",
                "MinAtar/Breakout",
                "--set",
                "agent.network=nature",
                "--logdir",
                str(logdir),
            ]
        )
        == 2
    )
    assert "agent.network = 'nature'" in capsys.readouterr().err and not logdir.exists()


def test_random_scores(capsys):
    assert main(["random-scores", "--games", "MinAtar/Breakout", "--episodes", "5", "--max-episode-steps", "500"]) == 0
    line = capsys.readouterr().out.splitlines()[2].split()
    assert line[0] == "MinAtar/Breakout" and line[1] == "5" and float(line[2]) >= 0


def test_dry_run_prints_the_drawn_games_and_memory_identically(tmp_path, capsys):
    from ewc_rl.schedule import POOLS, draw

    args = [
        "train",
        "--agent",
        "kirkpatrick2017",
        "--games",
        "random10",
        "--seed",
        "0",
        "--dry-run",
        "--logdir",
        str(tmp_path / "run"),
    ]
    outputs = []
    for _ in range(2):
        assert main(args) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    drawn = draw("kirkpatrick2017", 10, 1, 0)[0]
    games_line = next(line for line in outputs[0].splitlines() if line.startswith("games:"))
    assert all(g in games_line for g in drawn)
    assert not any(g in outputs[0] for g in set(POOLS["kirkpatrick2017"]) - set(drawn))
    assert "replay memory: 1,000,000 transitions x 7,103 bytes = 7.10 GB per memory" in outputs[0]
    assert "peak 71.03 GB" in outputs[0] and "the penalty never applies" in outputs[0]
    assert not (tmp_path / "run").exists()


def test_paper_agent_runs_two_games_at_tiny_sizes(tmp_path):
    logdir = tmp_path / "run"
    flags = budget(
        300,
        "dqn.buffer_size=1000",
        "agent.epsilon_decay_steps=200",
        "eval.max_episode_steps=100",
        "penalty.fisher_states=16",
        "penalty.fisher_batch_size=8",
        "penalty.consolidate_after_steps=200",
    )
    train(logdir, "kirkpatrick2017", "Pong,Breakout", *flags)
    summary = json.loads((logdir / "summary.json").read_text())
    assert summary["complete"] and summary["settings"]["agent"]["per_game_layers"]
    assert None not in summary["score_matrix"][0]  # eval.all_games: Breakout tested before it is trained
    scalars, histograms = _scalars(logdir)
    assert any(v > 0 for s, v in scalars["train/penalty"] if s > 300)
    assert histograms and not any("game_" in h for h in histograms)  # no Fisher for per-game b and g


def test_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["random-scores", "--help"])
    out = capsys.readouterr().out
    assert "95% interval" in out and "%%" not in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even inside names
    from ewc_rl.config import available_agents

    atari, minatar = out.split("(Atari:")[1].split(")")[0].split(";MinAtar:")
    assert set(atari.split(",")) | set(minatar.split(",")) == set(available_agents())
    assert all(n.startswith("minatar-") for n in minatar.split(",")) and "dqn" in atari.split(",")
