from __future__ import annotations

import pytest

from ewc_rl.cli import main
from ewc_rl.switches import aggregate, switch_records
from tests.helpers import fake_summary, write_summary


def _summary(dormant: list[float], srank: list[int]) -> dict:
    """A finished two-game run whose diagnostics at each game's start are ``dormant`` and ``srank``."""
    records = []
    for k, game in enumerate(["Pong", "Breakout"]):
        base = {"segment": k, "game": game, "step": 1000 * k + 100}
        records.append({**base, "when": "switch", "dormant/tau0.1/fc": dormant[k], "srank": srank[k]})
        # later measurements of the segment must not be read as its start
        records.append({**base, "when": "eval", "dormant/tau0.1/fc": 9.0, "srank": 9, "policy_churn": 0.5})
        records.append({**base, "when": "switch", "dormant/tau0.1/fc": 7.0, "srank": 7})  # a second one: ignored
    return fake_summary(["Pong", "Breakout"], [[-20.0, None], [-20.0, 10.0]], steps_per_game=1000, plasticity=records)


def test_switch_records_take_each_segments_first_switch_measurement():
    records = switch_records(_summary([0.1, 0.5], [80, 60]))
    assert sorted(records) == [0, 1]
    assert records[0]["dormant/tau0.1/fc"] == 0.1 and records[1]["srank"] == 60


def test_means_and_intervals_over_seeds_at_every_game_start():
    runs = {"dqn": {0: _summary([0.1, 0.5], [80, 60]), 1: _summary([0.3, 0.9], [84, 40])}}
    table = aggregate(runs)
    dormant = table["agents"]["dqn"]["diagnostics"]["dormant/tau0.1/fc"]
    # two seeds: half-width t(0.975, 1) * sd / sqrt(2), sd = |a - b| / sqrt(2)
    assert dormant[0]["mean"] == pytest.approx(0.2) and dormant[1]["mean"] == pytest.approx(0.7)
    assert dormant[1]["ci95"] == pytest.approx(12.706205 * (0.4 / 2**0.5) / 2**0.5, rel=1e-6)
    assert table["agents"]["dqn"]["diagnostics"]["srank"][1]["mean"] == pytest.approx(50.0)
    assert "policy_churn" not in table["agents"]["dqn"]["diagnostics"]  # undefined at a game's start


def test_report_writes_the_table_and_figure_and_skips_them_without_diagnostics(tmp_path, capsys):
    for seed, (d, s) in enumerate([([0.1, 0.5], [80, 60]), ([0.3, 0.9], [84, 40])]):
        write_summary(tmp_path / "with" / "dqn" / f"seed-{seed}", _summary(d, s))
        bare = {k: v for k, v in _summary(d, s).items() if k != "plasticity"}
        write_summary(tmp_path / "without" / "dqn" / f"seed-{seed}", bare)
    assert main(["report", str(tmp_path / "with")]) == 0
    text = (tmp_path / "with" / "switches.md").read_text()
    assert "| `dormant/tau0.1/fc` | 0.200 ± 1.271 | 0.700 ± 2.541 |" in text
    assert (tmp_path / "with" / "switches.png").stat().st_size > 0
    assert main(["report", str(tmp_path / "without")]) == 0
    assert not (tmp_path / "without" / "switches.md").exists()
    assert "switches.md" in capsys.readouterr().out
