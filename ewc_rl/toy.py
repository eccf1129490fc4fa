"""The EWC paper's supervised experiment (Kirkpatrick et al. 2017, Figure 2A) on permuted 8x8 digits.

A small fully connected network learns K tasks in sequence; each task is the same digit classification
under its own fixed random pixel permutation, so the tasks are equally hard and share no input structure.
In the paper plain SGD forgets the earlier permutations, an L2 anchor keeps them but cannot learn new ones,
and EWC keeps them and learns the new ones (what this version shows: docs/results/toy.md). The suite's own
pieces do the work: the predictive Fisher of the class distribution is :func:`ewc_rl.fisher.exact_fisher` /
``sampled_fisher`` with the class logits in place of Q and tau = 1, the penalty is
:class:`ewc_rl.penalty.Penalty`, the metrics and intervals are :func:`ewc_rl.report.aggregate`. Only the
training loop of a classifier, which the RL trainer lacks, is here.

Data: scikit-learn's digits (1,797 8x8 images, UCI), read from a file inside the scikit-learn wheel. No PyPI
package ships the 28x28 MNIST arrays in its wheel (the ones named after MNIST download them at run time),
and a run-time download is not allowed, so the 8x8 digits stand in for MNIST.

Artefacts (``logdir``), the same as a comparison's: ``<method>/seed-<s>/summary.json`` (score matrix and
every evaluation), TensorBoard events there (``eval/<task>/accuracy`` over training), ``fisher.pt`` (each
task's Fisher and the parameters it was taken at), and ``comparison.{json,md,png}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ewc_rl.errors import RunError, UsageError
from ewc_rl.fisher import FisherDict, exact_fisher, sample_actions, sampled_fisher
from ewc_rl.penalty import Penalty
from ewc_rl.report import aggregate
from ewc_rl.tblog import write_json

# method name (the paper's) -> Penalty kind
METHODS = {"sgd": "none", "l2": "l2", "ewc": "ewc", "online-ewc": "online-ewc"}
ESTIMATORS = ("exact", "sampled")
N_CLASSES = 10
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class ToySpec:
    """Everything that defines a toy comparison; every run of it is (method, seed)."""

    tasks: int = 5
    methods: tuple[str, ...] = ("sgd", "l2", "ewc")
    # lambda, lr and steps were chosen on development seeds 100-104 (docs/results/toy.md has the criterion)
    lambdas: dict[str, float] = field(default_factory=lambda: {"l2": 0.02, "ewc": 0.02, "online-ewc": 0.02})
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps_per_task: int = 250
    batch_size: int = 32
    lr: float = 0.2
    hidden: int = 100
    eval_every: int = 25
    fisher: str = "exact"
    decay: float = 1.0

    def validate(self) -> None:
        """Bad input as a UsageError, before anything is written."""
        if self.tasks < 1:
            raise UsageError(f"--tasks must be >= 1, got {self.tasks}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r} (choose from {', '.join(METHODS)})")
        for method, lam in self.lambdas.items():
            if method not in METHODS:
                raise UsageError(f"--lambda {method}=...: unknown method (choose from {', '.join(METHODS)})")
            if not lam >= 0:
                raise UsageError(f"--lambda must be >= 0, got {lam} for {method}")
        if self.fisher not in ESTIMATORS:
            raise UsageError(f"unknown Fisher estimator {self.fisher!r} (choose from {', '.join(ESTIMATORS)})")
        if not 0 <= self.decay <= 1:
            raise UsageError(f"--decay must be in [0, 1], got {self.decay}")
        for name in ("steps_per_task", "batch_size", "hidden", "eval_every", "lr"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not self.seeds:
            raise UsageError("--seeds needs at least one seed")

    def lam(self, method: str) -> float:
        return self.lambdas.get(method, 0.0) if METHODS[method] != "none" else 0.0


def parse_lambdas(values: list[str], defaults: dict[str, float]) -> dict[str, float]:
    """``--lambda`` values: ``V`` sets every penalised method, ``METHOD=V`` one of them (later ones win)."""
    out = dict(defaults)
    for text in values:
        method, _, number = text.rpartition("=")
        try:
            lam = float(number)
        except ValueError:
            raise UsageError(f"--lambda {text}: expected a number or METHOD=number") from None
        if method and method not in METHODS:
            raise UsageError(f"--lambda {text}: unknown method {method!r} (choose from {', '.join(METHODS)})")
        if not lam >= 0:
            raise UsageError(f"--lambda must be >= 0, got {text}")
        out.update({method: lam} if method else dict.fromkeys(out, lam))
    return out


def task_names(n: int) -> list[str]:
    return [f"task{k + 1}" for k in range(n)]


def load_digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a seeded stratified-by-chance 75/25 split."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise UsageError(
            "ewc-rl toy needs scikit-learn, whose wheel holds the digits: pip install 'ewc_rl[toy]'"
        ) from None

    x, y = sk_digits(return_X_y=True)
    x_t, y_t = torch.as_tensor(x, dtype=torch.float32) / 16.0, torch.as_tensor(y, dtype=torch.long)
    order = torch.randperm(len(y_t), generator=torch.Generator().manual_seed(seed))
    n_test = round(TEST_FRACTION * len(y_t))
    test, train = order[:n_test], order[n_test:]
    return x_t[train], y_t[train], x_t[test], y_t[test]


def permutations(n_tasks: int, n_pixels: int, seed: int) -> list[Tensor]:
    """One fixed random pixel permutation per task (task 1 too: the network has no spatial prior anyway)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return [torch.randperm(n_pixels, generator=gen) for _ in range(n_tasks)]


