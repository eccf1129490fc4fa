"""`ewc-rl report --target`: each part of the target decided from hand-computed retention, plasticity and intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ewc_rl.cli import main
from ewc_rl.errors import UsageError
from ewc_rl.report import mean_ci
from ewc_rl.scores import reference
from ewc_rl.target import Target
from tests.helpers import fake_summary, write_summary

GAMES = ["Pong", "Breakout", "Freeway"]
FRESH = {"Pong": 0.8, "Breakout": 0.5, "Freeway": 0.4}  # every seed's fresh single-game score, normalised


def raw(game: str, x: float) -> float:
    """The raw score whose normalised value is ``x``."""
    ref = reference(game)
    assert ref is not None
    return ref[0] + (ref[1] - ref[0]) * x


def write_agent(logdir: Path, agent: str, rows: list[list[float | None]]) -> None:
    """Three seeds of ``agent``, each with the normalised score matrix ``rows`` plus a seed-dependent final offset (so
    that average performance has an interval)."""
    for seed, offset in enumerate((-0.02, 0.0, 0.02)):
        matrix = [
            [None if x is None else raw(g, x + (offset if k == 2 else 0)) for g, x in zip(GAMES, row, strict=True)]
            for k, row in enumerate(rows)
        ]
        write_summary(logdir / agent / f"seed-{seed}", fake_summary(GAMES, matrix, seed=seed))


@pytest.fixture
def comparison(tmp_path: Path) -> Path:
    logdir = tmp_path / "cmp"
    for game, x in FRESH.items():
        for seed in range(3):
            write_summary(logdir / "fresh" / game / f"seed-{seed}", fake_summary([game], [[raw(game, x)]], seed=seed))
    # end of segment: Pong 0.8 and Breakout 0.5 (plasticity 1.0 each), Freeway as written in the last row
    write_agent(logdir, "dqn", [[0.8, None, None], [0.2, 0.5, None], [0.0, 0.1, 0.4]])  # keeps nothing
    write_agent(logdir, "good", [[0.8, None, None], [0.8, 0.5, None], [0.6, 0.4, 0.36]])  # keeps 0.75 and 0.8
    write_agent(logdir, "slow", [[0.8, None, None], [0.8, 0.5, None], [0.8, 0.5, 0.3]])  # Freeway 0.3/0.4 = 0.75
    write_agent(logdir, "leaky", [[0.8, None, None], [0.8, 0.5, None], [0.4, 0.5, 0.4]])  # Pong 0.5 kept
    return logdir


def test_each_part_of_the_target_is_decided_by_its_own_figure(comparison, capsys):
    assert main(["report", str(comparison), "--target", "dqn"]) == 0
    result = json.loads((comparison / "comparison.json").read_text())["target"]
    agents = result["agents"]
    # retention per earlier game: final over end-of-segment (the middle seed: offsets touch only the last row)
    assert agents["good"]["retention_per_game"] == {
        "Pong": pytest.approx(mean_ci([(0.6 + d) / 0.8 for d in (-0.02, 0, 0.02)])["mean"]),
        "Breakout": pytest.approx(0.4 / 0.5),
    }
    assert agents["good"]["lowest_retention"] == {"game": "Pong", "value": pytest.approx(0.75)}
    assert agents["slow"]["plasticity_per_game"]["Freeway"] == pytest.approx(0.3 / 0.4)
    assert agents["leaky"]["lowest_retention"]["value"] == pytest.approx(0.5)
    met = {name: (e["retention_met"], e["plasticity_met"], e["beats_baseline"], e["met"]) for name, e in agents.items()}
    assert met == {
        "dqn": (False, True, False, False),  # the baseline cannot beat itself
        "good": (True, True, True, True),  # 0.75 >= 0.7, 0.8 >= 0.7; Freeway 0.36/0.4 = 0.9 >= 0.8
        "slow": (True, False, True, False),  # Freeway 0.75 < 0.8
        "leaky": (False, True, True, False),  # Pong 0.5 < 0.7
    }
    md = (comparison / "comparison.md").read_text()
    assert "**Met by: good.**" in md
    assert "| slow | 0.987 (Breakout) ✓ | 0.750 (Freeway) ✗ |" in md  # (0.96 + 1 + 1) / 3
    assert "Met by: good" in capsys.readouterr().out


def test_thresholds_move_the_decision(comparison):
    assert (
        main(["report", str(comparison), "--target", "dqn", "--min-retention", "0.45", "--min-plasticity", "0.7"]) == 0
    )
    agents = json.loads((comparison / "comparison.json").read_text())["target"]["agents"]
    assert [name for name, e in agents.items() if e["met"]] == ["good", "leaky", "slow"]


def test_intervals_that_overlap_do_not_beat_the_baseline(comparison):
    # a baseline whose final scores spread so widely that its interval reaches good's (which beats dqn's)
    write_agent(comparison, "close", [[0.8, None, None], [0.8, 0.5, None], [0.6, 0.4, 0.36]])
    for seed, x in enumerate((0.0, 0.3, 0.6)):  # a mean (0.3) below good's, an interval wide enough to reach it
        summary = json.loads((comparison / "close" / f"seed-{seed}" / "summary.json").read_text())
        summary["score_matrix"][2] = [raw(g, x) for g in GAMES]
        (comparison / "close" / f"seed-{seed}" / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(comparison), "--target", "close"]) == 0
    agents = json.loads((comparison / "comparison.json").read_text())["target"]["agents"]
    perf = json.loads((comparison / "comparison.json").read_text())["agents"]
    good, close = perf["good"]["average_performance"], perf["close"]["average_performance"]
    assert close["mean"] < good["mean"] and good["mean"] - good["ci95"] < close["mean"] + close["ci95"]  # overlap:
    assert not agents["good"]["beats_baseline"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "nobody"], "--target: no agent 'nobody' in this comparison"),
        (["--min-retention", "0.5"], "--min-retention and --min-plasticity need --target BASELINE"),
        (["--target", "dqn", "--min-retention", "1.5"], "--min-retention must be in (0, 1], got 1.5"),
        (["--target", "dqn", "--min-plasticity", "0"], "--min-plasticity must be positive, got 0"),
    ],
)
def test_bad_targets_are_one_line_errors_that_write_nothing(comparison, capsys, flags, message):
    assert main(["report", str(comparison), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (comparison / "comparison.json").exists()


def test_without_fresh_references_the_target_cannot_be_decided(comparison, capsys):
    for game in FRESH:
        for seed in range(3):
            (comparison / "fresh" / game / f"seed-{seed}" / "summary.json").unlink()
    assert main(["report", str(comparison), "--target", "dqn"]) == 2
    assert "--target needs plasticity: fresh references" in capsys.readouterr().err


def test_a_game_without_a_finished_fresh_run_is_an_error_not_a_pass(comparison, capsys):
    for seed in range(3):  # "slow" fails only on Freeway's plasticity: without Freeway's fresh runs it would pass
        (comparison / "fresh" / "Freeway" / f"seed-{seed}" / "summary.json").unlink()
    assert main(["report", str(comparison), "--target", "dqn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished fresh reference with a normalised score for Freeway" in err


def test_a_part_that_no_game_decides_is_not_met():
    from ewc_rl.report import mean_ci
    from ewc_rl.target import check

    none, high = mean_ci([None]), mean_ci([0.9, 0.9])
    agent = {
        "retention_per_game": {"Pong": none, "Freeway": none},  # Pong never learned: no retention
        "plasticity": {"Pong": high, "Freeway": high},
        "average_performance": mean_ci([0.5, 0.6]),
    }
    comparison = {"games": ["Pong", "Freeway"], "columns": ["Pong", "Freeway"], "agents": {"a": agent, "b": agent}}
    entry = check(comparison, Target("b"))["agents"]["a"]
    assert entry["lowest_retention"] is None and not entry["retention_met"] and not entry["met"]


def test_target_thresholds_are_validated_in_the_api():
    with pytest.raises(UsageError, match="must be in"):
        Target("dqn", min_retention=0)
