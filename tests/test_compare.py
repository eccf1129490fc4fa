"""compare and report on real ALE with tiny budgets: layout, skip-on-repeat, reproducible report."""

from __future__ import annotations

import json
import shutil

import pytest

from ewc_rl.cli import main
from ewc_rl.errors import UsageError
from ewc_rl.grid import GridSpec, steps_done
from ewc_rl.progress import ProgressFile
from ewc_rl.report import aggregate, mean_ci, t_quantile_975, to_markdown
from ewc_rl.tblog import write_json
from tests.helpers import budget, events, fake_summary, write_summary

STEPS = 300
ARGS = [
    "--games",
    "Pong,Breakout",
    *budget(
        STEPS,
        "dqn.buffer_size=1000",
        "dqn.target_update_interval=100",
        "eval.max_episode_steps=120",
        "penalty.fisher_states=50",
        every=150,
    ),
]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("cmp")
    code = main(
        ["compare", "--agents", "dqn", "ewc", "--seeds", "0", "1", "--workers", "2", "--logdir", str(logdir), *ARGS]
    )
    assert code == 0
    return logdir


def test_grid_layout_and_report_files(comparison):
    runs = sorted(p.relative_to(comparison).as_posix() for p in comparison.glob("*/seed-*"))
    assert runs == ["dqn/seed-0", "dqn/seed-1", "ewc/seed-0", "ewc/seed-1"]
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        assert (comparison / name).stat().st_size > 0
    data = json.loads((comparison / "comparison.json").read_text())
    assert set(data["agents"]) == {"dqn", "ewc"}
    assert data["agents"]["ewc"]["seeds"] == [0, 1]
    assert data["agents"]["dqn"]["average_performance"]["n"] == 2


def test_every_run_leaves_its_final_progress_for_the_steps_bar(comparison):
    for run in comparison.glob("*/seed-*"):
        assert json.loads((run / "steps.json").read_text()) == {"step": 2 * STEPS, "total": 2 * STEPS}, run


def test_steps_done_counts_finished_and_ended_runs_fully_and_running_ones_by_their_progress(tmp_path):
    spec = GridSpec(agents=["dqn"], seeds=[0, 1, 2, 3, 4], games=["Pong", "Breakout"], steps_per_game=100, cycles=3)
    assert spec.steps_per_run() == 600
    assert (
        GridSpec(
            agents=["dqn"], seeds=[0], games=["random4"], steps_per_game=10, cycles=2, pool="kirkpatrick2017"
        ).steps_per_run()
        == 80
    )
    cells = spec.cells()
    finished, running, failed, waiting, interrupted = (c.run_dir(tmp_path) for c in cells)
    for path in (finished, running, failed, interrupted):
        path.mkdir(parents=True)
    write_json(finished / "summary.json", {"complete": True})
    ProgressFile(running, 600).update(250)
    ProgressFile(failed, 600).update(10)
    ProgressFile(interrupted, 600).update(420)  # an earlier session's run, to be resumed
    assert steps_done(spec, tmp_path, cells, set()) == 600 + 250 + 10 + 0 + 420
    assert steps_done(spec, tmp_path, cells, {cells[2]}) == 600 + 250 + 600 + 0 + 420


def test_first_game_still_evaluated_while_the_second_trains(comparison):
    for run in comparison.glob("*/seed-*"):
        assert any(e.step > STEPS for e in events(run).Scalars("eval/Pong/return")), run


def test_report_recreates_the_same_numbers(comparison, capsys):
    before = (comparison / "comparison.json").read_text()
    (comparison / "comparison.json").unlink()
    assert main(["report", str(comparison)]) == 0
    assert (comparison / "comparison.json").read_text() == before


def test_repeat_skips_finished_runs(comparison, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in comparison.glob("*/seed-*/summary.json")}
    assert main(["compare", "--agents", "dqn", "ewc", "--seeds", "0", "1", "--logdir", str(comparison), *ARGS]) == 0
    assert "4 of 4 runs already finished: skipped" in capsys.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in comparison.glob("*/seed-*/summary.json")}