def make_mlp(n_in: int, hidden: int, n_out: int = N_CLASSES) -> nn.Sequential:
    """The paper's network shape: two ReLU hidden layers, class logits out."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


def estimate_fisher(model: nn.Module, x: Tensor, estimator: str, generator: torch.Generator) -> FisherDict:
    """The model's predictive Fisher on inputs ``x``: the suite's policy Fisher with logits as Q and tau = 1."""
    if estimator == "exact":
        return exact_fisher(model, x, tau=1.0, chunk_size=256)
    labels = sample_actions(model, x, 1.0, generator)
    return sampled_fisher(model, x, labels, tau=1.0, chunk_size=256)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run_one(spec: ToySpec, method: str, seed: int, logdir: Path | None = None) -> dict[str, Any]:
    """Train one (method, seed) on the K tasks in sequence; return its summary (the trainer's shape)."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits(seed)
    perms = permutations(spec.tasks, x_train.shape[1], seed)
    names = task_names(spec.tasks)
    model = make_mlp(x_train.shape[1], spec.hidden)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    # Fishers are normalised to mean 1 so that one lambda means the same total stiffness for L2 and EWC.
    penalty = Penalty(METHODS[method], lam=spec.lam(method), decay=spec.decay, normalize=True)
    gen = torch.Generator().manual_seed(seed)
    writer = SummaryWriter(str(logdir)) if logdir is not None else None
    score_matrix: list[list[float | None]] = []
    eval_history: list[dict[str, Any]] = []
    fishers: dict[str, dict[str, Any]] = {}

    def evaluate(step: int, segment: int, first: int = 0) -> dict[str, float]:
        """Accuracy of tasks ``first`` .. ``segment`` (a segment's start skips those its predecessor's end did)."""
        acc = {names[j]: accuracy(model, x_test[:, perms[j]], y_test) for j in range(first, segment + 1)}
        for name, value in acc.items():
            eval_history.append({"step": step, "segment": segment, "game": name, "mean": value})
            if writer is not None:
                writer.add_scalar(f"eval/{name}/accuracy", value, step)
        if writer is not None and first == 0:
            writer.add_scalar("eval/mean_accuracy", sum(acc.values()) / len(acc), step)
        return acc

    for k in range(spec.tasks):
        x_k = x_train[:, perms[k]]
        for t in range(spec.steps_per_task):
            step = k * spec.steps_per_task + t
            if t % spec.eval_every == 0:
                evaluate(step, k, first=k if t == 0 and k > 0 else 0)
            idx = torch.randint(len(x_k), (spec.batch_size,), generator=gen)
            loss = F.cross_entropy(model(x_k[idx]), y_train[idx])
            if not torch.isfinite(loss):
                raise RunError(
                    f"{method}, seed {seed}: the loss diverged at step {step}; the penalty's stiffest "
                    f"direction is too stiff for plain SGD (lower --lambda or --lr)"
                )
            opt.zero_grad(set_to_none=False)
            loss.backward()
            penalty.add_gradient(params, value=False)
            opt.step()
            if writer is not None and t % spec.eval_every == 0:
                writer.add_scalar("train/loss", loss.item(), step)
        final = evaluate((k + 1) * spec.steps_per_task, k)
        score_matrix.append([final.get(name) for name in names])
        fisher = estimate_fisher(model, x_k, spec.fisher, gen) if penalty.needs_fisher else None
        if fisher is not None:
            fishers[names[k]] = {"params": {n: p.detach().clone() for n, p in params.items()}, "fisher": fisher}
        try:
            penalty.consolidate(names[k], params, fisher)
        except FloatingPointError as exc:  # parameters blown up by the last steps
            raise RunError(f"{method}, seed {seed}: {exc} (lower --lambda or --lr)") from None
    if writer is not None:
        writer.close()
    summary = {
        "complete": True,
        "method": method,
        "penalty": METHODS[method],
        "lambda": spec.lam(method),
        "seed": seed,
        "games": names,
        "columns": names,
        "steps_per_game": spec.steps_per_task,
        "score_matrix": score_matrix,
        "eval_history": eval_history,
    }
    if logdir is not None:
        write_json(logdir / "summary.json", summary)
        if fishers:  # what the penalty was given, so that a test can recompute it independently
            torch.save(fishers, logdir / "fisher.pt")
    return summary


def paper_ordering(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's three claims, each with whether it holds with non-overlapping 95% intervals."""
    agents, cols = comparison["agents"], comparison["columns"]
    first, last = cols[0], cols[-1]

    def lo(s: dict[str, Any]) -> float:
        return s["mean"] - (s["ci95"] or 0.0)

    def hi(s: dict[str, Any]) -> float:
        return s["mean"] + (s["ci95"] or 0.0)

    claims: list[dict[str, Any]] = []
    if "ewc" in agents:
        ewc = agents["ewc"]["average_performance"]
        for other in ("sgd", "l2"):
            if other in agents:
                o = agents[other]["average_performance"]
                claims.append({"claim": f"average accuracy at the end: ewc > {other}", "holds": lo(ewc) > hi(o)})
    if "sgd" in agents and len(cols) > 1:
        matrix = agents["sgd"]["score_matrix"]
        after, end = matrix[0][0], matrix[-1][0]
        claims.append({"claim": f"sgd: {first} at the end < {first} after {first}", "holds": hi(end) < lo(after)})
    if "ewc" in agents and "l2" in agents and len(cols) > 1:
        ewc_last, l2_last = agents["ewc"]["final_score"][last], agents["l2"]["final_score"][last]
        claims.append({"claim": f"{last} (the last task) at the end: l2 < ewc", "holds": hi(l2_last) < lo(ewc_last)})
    return claims


def _pm(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f}" + (f" ± {stat['ci95']:.3f}" if stat["ci95"] is not None else " (n=1)")


def to_markdown(comparison: dict[str, Any]) -> str:
    """The toy comparison as markdown: accuracies, not normalised scores (hence not report.to_markdown)."""
    agents, cols, spec = comparison["agents"], comparison["columns"], comparison["spec"]
    n_seeds = sorted({len(a["seeds"]) for a in agents.values()})
    lams = ", ".join(f"{m} λ = {spec['lambdas'].get(m, 0):g}" for m in agents if METHODS[m] != "none")
    lines = [
        "# Permuted digits: SGD vs L2 vs EWC",
        "",
        f"{len(cols)} tasks (8×8 digits, one fixed pixel permutation each), {spec['steps_per_task']} SGD steps "
        f"per task (batch {spec['batch_size']}, lr {spec['lr']:g}), MLP 64-{spec['hidden']}-{spec['hidden']}-10; "
        f"{spec['fisher']} Fisher, normalised to mean 1; {lams or 'no penalty'}. Test-set accuracy, "
        f"mean ± 95% confidence half-width (Student t) over {'/'.join(map(str, n_seeds))} seed(s). "
        f"Forgetting: accuracy when the task's training ended minus accuracy at the end. "
        f"Wall time {comparison['wall_time_s']:.0f} s.",
        "",
        "| method | average accuracy at the end | mean forgetting | "
        + " | ".join(f"{c} at the end" for c in cols)
        + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for name, a in agents.items():
        lines.append(
            f"| {name} | {_pm(a['average_performance'])} | {_pm(a['mean_forgetting'])} | "
            + " | ".join(_pm(a["final_score"][c]) for c in cols)
            + " |"
        )
    lines += ["", "## The paper's ordering (non-overlapping 95% intervals)", ""]
    lines += [f"- {'holds' if c['holds'] else 'does NOT hold'}: {c['claim']}" for c in comparison["ordering"]]
    lines += ["", "## Score matrices", "", "Row k: every task's accuracy when training task k ended."]
    for name, a in agents.items():
        lines += ["", f"**{name}**", "", "| after | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for k, row in enumerate(a["score_matrix"]):
            lines.append(f"| {cols[k]} | " + " | ".join(_pm(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    """Figure 2A's layout: one panel per task (stacked), its accuracy over training, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(next(iter(runs.values())).values()))
    names, steps = first["columns"], first["steps_per_game"]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.0 + 1.3 * len(names)), sharex=True, squeeze=False)
    colors = {"sgd": "tab:blue", "l2": "tab:green", "ewc": "tab:red", "online-ewc": "tab:orange"}
    for j, name in enumerate(names):
        ax = axes[j][0]
        for method, seeds in runs.items():
            by_step: dict[int, list[float]] = {}
            for summary in seeds.values():
                for e in summary["eval_history"]:
                    if e["game"] == name:
                        by_step.setdefault(e["step"], []).append(e["mean"])
            xs = sorted(by_step)
            ax.plot(
                xs,
                [sum(by_step[x]) / len(by_step[x]) for x in xs],
                color=colors.get(method),
                lw=1.4,
                label=f"{method} ({len(seeds)} seeds)",
            )
            ax.fill_between(
                xs,
                [min(by_step[x]) for x in xs],
                [max(by_step[x]) for x in xs],
                color=colors.get(method),
                alpha=0.15,
                linewidth=0,
            )
        for k in range(1, len(names)):
            ax.axvline(k * steps, color="grey", lw=0.6, ls="--")
        ax.axvspan(j * steps, (j + 1) * steps, color="grey", alpha=0.08, linewidth=0)
        ax.set_xlim(0, len(names) * steps)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"{name}\naccuracy", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("training step (shaded: the panel's own task)")
    fig.suptitle(
        "Permuted digits: accuracy of each task over training (line: mean over seeds; band: min-max)", fontsize=9
    )
    fig.legend(
        *axes[0][0].get_legend_handles_labels(),
        loc="upper center",
        ncol=len(runs),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.97),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(spec: ToySpec, logdir: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every (method, seed) of ``spec`` in ``logdir``, then comparison.{json,md,png}; returns the comparison."""
    spec.validate()
    load_digits(0)  # scikit-learn missing: a UsageError before anything is written
    start = time.perf_counter()
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for method in spec.methods:
        for seed in spec.seeds:
            rundir = logdir / method / f"seed-{seed}"
            rundir.mkdir(parents=True, exist_ok=True)
            runs.setdefault(method, {})[seed] = run_one(spec, method, seed, rundir)
            if progress is not None:
                progress(
                    f"{method} seed {seed}: final accuracies "
                    + " ".join(f"{v:.2f}" for v in runs[method][seed]["score_matrix"][-1])
                )
    comparison = aggregate(runs)
    comparison["agents"] = {m: comparison["agents"][m] for m in spec.methods}  # the order asked for
    comparison["spec"] = {**asdict(spec), "lambdas": {m: spec.lam(m) for m in spec.methods}}
    comparison["ordering"] = paper_ordering(comparison)
    comparison["wall_time_s"] = time.perf_counter() - start
    write_json(logdir / "comparison.json", comparison)
    (logdir / "comparison.md").write_text(to_markdown(comparison))
    plot(runs, logdir / "comparison.png")
    return comparison
