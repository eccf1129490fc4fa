"""The retention-plasticity figure: drawn from fabricated runs with fresh references, absent without them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ewc_rl.cli import main
from ewc_rl.report import mean_ci
from ewc_rl.tradeoff import MAX_NAMED, labels, plot, points
from tests.helpers import fake_summary, write_summary

GAMES = ["Pong", "Breakout"]
LOW_SPAN = {"Pong": (-20.7, 35.3), "Breakout": (1.7, 28.8)}  # random score, human - random (ewc_rl/scores.py)
# Per agent and seed: normalised Pong when its segment ended, Pong at the end, Breakout when its segment ended.
RUNS = {
    "dqn": {0: (0.6, 0.3, 0.5), 1: (0.8, 0.2, 0.7)},
    "ewc": {0: (0.5, 0.45, 0.2), 1: (0.6, 0.9, 0.3)},  # seed 1 ends above its end of segment: retention 1, not 1.5
    "l2": {0: (0.05, 0.04, 0.5), 1: (0.02, 0.0, 0.7)},  # Pong never learned: no retention, so no point
}
FRESH = {"Pong": {0: 0.6, 1: 0.8}, "Breakout": {0: 0.5, 1: 0.7}}  # the fresh networks' normalised scores


def raw(game: str, n: float) -> float:
    low, span = LOW_SPAN[game]
    return low + span * n


def fabricate(logdir: Path, refdir: Path) -> None:
    for agent, seeds in RUNS.items():
        for seed, (pong, pong_end, breakout) in seeds.items():
            matrix = [[raw("Pong", pong), None], [raw("Pong", pong_end), raw("Breakout", breakout)]]
            write_summary(logdir / agent / f"seed-{seed}", fake_summary(GAMES, matrix, seed=seed))
    for game, seeds in FRESH.items():
        for seed, n in seeds.items():
            write_summary(refdir / game / f"seed-{seed}", fake_summary([game], [[raw(game, n)]], seed=seed))


def test_the_figure_places_each_agent_at_its_plasticity_and_retention_and_is_absent_without_references(
    tmp_path, capsys
):
    logdir, refdir = tmp_path / "cmp", tmp_path / "refs"
    fabricate(logdir, refdir)
    assert main(["report", str(logdir), "--reference", str(refdir)]) == 0
    assert str(logdir / "tradeoff.png") in capsys.readouterr().out
    assert (logdir / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = json.loads((logdir / "comparison.json").read_text())
    placed, missing = points(comparison)
    # By hand, per seed: retention = min(Pong at the end / Pong when its segment ended, 1); plasticity = the mean over
    # both games of (score when the game's segment ended) / (the same seed's fresh score).
    expected = {}
    for agent in ("dqn", "ewc"):
        seeds = RUNS[agent].items()
        plasticity = [(p / FRESH["Pong"][s] + b / FRESH["Breakout"][s]) / 2 for s, (p, _, b) in seeds]
        retention = [min(end / p, 1.0) for _, (p, end, _) in seeds]
        expected[agent] = (mean_ci(plasticity), mean_ci(retention))
    assert [name for name, _, _ in placed] == ["dqn", "ewc"] and missing == ["l2"]
    for name, x, y in placed:
        for got, want in zip((x, y), expected[name], strict=True):
            assert got["n"] == want["n"] == 2
            assert got["mean"] == pytest.approx(want["mean"]) and got["ci95"] == pytest.approx(want["ci95"])
    assert expected["ewc"][1]["mean"] == pytest.approx((0.9 + 1.0) / 2)  # the clipped seed
    md = (logdir / "comparison.md").read_text()
    assert "Trade-off figure `tradeoff.png`: retention against mean plasticity" in md
    assert "No point for l2: no retention or no plasticity value." in md
    # Without references: no plasticity, so no figure (the one drawn above is removed), and comparison.md says why.
    assert main(["report", str(logdir)]) == 0
    assert str(logdir / "tradeoff.png") not in capsys.readouterr().out and not (logdir / "tradeoff.png").exists()
    md = (logdir / "comparison.md").read_text()
    assert "No trade-off figure (`tradeoff.png`, retention against plasticity): plasticity needs fresh" in md
    # The references found in <logdir>/fresh, as compare --fresh-references leaves them: the figure again.
    refdir.rename(logdir / "fresh")
    assert main(["report", str(logdir)]) == 0
    assert (logdir / "tradeoff.png").exists()
    assert json.loads((logdir / "comparison.json").read_text()) == comparison


@pytest.mark.parametrize(
    ("names", "short", "prefix"),
    [
        (["minatar-dqn", "minatar-ewc-multihead"], ["dqn", "ewc-multihead"], "minatar-"),
        (["minatar-ewc", "minatar-ewc-multihead"], ["ewc", "ewc-multihead"], "minatar-"),  # to the hyphen, not "ewc"
        (["ewc+penalty.lambda=1", "ewc+penalty.lambda=10"], ["ewc+penalty.lambda=1", "ewc+penalty.lambda=10"], ""),
        (["minatar-dqn", "minatar-"], ["minatar-dqn", "minatar-"], ""),  # a name would be left empty
        (["minatar-dqn"], ["minatar-dqn"], ""),
        (["dqn", "ewc"], ["dqn", "ewc"], ""),
    ],
)
def test_labels_drop_only_a_whole_shared_prefix(names: list[str], short: list[str], prefix: str) -> None:
    assert labels(names) == (short, prefix)


def test_a_crowded_figure_numbers_its_points(tmp_path) -> None:
    stat = {"mean": 0.5, "ci95": 0.1, "n": 3}
    agents = {f"minatar-agent{i}": {"mean_plasticity": stat, "retention": stat} for i in range(MAX_NAMED + 1)}
    plot({"agents": agents}, tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