def test_unfinished_runs_resume_from_their_checkpoint(comparison, capsys):
    summary_path = comparison / "ewc" / "seed-1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "complete": False}))  # as if killed after its last checkpoint
    assert main(["compare", "--agents", "dqn", "ewc", "--seeds", "0", "1", "--logdir", str(comparison), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "3 of 4 runs already finished: skipped" in err
    assert f"resuming unfinished run {comparison / 'ewc' / 'seed-1'} from its checkpoint" in err
    resumed = json.loads(summary_path.read_text())
    assert resumed["complete"] and resumed["score_matrix"] == summary["score_matrix"]


def test_other_settings_in_the_same_directory_are_refused(comparison, capsys):
    args = [a if a != str(STEPS) else "400" for a in ARGS]
    assert main(["compare", "--agents", "dqn", "--logdir", str(comparison), *args]) == 2
    assert "steps_per_game differ" in capsys.readouterr().err


def test_mean_ci_uses_student_t():
    stat = mean_ci([1.0, 2.0, 3.0, None])
    assert stat["mean"] == 2.0 and stat["n"] == 3
    assert stat["ci95"] == pytest.approx(4.302653 * 1.0 / 3**0.5)
    assert mean_ci([5.0])["ci95"] is None
    assert mean_ci([None])["mean"] is None


def test_report_with_single_game_references_adds_forward_transfer(comparison, tmp_path):
    ref = tmp_path / "ref" / "Pong"
    ref.mkdir(parents=True)
    history = [{"step": 150, "segment": 0, "game": "Pong", "mean": -20.7, "returns": [-20.7], "normalized": 0.0}]
    ref_run = {"complete": True, "games": ["Pong"], "steps_per_game": 300, "eval_history": history}  # the fixture's
    (ref / "summary.json").write_text(json.dumps(ref_run))
    assert main(["report", str(comparison), "--reference", str(tmp_path / "ref")]) == 0
    data = json.loads((comparison / "comparison.json").read_text())
    pong = data["agents"]["dqn"]["forward_transfer"]["Pong"]
    assert pong["n"] == 2 and pong["mean"] is not None
    assert data["agents"]["dqn"]["forward_transfer"]["Breakout"]["mean"] is None  # no reference for it
    assert "Forward transfer per game" in (comparison / "comparison.md").read_text()
    assert main(["report", str(comparison)]) == 0  # and back, without references


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"ewc-rl: error: no such directory: {tmp_path / 'missing'}",
        "ewc-rl: error: no finished runs (summary.json with complete=true) under that directory",
    ]


def test_grid_runs_every_setting_and_ranks_them(tmp_path, capsys):
    logdir = tmp_path / "sweep"
    args = [
        "compare",
        "--agents",
        "minatar-ewc",
        "--seeds",
        "0",
        "--games",
        "MinAtar/Breakout,MinAtar/Asterix",
        *budget(300, "eval.max_episode_steps=200", "penalty.fisher_states=50", every=300, progress=True),
        "--grid",
        "penalty.lambda=0,1e6",
        "--logdir",
        str(logdir),
    ]
    assert main(args) == 0
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "1.20k/1.20k" in bar and "step/s" in bar  # one bar of agent steps over both runs, at the end
    runs = sorted(p.relative_to(logdir).as_posix() for p in logdir.glob("*/seed-*"))
    assert runs == ["minatar-ewc+penalty.lambda=0/seed-0", "minatar-ewc+penalty.lambda=1e6/seed-0"]
    summary = json.loads((logdir / runs[1] / "summary.json").read_text())
    assert summary["settings"]["penalty"]["lambda"] == 1e6
    md = (logdir / "comparison.md").read_text()
    assert "## Ranking" in md and "| minatar-ewc+penalty.lambda=1e6 |" in md
    bad = [*args[:-2], "--grid", "penalty.lamda=1,2", "--logdir", str(tmp_path / "bad")]
    assert main(bad) == 2 and not (tmp_path / "bad").exists()


def test_grid_syntax_errors():
    from ewc_rl.errors import UsageError
    from ewc_rl.grid import parse_grid

    assert parse_grid(["penalty.lambda=1, 10", "agent.double_dqn=true,false"]) == {
        "penalty.lambda": ["1", "10"],
        "agent.double_dqn": ["true", "false"],
    }
    for bad in (["lambda=1"], ["penalty.lambda"], ["penalty.lambda="], ["penalty.tau=1", "penalty.tau=2"]):
        with pytest.raises(UsageError):
            parse_grid(bad)


def test_comparison_files_are_readable_as_the_umask_allows(comparison):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    for path in (
        comparison / "comparison.json",
        comparison / "compare.json",
        comparison / "ewc" / "seed-0" / "summary.json",
        comparison / "comparison.md",
        comparison / "comparison.png",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path  # the json files were 0600 (mkstemp)


def test_compared_runs_chart_forgetting_and_hparams_metrics(comparison):
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = events(comparison / "ewc" / "seed-1")
    tags = set(ea.Tags()["scalars"])
    assert {
        "eval/Pong/forgetting",
        "eval/Breakout/forgetting",
        "eval/mean_forgetting",
        "metrics/average_performance",
        "metrics/mean_forgetting",
    } <= tags
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/experiment"]
    ).experiment
    assert {"metrics/average_performance", "metrics/mean_forgetting"} <= {m.name.tag for m in experiment.metric_infos}


def test_comparison_plot_title_fits_with_two_games(comparison, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from ewc_rl.report import load_runs, plot

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    plot(load_runs(comparison), tmp_path / "c.png")
    fig = figures[0]
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent()
    assert title.x0 >= 0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1  # was cut at both sides


# t_{0.975, df} from published tables (df <= 30) and scipy.stats.t.ppf(0.975, df) (6 decimals).
T975 = {
    1: 12.706205,
    2: 4.302653,
    3: 3.182446,
    5: 2.570582,
    10: 2.228139,
    30: 2.042272,
    31: 2.039513,
    32: 2.036933,
    40: 2.021075,
    60: 2.000298,
    120: 1.979930,
    1000: 1.962339,
}


def test_intervals_use_student_t_for_any_number_of_seeds():
    for df, t in T975.items():
        assert t_quantile_975(df) == pytest.approx(t, abs=1e-6), df
    values = [float(v % 7) for v in range(33)]  # 33 seeds: df 32, where 1.96 was used (3.8% too narrow)
    n, mean = len(values), sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    assert mean_ci(values)["ci95"] == pytest.approx(2.036933 * sd / n**0.5, rel=1e-6)


def test_t_quantile_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 300):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10), df


