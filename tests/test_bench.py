"""The benchmark runs end to end at tiny sizes (its ratios are measured by `ewc-rl bench`, not asserted here)."""

from __future__ import annotations

import json

import pytest

from ewc_rl import bench
from ewc_rl.cli import build_parser, main


def test_bench_runs_at_tiny_sizes_and_writes_every_key(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "--size", "tiny", "--no-progress", "--json", str(out), "--set", "eval.max_episode_steps=100"])
        == 0
    )
    result = json.loads(out.read_text())
    assert set(bench.TARGETS) <= set(result) and bench.finite(result)
    assert result["setup"]["mode"] == "tiny" and result["raw"]["steps_per_s_sb3"] > 0
    control = result["throughput_ratio_plain_vs_plain"]
    assert control == result["raw"]["steps_per_s_plain2"] / result["raw"]["steps_per_s_plain"] > 0
    table = capsys.readouterr().out
    assert all(f"`{key}`" in table for key in bench.TARGETS)
    assert f"A/A control: a second, identical ewc_rl learner, timed in the same rounds, ran at {control:.3f}" in table


def test_a_non_finite_control_is_not_a_finite_result():
    result = _fake_result(1.0)
    assert bench.finite(result)
    result["throughput_ratio_plain_vs_plain"] = float("nan")
    assert not bench.finite(result)


def test_repeats_without_the_control_still_combine():
    old = [{k: v for k, v in _fake_result(s).items() if k not in bench.CONTROLS} for s in (1.0, 2.0, 3.0)]
    combined = bench.combine(old)
    assert "throughput_ratio_plain_vs_plain" not in combined["spread"]
    assert combined["spread"]["eval_share"]["median"] == 2.0 * (list(bench.TARGETS).index("eval_share") + 1)


class _Clocked(bench._Learner):
    """A learner whose chunks take the seconds it is given, one after the other, recording when it ran."""

    def __init__(self, name: str, seconds: list[float], log: list[str]) -> None:
        self.name, self.seconds, self.log = name, iter(seconds), log

    def advance(self, steps: int) -> int:
        return steps

    def timed(self, steps: int) -> tuple[int, float]:
        self.log.append(self.name)
        return steps, next(self.seconds)


def test_the_control_runs_half_a_round_away_from_the_learner_it_copies():
    names = ["plain", "plain2", "ewc10", "sb3", "limit", *bench.METHODS]
    order = list(bench._control_apart(dict.fromkeys(names, bench._Learner())))
    assert sorted(order) == sorted(names) and order[0] == "plain"
    gap = order.index("plain2") - order.index("plain")
    assert min(gap, len(order) - gap) == len(order) // 2  # as far as a rotating order allows, either way round


def test_learners_take_turns_in_rotating_order_and_rates_are_total_steps_over_total_time():
    sizes = bench.BenchSizes.of("quick")
    log: list[str] = []
    names = ["a", "b", "c"]
    seconds = {
        "a": [1.0] * sizes.rounds,
        "b": [2.0] * sizes.rounds,
        "c": [(1.0, 3.0)[r % 2] for r in range(sizes.rounds)],
    }
    learners = {n: _Clocked(n, seconds[n], log) for n in names}
    steps = {"a": 1800, "b": 1800, "c": 900}
    out = bench._throughput(learners, steps, sizes, bar=type("Bar", (), {"set_description": lambda *a: None})())
    turns = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert len(turns) == sizes.rounds and all(sorted(t) == names for t in turns)
    assert turns == [names[r % 3 :] + names[: r % 3] for r in range(sizes.rounds)]  # the order rotates by one
    per_round = {n: steps[n] // sizes.rounds for n in names}
    assert out["a"]["steps_per_s"] == pytest.approx(per_round["a"] / 1.0)
    assert out["b"]["steps_per_s"] == pytest.approx(per_round["b"] / 2.0)
    assert out["c"]["steps_per_s"] == pytest.approx(per_round["c"] * sizes.rounds / sum(seconds["c"]))
    assert (out["c"]["round_min"], out["c"]["round_max"]) == pytest.approx((per_round["c"] / 3, per_round["c"]))


def test_bench_refuses_minatar_in_one_line(capsys):
    assert main(["bench", "--game", "MinAtar/Breakout", "--size", "tiny"]) == 2
    assert "give an ALE game" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "size"), [([], "full"), (["--quick"], "quick"), (["--size", "tiny"], "tiny")])
def test_bench_size_defaults_to_full_and_quick_selects_quick(argv, size):
    assert build_parser().parse_args(["bench", *argv]).size == size


