"""ewc-rl pool: metrics over several comparisons, checked against values computed by hand."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from ewc_rl.cli import main
from ewc_rl.report import t_quantile_975, write_report
from tests.helpers import fake_summary, write_summary

PONG, BREAKOUT = (-20.7, 14.6), (1.7, 30.5)  # (random, human): normalised x is low + x * (high - low)


def raw(game: tuple[float, float], x: float) -> float:
    return game[0] + x * (game[1] - game[0])


def comparison(path: Path, finals: dict[str, list[float]], agents_first_game: str = "Pong") -> None:
    """A two-game comparison whose runs end with Breakout at 0 and the first game at ``finals[agent][seed]``
    (normalised); the first game was 1.0 when its segment ended. Fresh references: 1.0 on both games."""
    first, second = (PONG, BREAKOUT) if agents_first_game == "Pong" else (BREAKOUT, PONG)
    names = ["Pong", "Breakout"] if agents_first_game == "Pong" else ["Breakout", "Pong"]
    for agent, values in finals.items():
        for seed, x in enumerate(values):
            matrix = [[raw(first, 1.0), None], [raw(first, x), raw(second, 0.0)]]
            write_summary(path / agent / f"seed-{seed}", fake_summary(names, matrix, seed=seed))
    for name, game in (("Pong", PONG), ("Breakout", BREAKOUT)):
        for seed in range(max(len(v) for v in finals.values())):
            write_summary(path / "fresh" / name / f"seed-{seed}", fake_summary([name], [[raw(game, 1.0)]], seed=seed))
    write_report(path)


def test_pool_is_the_mean_and_t_interval_over_every_comparison_and_seed(tmp_path, capsys):
    comparison(tmp_path / "d1", {"ewc": [0.8, 0.6], "dqn": [0.0, 0.2], "only-here": [0.5, 0.5]})
    comparison(tmp_path / "d2", {"ewc": [0.4, 1.0, 1.0], "dqn": [0.1, 0.1, 0.4]}, agents_first_game="Breakout")
    assert main(["pool", str(tmp_path / "d1"), str(tmp_path / "d2"), "--out", str(tmp_path / "out")]) == 0
    pooled = json.loads((tmp_path / "out" / "pooled.json").read_text())
    # average performance of one run: the mean of its final normalised scores, (x + 0) / 2; retention: x / 1.0.
    # A plain mean over the 5 pairs (0.38), not the mean of the two comparisons' means (0.375).
    kept = [0.8, 0.6, 0.4, 1.0, 1.0]
    ewc = pooled["agents"]["ewc"]
    assert ewc["pairs"] == 5
    assert ewc["average_performance"]["mean"] == pytest.approx(statistics.mean(x / 2 for x in kept))
    half = t_quantile_975(4) * statistics.stdev(x / 2 for x in kept) / 5**0.5
    assert ewc["average_performance"]["ci95"] == pytest.approx(half)
    assert ewc["retention"]["mean"] == pytest.approx(statistics.mean(kept))
    # plasticity: the first game 1.0 / fresh 1.0, the second 0 / fresh 1.0 -> 0.5 for every run
    assert ewc["mean_plasticity"]["mean"] == pytest.approx(0.5)
    assert ewc["per_source"][str(tmp_path / "d2")]["retention"]["mean"] == pytest.approx(0.8)
    assert pooled["left_out"] == {"only-here": [str(tmp_path / "d2")]}
    md = (tmp_path / "out" / "pooled.md").read_text()
    assert md.index("| 1 | ewc |") < md.index("| 2 | dqn |")  # ranked by pooled average performance
    assert "Not pooled (missing from a comparison): only-here" in md
    assert (tmp_path / "out" / "tradeoff.png").is_file()
    assert "pooled:" in capsys.readouterr().out


def test_pool_leaves_plasticity_out_when_a_comparison_has_no_references(tmp_path):
    comparison(tmp_path / "d1", {"ewc": [0.8, 0.6]})
    comparison(tmp_path / "d2", {"ewc": [0.4]})
    shutil.rmtree(tmp_path / "d2" / "fresh")
    write_report(tmp_path / "d2")
    assert main(["pool", str(tmp_path / "d1"), str(tmp_path / "d2"), "--out", str(tmp_path / "out")]) == 0
    ewc = json.loads((tmp_path / "out" / "pooled.json").read_text())["agents"]["ewc"]
    assert ewc["mean_plasticity"]["mean"] is None and ewc["retention"]["n"] == 3
    md = (tmp_path / "out" / "pooled.md").read_text()
    assert f"No pooled plasticity: `{tmp_path / 'd2'}` had no fresh references" in md
    assert "No trade-off figure" in md and not (tmp_path / "out" / "tradeoff.png").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nowhere", "no such directory"),
        ("missing", "no comparison.json in"),
        ("old", "has no per-seed values"),
        ("broken", "is not a comparison.json"),
        ("raw", "games without a normalised score (Unknown)"),
        ("twice", "is named twice"),
        ("out-is-input", "is a comparison's directory"),
        ("out-is-file", "is a file, not a directory"),
    ],
)
def test_pool_rejects_bad_input_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, setup, message):
    comparison(tmp_path / "d1", {"ewc": [0.8, 0.6]})
    other, out = tmp_path / "d2", tmp_path / "out"
    if setup == "missing":
        other.mkdir()
    elif setup in ("old", "broken", "out-is-input"):
        comparison(other, {"ewc": [0.1, 0.2]})
        data = json.loads((other / "comparison.json").read_text())
        for a in data["agents"].values():
            del a["per_seed"]
        text = json.dumps(data) if setup == "old" else "{" if setup == "broken" else None
        if text is not None:
            (other / "comparison.json").write_text(text)
        out = other if setup == "out-is-input" else out
    elif setup == "raw":
        write_summary(other / "dqn" / "seed-0", fake_summary(["Unknown"], [[3.0]], seed=0))
        write_report(other)
    elif setup == "twice":  # the same directory, spelled relative and absolute
        monkeypatch.chdir(tmp_path)
        other = Path("d1")
    elif setup == "out-is-file":
        comparison(other, {"ewc": [0.1, 0.2]})
        out.write_text("")
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["pool", str(tmp_path / "d1"), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written