def test_report_says_which_games_the_means_leave_out():
    run = fake_summary(["Pong", "Tetris"], [[-3.05, None], [-20.7, 40.0]])
    comparison = aggregate({"dqn": {0: run, 1: run}})
    agent = comparison["agents"]["dqn"]
    assert agent["excluded_from_means"] == ["Tetris"] and agent["average_performance"]["mean"] == pytest.approx(0.0)
    assert "means over the normalised games only: Tetris (no reference score" in to_markdown(comparison)


def test_report_names_the_runs_resumed_without_their_replay():
    run = fake_summary(["Pong", "Breakout"], [[-3.05, None], [-20.7, 5.0]])
    kept, lost = (
        {**run, "resumes": [{"step": 10, "replay_lost": 0}]},
        {**run, "resumes": [{"step": 9, "replay_lost": 7}]},
    )
    uncounted = {**run, "resumes": [{"step": 10, "replay_lost": 0}, {"step": 20, "replay_lost": None}]}
    comparison = aggregate({"dqn": {0: run, 1: lost, 2: kept, 3: uncounted}, "ewc": {0: kept}})
    assert comparison["agents"]["dqn"]["resumed_without_replay"] == [1, 3]
    assert comparison["agents"]["ewc"]["resumed_without_replay"] == []
    md = to_markdown(comparison)
    assert "Resumed without replay memory" in md and md.count("dqn (seeds 1, 3)") == 1 and "ewc (" not in md
    assert "Resumed without" not in to_markdown(aggregate({"ewc": {0: kept, 1: run}}))
    fresh = fake_summary(["Pong"], [[-3.05]], seed=0)
    references = {"Pong": {0: {**fresh, "resumes": [{"step": 5, "replay_lost": 3}]}, 1: fresh}}
    md = to_markdown(aggregate({"ewc": {0: kept, 1: run}}, references))
    assert "Resumed without replay memory" in md and "fresh Pong (seed 0)" in md and "ewc (" not in md


