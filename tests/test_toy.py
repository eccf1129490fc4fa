"""`ewc-rl toy`, the permuted-digits experiment: a tiny run through the CLI, its artefacts, and its Fisher
against an explicit per-sample loop of ordinary autograd calls."""

from __future__ import annotations

import json

import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl import toy
from ewc_rl.cli import main
from tests.helpers import events

TINY = ["--tasks", "2", "--steps-per-task", "20", "--eval-every", "10", "--hidden", "8", "--seeds", "0", "1"]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def _loop_exact_fisher(net: th.nn.Module, x: th.Tensor) -> dict[str, th.Tensor]:
    """mean_i sum_c p(c|x_i) (d log p(c|x_i))^2, one autograd.grad call per sample and class."""
    params = dict(net.named_parameters())
    total = {n: th.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        logp = F.log_softmax(net(x[i : i + 1]), -1)[0]
        for c in range(len(logp)):
            grads = th.autograd.grad(logp[c], list(params.values()), retain_graph=True)
            for n, g in zip(params, grads, strict=True):
                total[n] += logp[c].exp().detach() * g**2
    return {n: t / len(x) for n, t in total.items()}


def test_tiny_run_writes_the_artefacts_and_the_fisher_it_used(tmp_path, capsys):
    logdir = tmp_path / "toy"
    assert main(["toy", *TINY, "--methods", "sgd", "l2", "ewc", "--lambda", "ewc=0.5", "--logdir", str(logdir)]) == 0
    assert "average accuracy at the end" in capsys.readouterr().out

    comparison = json.loads((logdir / "comparison.json").read_text())
    assert list(comparison["agents"]) == ["sgd", "l2", "ewc"]
    assert comparison["spec"]["lambdas"] == {"sgd": 0.0, "l2": 0.02, "ewc": 0.5}
    for name, agent in comparison["agents"].items():
        assert agent["seeds"] == [0, 1]
        matrix = agent["score_matrix"]
        assert len(matrix) == 2 and matrix[0][1]["mean"] is None  # task 2 is not evaluated before it is trained
        assert agent["average_performance"]["n"] == 2 and agent["average_performance"]["ci95"] is not None
        runs = [json.loads((logdir / name / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
        ends = [r["score_matrix"][-1][0] for r in runs]
        assert matrix[-1][0]["mean"] == pytest.approx(sum(ends) / 2)
        # forgetting of task 1 = accuracy after task 1 minus accuracy at the end, per seed, then averaged
        drops = [r["score_matrix"][0][0] - r["score_matrix"][-1][0] for r in runs]
        assert agent["forgetting"]["task1"]["mean"] == pytest.approx(sum(drops) / 2)
    assert {c["claim"] for c in comparison["ordering"]} >= {"average accuracy at the end: ewc > sgd"}
    md = (logdir / "comparison.md").read_text()
    assert "| ewc |" in md and "The paper's ordering" in md
    assert (logdir / "comparison.png").stat().st_size > 0

    # TensorBoard: every task's accuracy over training; task 2 from its own start on
    ea = events(logdir / "ewc" / "seed-1")
    assert [e.step for e in ea.Scalars("eval/task1/accuracy")] == [0, 10, 20, 30, 40]  # once per step
    assert [e.step for e in ea.Scalars("eval/task2/accuracy")] == [20, 30, 40]
    summary = json.loads((logdir / "ewc" / "seed-1" / "summary.json").read_text())
    assert ea.Scalars("eval/task2/accuracy")[-1].value == pytest.approx(summary["score_matrix"][-1][1])

    # Only the Fisher-based method stores a Fisher, and it is the exact predictive Fisher of the network at the
    # end of task 1, on task 1's training inputs.
    assert not (logdir / "sgd" / "seed-1" / "fisher.pt").exists()
    assert not (logdir / "l2" / "seed-1" / "fisher.pt").exists()
    stored = th.load(logdir / "ewc" / "seed-1" / "fisher.pt")["task1"]
    net = toy.make_mlp(64, 8)
    net.load_state_dict(stored["params"])
    x_train = toy.load_digits(1)[0]
    x1 = x_train[:, toy.permutations(2, 64, 1)[0]]
    want = _loop_exact_fisher(net, x1)
    assert stored["fisher"].keys() == want.keys()
    for name in want:
        assert th.allclose(stored["fisher"][name], want[name], rtol=1e-4, atol=1e-9), name


@pytest.mark.parametrize(
    "bad",
    [
        ["--tasks", "0"],
        ["--methods", "sgd", "adam"],
        ["--lambda", "-1"],
        ["--lambda", "ewc=-0.5"],
        ["--lambda", "elastic=1"],
        ["--fisher", "empirical"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad):
    logdir = tmp_path / "toy"
    assert _exit_code(["toy", *TINY, "--logdir", str(logdir), *bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert not logdir.exists()


def test_lambda_for_all_methods_or_one():
    defaults = {"l2": 0.01, "ewc": 0.01, "online-ewc": 0.01}
    assert toy.parse_lambdas(["2"], defaults) == {"l2": 2.0, "ewc": 2.0, "online-ewc": 2.0}
    assert toy.parse_lambdas(["2", "ewc=1e3"], defaults) == {"l2": 2.0, "ewc": 1000.0, "online-ewc": 2.0}
    assert toy.parse_lambdas([], defaults) == defaults


def test_a_diverging_penalty_stops_with_one_line_and_exit_1(tmp_path, capsys):
    argv = ["toy", *TINY, "--methods", "ewc", "--lambda", "1000", "--lr", "1", "--logdir", str(tmp_path / "toy")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ewc, seed 0" in err and "lower --lambda or --lr" in err