def _fake_result(scale: float) -> dict:
    """A result of the shape ``bench.run`` returns, every figure ``scale`` times a base value."""
    keys = {key: scale * (i + 1) for i, key in enumerate(bench.TARGETS)}
    keys |= {key: scale for key in bench.CONTROLS}
    raw = {
        "steps_per_s_plain": 100 * scale,
        "steps_per_s_plain2": 100 * scale,
        "steps_per_s_ewc10": 98 * scale,
        "steps_per_s_sb3": 80 * scale,
        "steps_per_s_limit": 110 * scale,
        **{f"steps_per_s_{name}": 95 * scale for name in bench.METHODS},  # one learner per continual method
        "replay_bytes_per_transition": 7000 * scale,
        "steps_per_s_rounds": {n: [90 * scale, 120 * scale] for n in ("plain", "ewc10", "sb3", "limit")},
        "fisher_states_per_s": {
            k: 10 * scale for k in ("batched_backward", "sampled_hooks", "sampled_vmap", "exact_hooks")
        },
        "eval_seconds_per_game": 2 * scale,
        "train_seconds_per_interval": 50 * scale,
        "eval_share": 0.1 * scale,
    }
    setup = {
        "sizes": {"rounds": 3},
        "eval_episodes": 4,
        "eval_every": 250_000,
        "n_envs": 4,
        "env_threads": 2,
        "torch_threads": 2,
        "cpus": 2,
        "processor": "x",
        "machine": "x86_64",
        "torch": "2",
        "python": "3",
        "mode": "tiny",
        "game": "Breakout",
    }
    return {**keys, "raw": raw, "setup": setup}


def test_repeats_combine_into_median_min_and_max():
    combined = bench.combine([_fake_result(s) for s in (1.0, 3.0, 1.5)])
    for i, key in enumerate(bench.TARGETS):
        assert combined[key] == 1.5 * (i + 1)
        assert combined["spread"][key] == {"min": 1.0 * (i + 1), "median": 1.5 * (i + 1), "max": 3.0 * (i + 1)}
    assert combined["raw"]["steps_per_s_plain"] == 150 and combined["raw"]["fisher_states_per_s"]["exact_hooks"] == 15
    assert combined["raw"]["steps_per_s_rounds"]["sb3"] == [90, 360]  # lowest and highest round of all repeats
    assert [r["eval_share"] for r in combined["repeats"]] == [6.0, 18.0, 9.0] and combined["setup"]["repeats"] == 3
    assert bench.combine([_fake_result(2.0)]) == _fake_result(2.0)
    table = bench.to_markdown(combined)
    assert "median (min–max) of 3 repeats" in table
    assert "| `throughput_ratio_plain_vs_sb3` | 3.000 (2.000–6.000) | >= 1.3 | yes (3/3) |" in table
    assert "| `eval_share` | 9.000 (6.000–18.000) | <= 0.15 | **no** (0/3) |" in table
    assert combined["spread"]["throughput_ratio_plain_vs_plain"] == {"min": 1.0, "median": 1.5, "max": 3.0}
    assert "ran at 1.500 (1.000–3.000) times the first one's speed" in table


def test_bench_repeat_runs_the_whole_measurement_n_times(tmp_path, capsys, monkeypatch):
    scales = iter([2.0, 1.0, 4.0])
    calls = []
    monkeypatch.setattr(bench, "run", lambda *a, **k: calls.append(a) or _fake_result(next(scales)))
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "tiny", "--repeat", "3", "--no-progress", "--json", str(out)]) == 0
    assert len(calls) == 3
    result = json.loads(out.read_text())
    assert result["spread"]["throughput_ratio_plain_vs_sb3"] == {"min": 2.0, "median": 4.0, "max": 8.0}
    assert "of 3 repeats" in capsys.readouterr().out


@pytest.mark.parametrize("finished", [1, 2])
def test_an_interrupted_repeat_keeps_the_repeats_it_finished(tmp_path, capsys, monkeypatch, finished):
    scales = iter([2.0, 1.0][:finished])

    def run(*a, **k):
        scale = next(scales, None)
        if scale is None:
            raise KeyboardInterrupt  # stopped during the next repeat
        return _fake_result(scale)

    monkeypatch.setattr(bench, "run", run)
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "tiny", "--repeat", "3", "--no-progress", "--json", str(out)]) == 130
    result = json.loads(out.read_text())
    assert result["setup"]["repeats"] == finished and result["setup"]["repeats_asked"] == 3  # marked as partial
    assert result["throughput_ratio_plain_vs_sb3"] == {1: 4.0, 2: 3.0}[finished]
    assert f"figures of {finished} of 3 repeats" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "repeat"), [([], 1), (["--repeat", "3"], 3)])
def test_bench_repeat_parsing(argv, repeat):
    assert build_parser().parse_args(["bench", *argv]).repeat == repeat


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bench_repeat_must_be_a_positive_integer(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--repeat", bad])
    assert exc.value.code == 2 and "--repeat" in capsys.readouterr().err