def test_report_says_when_runs_come_from_several_commits_or_cpus():
    run = fake_summary(["Pong", "Breakout"], [[-3.05, None], [-20.7, 5.0]])
    a = {"commit": "a" * 40, "dirty": False, "cpu": "AMD EPYC"}
    b = {**a, "commit": "b" * 40}
    same = aggregate({"dqn": {0: {**run, "provenance": a}}, "ewc": {0: {**run, "provenance": a}}})
    assert same["provenance"] == {"commits": ["a" * 40], "cpus": ["AMD EPYC"], "dirty": False, "unrecorded": 0}
    assert "These runs were made with" not in to_markdown(same)
    assert "provenance" not in aggregate({"dqn": {0: run}})  # nothing recorded, nothing claimed
    older = aggregate({"dqn": {0: {**run, "provenance": a}, 1: run}})
    assert older["provenance"]["unrecorded"] == 1
    assert "with 1 run(s) whose commit is not recorded" in to_markdown(older)
    resumed = {**run, "provenance": a, "resumes": [{"step": 5, "replay_lost": 0, **b, "cpu": "Intel Xeon"}]}
    fresh = fake_summary(["Pong"], [[-3.05]], seed=0, provenance={**a, "dirty": True})
    mixed = aggregate({"dqn": {0: {**run, "provenance": a}, 1: resumed}}, {"Pong": {0: fresh}})
    assert mixed["provenance"]["commits"] == ["a" * 40, "b" * 40] and mixed["provenance"]["dirty"]
    assert (
        "These runs were made with 2 commits of ewc_rl (aaaaaaaa, bbbbbbbb) and code with uncommitted changes and "
        "2 CPU models (AMD EPYC; Intel Xeon)" in to_markdown(mixed)
    )


def test_report_gives_each_agents_minutes_per_run():
    run = fake_summary(["Pong", "Breakout"], [[-3.05, None], [-20.7, 5.0]])
    comparison = aggregate(
        {"dqn": {0: {**run, "wall_time_s": 60.0}, 1: {**run, "wall_time_s": 180.0}}, "ewc": {0: run}}
    )
    assert comparison["agents"]["dqn"]["minutes_per_run"] == mean_ci([1.0, 3.0])
    assert comparison["agents"]["ewc"]["minutes_per_run"]["n"] == 0
    md = to_markdown(comparison)
    assert "| retention | minutes per run |" in md
    assert next(line for line in md.splitlines() if line.startswith("| 1 | dqn |")).endswith(" 2.0 |")
    assert next(line for line in md.splitlines() if line.startswith("| 2 | ewc |")).endswith(" - |")


def test_report_gives_retention_over_seeds_per_agent_and_per_game():
    def run(pong_kept: float) -> dict:  # Pong normalised 0.5 after its segment, then pong_kept of it at the end
        return fake_summary(
            ["Pong", "Breakout"], [[-20.7 + 35.3 * 0.5, None], [-20.7 + 35.3 * 0.5 * pong_kept, 1.7 + 28.8 * 0.4]]
        )

    comparison = aggregate({"dqn": {0: run(0.2), 1: run(0.6), 2: run(1.4)}})  # the last one is kept, clipped to 1
    agent = comparison["agents"]["dqn"]
    stat = mean_ci([0.2, 0.6, 1.0])
    assert agent["retention"]["mean"] == pytest.approx(stat["mean"]) and agent["retention"]["n"] == 3
    assert agent["retention"]["ci95"] == pytest.approx(stat["ci95"])
    assert agent["retention_per_game"]["Pong"]["mean"] == pytest.approx(0.6)
    assert agent["retention_per_game"]["Breakout"] == {"mean": None, "ci95": None, "n": 0}  # trained last
    md = to_markdown(comparison)
    cell = f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"
    assert "| final game | retention |" in md and f"| 0.400 ± 0.000 | {cell} |" in md  # final game, retention
    assert "| rank | run | average performance | mean forgetting | retention |" in md
    assert md.count(cell) == 3  # the agent table, the ranking, the per-game table
    assert f"## Retention per game\n\n| agent | Pong | Breakout |\n|---|---|---|\n| dqn | {cell} | - |" in md
    assert "No trade-off figure (`tradeoff.png`, retention against plasticity)" in md  # no fresh references


