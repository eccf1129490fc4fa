"""The benchmark runs end to end at tiny sizes (its ratios are measured by `ewc-rl bench`, not asserted here)."""

from __future__ import annotations

import json

import pytest

from ewc_rl import bench
from ewc_rl.cli import build_parser, main


def test_bench_runs_at_tiny_sizes_and_writes_every_key(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "tiny", "--no-progress", "--json", str(out),
                 "--set", "eval.max_episode_steps=100"]) == 0
    result = json.loads(out.read_text())
    assert set(bench.TARGETS) <= set(result) and bench.finite(result)
    assert result["setup"]["mode"] == "tiny" and result["raw"]["steps_per_s_sb3"] > 0
    table = capsys.readouterr().out
    assert all(f"`{key}`" in table for key in bench.TARGETS)


def test_bench_refuses_minatar_in_one_line(capsys):
    assert main(["bench", "--game", "MinAtar/Breakout", "--size", "tiny"]) == 2
    assert "give an ALE game" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "size"), [([], "full"), (["--quick"], "quick"), (["--size", "tiny"], "tiny")])
def test_bench_size_defaults_to_full_and_quick_selects_quick(argv, size):
    assert build_parser().parse_args(["bench", *argv]).size == size