def test_report_lists_plasticity_per_game_with_the_fresh_runs_it_divides_by(tmp_path):
    from ewc_rl.report import load_references, write_report

    # Pong: normalised 0.3 and 0.6 at the end of its first segment; Freeway's fresh runs never left 0 (random).
    pong = [-20.7 + 35.3 * 0.3, -20.7 + 35.3 * 0.6]
    for agent in ("dqn", "ewc"):
        for seed in (0, 1):
            run = fake_summary(["Pong", "Freeway"], [[pong[seed], None], [-20.7, 10.0]], seed=seed)
            write_summary(tmp_path / "cmp" / agent / f"seed-{seed}", run)
    for game, scores in (("Pong", [-20.7 + 35.3 * 0.6, -20.7 + 35.3 * 0.8]), ("Freeway", [0.0, 1.0])):
        for seed in (0, 1):
            fresh = fake_summary([game], [[scores[seed]]], seed=seed)
            write_summary(tmp_path / "cmp" / "fresh" / game / f"seed-{seed}", fresh)
    write_report(tmp_path / "cmp")  # <logdir>/fresh is used without being named
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert set(data["agents"]) == {"dqn", "ewc"}  # the fresh runs are not an agent
    dqn = data["agents"]["dqn"]
    assert [dqn["plasticity"]["Pong"]["mean"], dqn["plasticity"]["Pong"]["n"]] == [pytest.approx(0.625), 2]
    assert dqn["plasticity"]["Freeway"] == {"mean": None, "ci95": None, "n": 0}  # fresh: 0 and 0.034 <= 0.1
    assert dqn["mean_plasticity"] == mean_ci([0.3 / 0.6, 0.6 / 0.8])
    assert data["fresh_references"]["Pong"]["mean"] == pytest.approx(0.7)
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Plasticity per game" in md and "| agent | average performance | mean forgetting | clipped" in md
    assert (
        "| final game | retention | mean plasticity |" in md
        and "| rank | run | average performance | mean forgetting | retention | mean plasticity |" in md
    )
    pong = dqn["plasticity"]["Pong"]
    assert f"| dqn | {pong['mean']:.3f} ± {pong['ci95']:.3f} | - |" in md  # the per-game table: Pong, Freeway
    assert (
        "where a fresh run did not learn the game (normalised score ≤ 0.1: a ratio to it would be noise): "
        "Freeway (seeds 0, 1)." in md
    )
    assert data["fresh_references"]["Freeway"]["unlearned_seeds"] == [0, 1]
    assert load_references([tmp_path / "cmp" / "fresh"])["Pong"].keys() == {0, 1}
    # --reference DIR overrides; the same runs named explicitly give the same report, and so do the same runs
    # spread over two directories (each game's runs in its own).
    before = (tmp_path / "cmp" / "comparison.json").read_text()
    write_report(tmp_path / "cmp", [tmp_path / "cmp" / "fresh"])
    assert (tmp_path / "cmp" / "comparison.json").read_text() == before
    shutil.copytree(tmp_path / "cmp" / "fresh" / "Pong", tmp_path / "refs-a" / "Pong")
    shutil.copytree(tmp_path / "cmp" / "fresh" / "Freeway", tmp_path / "refs-b" / "deeper" / "Freeway")
    write_report(tmp_path / "cmp", [tmp_path / "refs-a", tmp_path / "refs-b"])
    assert (tmp_path / "cmp" / "comparison.json").read_text() == before


def test_references_of_another_budget_are_not_used(tmp_path):
    from ewc_rl.report import write_report

    # Segments of 10 steps for Pong and 30 for Breakout; Pong's reference exists at 10 steps (normalised 0.5) and
    # at 20 (0.9, same seed): only the first may divide. Breakout's only reference has 10 steps.
    run = fake_summary(["Pong", "Breakout"], [[-20.7 + 35.3 * 0.25, None], [-20.7, 5.0]], seed=0)
    run["steps_per_game"] = {"Pong": 10, "Breakout": 30}
    write_summary(tmp_path / "cmp" / "dqn" / "seed-0", run)
    write_summary(tmp_path / "long" / "Pong", fake_summary(["Pong"], [[-20.7 + 35.3 * 0.9]], 20, seed=0))
    write_summary(tmp_path / "short" / "Pong", fake_summary(["Pong"], [[-20.7 + 35.3 * 0.5]], 10, seed=0))
    write_report(tmp_path / "cmp", [tmp_path / "long", tmp_path / "short"])  # "long" first: sorted order alone
    plasticity = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["agents"]["dqn"]["plasticity"]
    assert plasticity["Pong"]["mean"] == pytest.approx(0.5)  # would pick 0.25 / 0.9 without the budget check
    # A game the comparison does not train is no reference, whatever its budget; one of its games with only
    # references of another budget (or of an unknown one) is an error.
    write_summary(tmp_path / "short" / "Freeway", fake_summary(["Freeway"], [[3.0]], 99, seed=0))
    write_report(tmp_path / "cmp", [tmp_path / "long", tmp_path / "short"])
    write_summary(tmp_path / "short" / "Breakout", fake_summary(["Breakout"], [[30.0]], 10, seed=0))
    unknown = fake_summary(["Breakout"], [[30.0]], seed=1)
    del unknown["steps_per_game"]
    write_summary(tmp_path / "short" / "Breakout-old", unknown)
    with pytest.raises(
        UsageError, match=r"no reference for Breakout under .*: its single-game runs trained 10 or an unknown number of"
    ):
        write_report(tmp_path / "cmp", [tmp_path / "long", tmp_path / "short"])


def test_references_need_the_runs_to_share_one_budget(tmp_path):
    from ewc_rl.report import write_report

    for seed, steps in ((0, 10), (1, 20)):
        run = fake_summary(["Pong"], [[-20.7 + 35.3 * 0.25]], steps, seed=seed)
        write_summary(tmp_path / "cmp" / "dqn" / f"seed-{seed}", run)
    write_summary(tmp_path / "refs" / "Pong", fake_summary(["Pong"], [[-20.7 + 35.3 * 0.5]], 10, seed=0))
    with pytest.raises(UsageError, match=r"runs under .* differ in --steps-per-game \(10, 20\)"):
        write_report(tmp_path / "cmp", [tmp_path / "refs"])
    write_report(tmp_path / "cmp")  # without references the budgets need not agree


def test_report_cli_rejects_a_missing_reference_directory(tmp_path, capsys):
    write_summary(tmp_path / "cmp" / "dqn" / "seed-0", fake_summary(["Pong"], [[0.0]], seed=0))
    assert main(["report", str(tmp_path / "cmp"), "--reference", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reference: no such directory" in err
    assert not (tmp_path / "cmp" / "comparison.json").exists()


MINATAR = [
    "--games",
    "MinAtar/Breakout,MinAtar/Asterix",
    *budget(200, "eval.max_episode_steps=100", every=200),
    "--seeds",
    "0",
    "1",
]


def test_fresh_references_added_to_a_finished_comparison_give_plasticity_that_report_recomputes(tmp_path, capsys):
    from ewc_rl.metrics import PLASTICITY_MIN_REFERENCE
    from ewc_rl.scores import normalize

    logdir = tmp_path / "cmp"
    cmd = ["compare", "--agents", "minatar-dqn", "--logdir", str(logdir), *MINATAR]
    assert main(cmd) == 0
    assert "plasticity" not in json.loads((logdir / "comparison.json").read_text())["agents"]["minatar-dqn"]
    stamps = {p: p.stat().st_mtime_ns for p in logdir.glob("*/seed-*/summary.json")}
    capsys.readouterr()
    # Bad input: one line, exit 2, nothing written (no reference run, compare.json untouched).
    saved = (logdir / "compare.json").read_text()
    assert main([*cmd, "--fresh-references", "no-such-agent"]) == 2
    assert capsys.readouterr().err.startswith("ewc-rl: error: unknown agent 'no-such-agent'")
    assert not (logdir / "fresh").exists() and (logdir / "compare.json").read_text() == saved
    # The flag added later: only the 4 reference runs (2 games x 2 seeds) are trained, then the report is rewritten.
    assert main([*cmd, "--fresh-references", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"{logdir / 'fresh' / 'MinAtar-Asterix' / 'seed-1'}  minatar-dqn on MinAtar/Asterix alone" in plan
    assert plan.count(": finished") == 2 and plan.count(": to run") == 4 and not (logdir / "fresh").exists()
    assert main([*cmd, "--fresh-references"]) == 0
    assert "2 of 6 runs already finished: skipped" in capsys.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in logdir.glob("*/seed-*/summary.json")}
    refs = sorted(p.relative_to(logdir).as_posix() for p in logdir.glob("fresh/*/seed-*/summary.json"))
    assert refs == [f"fresh/MinAtar-{g}/seed-{s}/summary.json" for g in ("Asterix", "Breakout") for s in (0, 1)]
    data = json.loads((logdir / "comparison.json").read_text())
    assert set(data["agents"]) == {"minatar-dqn"}
    agent = data["agents"]["minatar-dqn"]
    # Independently from the summaries: normalised first-segment score over the same seed's fresh run.
    for j, game in enumerate(("MinAtar/Breakout", "MinAtar/Asterix")):
        ratios = []
        for seed in (0, 1):
            run = json.loads((logdir / "minatar-dqn" / f"seed-{seed}" / "summary.json").read_text())
            ref = json.loads((logdir / "fresh" / game.replace("/", "-") / f"seed-{seed}" / "summary.json").read_text())
            assert ref["games"] == [game] and ref["steps_per_game"] == 200 and ref["seed"] == seed
            fresh = normalize(game, ref["score_matrix"][0][0])
            ratios.append(
                normalize(game, run["score_matrix"][j][j]) / fresh if fresh > PLASTICITY_MIN_REFERENCE else None
            )
            if j == 0:  # the first game: the same agent, seed and steps as its fresh run, so the same score
                assert run["score_matrix"][0][0] == ref["score_matrix"][0][0]
        assert agent["plasticity"][game] == mean_ci(ratios)
    assert "## Plasticity per game" in (logdir / "comparison.md").read_text()
    # report recomputes the same numbers from the runs, <logdir>/fresh found by itself.
    before = (logdir / "comparison.json").read_text()
    (logdir / "comparison.json").unlink()
    assert main(["report", str(logdir)]) == 0
    assert (logdir / "comparison.json").read_text() == before
    # References of another agent in the same directory, or other settings, are refused.
    assert main([*cmd, "--fresh-references", "minatar-ewc"]) == 2
    assert "fresh references ran with agent minatar-dqn" in capsys.readouterr().err
    other = [a if a != "200" else "300" for a in cmd]
    assert main([*other, "--fresh-references"]) == 2
    assert "steps_per_game, eval_every differ" in capsys.readouterr().err


def test_repeated_seeds_agents_and_grid_values_never_share_a_run_directory(tmp_path, capsys, monkeypatch):
    import ewc_rl.grid

    scheduled = []

    def fake_run_grid(spec, logdir, **kwargs):
        scheduled.extend(c.run_dir(logdir) for c in spec.cells())
        raise KeyboardInterrupt  # stop before training: the schedule is what is tested

    monkeypatch.setattr(ewc_rl.grid, "run_grid", fake_run_grid)
    logdir = tmp_path / "cmp"
    main(
        [
            "compare",
            "--agents",
            "dqn",
            "dqn",
            "--seeds",
            "0",
            "0",
            "1",
            "--grid",
            "penalty.lambda=1,1",
            "--logdir",
            str(logdir),
            *ARGS,
        ]
    )
    assert scheduled == [logdir / "dqn+penalty.lambda=1" / f"seed-{s}" for s in (0, 1)]
    err = capsys.readouterr().err
    assert "note: --seeds repeats 0; each is run once" in err and "note: --agents repeats dqn" in err
    assert "--grid penalty.lambda repeats a value" in err
    # Two agent files with one name would write into one directory: refused.
    (tmp_path / "dqn.toml").write_text("")
    assert (
        main(["compare", "--agents", "dqn", str(tmp_path / "dqn.toml"), "--logdir", str(tmp_path / "c2"), *ARGS]) == 2
    )
    assert "would share the run directory dqn/seed-0" in capsys.readouterr().err


def test_a_game_named_twice_is_said_to_be_a_revisit(capsys):
    assert (
        main(
            [
                "train",
                "--agent",
                "minatar-dqn",
                "--games",
                "MinAtar/Breakout,MinAtar/Asterix,MinAtar/Breakout",
                "--steps-per-game",
                "100",
                "--dry-run",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "note: --games names MinAtar/Breakout more than once: each later visit is a revisit" in err
    assert err.count("\n") == 1


def test_threads_per_run_divide_the_cores_unless_named(tmp_path, monkeypatch):
    import os

    from ewc_rl.grid import _Pool, train_argv

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    spec = GridSpec(agents=["minatar-dqn"], seeds=[0], games=["MinAtar/Breakout"], steps_per_game=10)
    assert _Pool(spec, tmp_path, 2, "cpu").threads == 4
    assert _Pool(spec, tmp_path, 1, "cpu").threads == 8  # a lone run takes every core by default...
    pool = _Pool(spec, tmp_path, 1, "cpu", threads=1)  # ...unless told otherwise (compare --threads 1)
    argv = train_argv(spec, spec.cells()[0], tmp_path, "cpu", pool.threads)
    assert pool.threads == 1 and argv[argv.index("--threads") + 1] == "1"


def test_threads_must_be_positive_and_local(tmp_path, capsys):
    for extra in (["--threads", "0"], ["--threads", "1", "--backend", "ray"]):
        try:  # argparse's own errors exit, the suite's return
            code = main(["compare", *ARGS, "--logdir", str(tmp_path / "c"), *extra])
        except SystemExit as stop:
            code = stop.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert "--threads" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_per_game_budgets_reach_every_run_the_references_and_the_report(tmp_path):
    """--steps-per-game N1,N2: each game's visit has its own length, in the run, its fresh reference and the report."""
    logdir = tmp_path / "cmp"
    flags = budget(200, "eval.max_episode_steps=100", every=200)
    flags[flags.index("--steps-per-game") + 1] = "200,400"
    cmd = ["compare", "--agents", "minatar-dqn", "--games", "MinAtar/Breakout,MinAtar/Asterix", *flags]
    assert main([*cmd, "--seeds", "0", "--fresh-references", "--logdir", str(logdir)]) == 0
    run = logdir / "minatar-dqn" / "seed-0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_per_game"] == {"MinAtar/Breakout": 200, "MinAtar/Asterix": 400}
    assert json.loads((run / "steps.json").read_text()) == {"step": 600, "total": 600}
    assert max(e["step"] for e in summary["eval_history"]) == 600
    for game, steps in (("Breakout", 200), ("Asterix", 400)):
        ref = logdir / "fresh" / f"MinAtar-{game}" / "seed-0"
        assert json.loads((ref / "steps.json").read_text()) == {"step": steps, "total": steps}
    md = (logdir / "comparison.md").read_text()
    assert "agent steps per game: MinAtar/Breakout 200, MinAtar/Asterix 400" in md
    assert (logdir / "comparison.png").stat().st_size > 0
    assert json.loads((logdir / "compare.json").read_text())["steps_per_game"] == summary["steps_per_game"]


def test_finished_runs_of_settings_the_agent_file_no_longer_gives_are_refused(tmp_path, capsys):
    from ewc_rl.config import load_config
    from ewc_rl.grid import pending

    logdir = tmp_path / "cmp"
    cmd = ["compare", "--agents", "minatar-rehearsal", "--seeds", "0", "1", "--games", "MinAtar/Breakout"]
    cmd += ["--steps-per-game", "10", "--eval-every", "50", "--set", "rehearsal.fraction=0.5", "--logdir", str(logdir)]
    spec = GridSpec(
        agents=["minatar-rehearsal"],
        seeds=[0, 1],
        games=["MinAtar/Breakout"],
        steps_per_game=10,
        overrides=["rehearsal.fraction=0.5"],
        eval_every=50,
    )
    assert len(pending(spec, logdir)) == 2  # the comparison as compare starts it: compare.json, nothing run yet
    settings = load_config("minatar-rehearsal", ["rehearsal.fraction=0.5", "eval.every=50"]).to_dict()
    assert settings["rehearsal"]["memory"] != 5 and settings["eval"]["every"] == 50
    edited = {**settings, "rehearsal": {**settings["rehearsal"], "memory": 5}}  # the file said 5 when seed 1 ran
    run = logdir / "minatar-rehearsal"
    write_summary(run / "seed-0", fake_summary(["MinAtar/Breakout"], [[1.0]], settings=settings))
    write_summary(run / "seed-1", fake_summary(["MinAtar/Breakout"], [[1.0]], settings=edited))
    files = {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()}
    for dry in (["--dry-run"], []):
        assert main([*cmd, *dry]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"ewc-rl: error: {run / 'seed-1'} (rehearsal.memory: ran 5, now "
        )
        assert "other settings than the agent file" in err and "seed-0" not in err
        assert {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()} == files  # nothing written
    # A repeat that names only a new seed is refused too: the report would average the stale run with it.
    only_new = [*cmd[:3], "--seeds", "2", *cmd[6:]]
    assert only_new[2:6] == ["minatar-rehearsal", "--seeds", "2", "--games"]
    assert main([*only_new, "--dry-run"]) == 2
    assert f"{run / 'seed-1'} (rehearsal.memory: ran 5" in capsys.readouterr().err
    # A setting the run did not record (added to the schema after it finished) is compared with its default, as
    # train --resume does: the file's memory is not the default (refused), agent.on_nonfinite is (skipped).
    assert settings["agent"]["on_nonfinite"] == "stop"
    for missing, refused in ((("rehearsal", "memory"), True), (("agent", "on_nonfinite"), False)):
        recorded = json.loads(json.dumps(settings))
        del recorded[missing[0]][missing[1]]
        summary = fake_summary(["MinAtar/Breakout"], [[1.0]], settings=recorded)
        (run / "seed-1" / "summary.json").write_text(json.dumps(summary))
        assert main([*cmd, "--dry-run"]) == (2 if refused else 0)
        out, err = capsys.readouterr()
        assert ("rehearsal.memory: ran 10000, now " in err) if refused else out.count(": finished") == 2
