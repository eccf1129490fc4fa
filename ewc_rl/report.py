"""Aggregating runs: comparison.json, comparison.md and comparison.png from the runs' summary.json files.

summary.json is the single source: nothing here reads TensorBoard events, so ``ewc-rl report`` reproduces
``comparison.json`` exactly from the run directories.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

from ewc_rl.errors import UsageError
from ewc_rl.metrics import (
    PLASTICITY_MIN_REFERENCE,
    RETENTION_MIN_SCORE,
    References,
    fresh_score,
    metric_matrix,
    summarize,
)
from ewc_rl.schedule import Budget, steps_of
from ewc_rl.scores import normalize
from ewc_rl.target import Target
from ewc_rl.target import check as check_target
from ewc_rl.target import to_markdown as target_markdown
from ewc_rl.tblog import write_json

SCALARS = ("average_performance", "mean_forgetting", "clipped_normalized_sum", "final_game_score", "retention")


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (integer) degrees of freedom.

    The closed form of Abramowitz & Stegun 26.7.3-4 (a finite sum of powers of cos(theta), theta = atan(t/sqrt(df))):
    exact, where the normal approximation that was here before (1.96 for df > 30) was 3-4% too narrow at df 31-60.
    scipy would do it, but it is not a dependency.
    """
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2 == 0:  # sin(theta) (1 + 1/2 c2 + 1.3/(2.4) c2^2 + ... + 1.3...(df-3)/(2.4...(df-2)) c2^(df/2-1))
        for k in range(2, df - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    for k in range(3, df - 1, 2):  # 2/pi (theta + sin cos (1 + 2/3 c2 + ... + 2.4...(df-3)/(3.5...(df-2)) c2^...))
        term *= c2 * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the half-width factor of a two-sided 95% interval: bisection on the exact probability."""
    lo, hi = 0.0, 64.0  # t_{0.975, 1} = 12.71 is the largest
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central_probability(mid, df) < 0.95 else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and 95% confidence half-width (Student t) over seeds; ``ci95`` is None for one seed."""
    known = [v for v in values if v is not None]
    n = len(known)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(known) / n
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in known) / (n - 1))
    return {"mean": mean, "ci95": t_quantile_975(n - 1) * sd / math.sqrt(n), "n": n}


def load_runs(logdir: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Complete runs under ``logdir/<agent>/seed-<s>/summary.json``, by agent and seed."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(logdir.glob("*/seed-*/summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("complete"):
            runs.setdefault(path.parent.parent.name, {})[int(path.parent.name.removeprefix("seed-"))] = summary
    return runs


def load_references(
    refdirs: Sequence[Path], budget: Budget | None = None, games: Collection[str] | None = None, required: bool = True
) -> References:
    """Single-game runs under ``refdirs`` (any depth), by game and seed: the baselines of forward transfer and
    plasticity. Of two runs with one game and seed, the first path in sorted order (of the first directory) is used.

    Only runs of ``games`` (the comparison's) are kept. With ``budget`` (the comparison's ``steps_per_game``), a run
    that trained its game for another number of steps, or an unknown one, is not a reference (plasticity would
    divide unlike things); when that leaves one of ``games`` with none, it is an error.
    """
    refs: References = {}
    other: dict[str, set[str]] = {}
    for refdir in refdirs:
        for path in sorted(refdir.glob("**/summary.json")):
            summary = json.loads(path.read_text())
            if not summary.get("complete") or len(set(summary["games"])) != 1:
                continue
            game, steps = summary["games"][0], summary.get("steps_per_game")
            if games is not None and game not in games:
                continue
            if budget is not None and (steps is None or steps_of(steps, game) != steps_of(budget, game)):
                other.setdefault(game, set()).add(
                    "an unknown number of" if steps is None else str(steps_of(steps, game))
                )
                continue
            refs.setdefault(game, {}).setdefault(summary.get("seed"), summary)
    where = ", ".join(str(d) for d in refdirs)
    for game, steps_seen in other.items():
        if game not in refs:
            trained = " or ".join(sorted(steps_seen))
            raise UsageError(
                f"no reference for {game} under {where}: its single-game runs trained {trained} agent steps, "
                f"the comparison's segments of it {steps_of(cast(Budget, budget), game)}"
            )
    if not refs and required:
        raise UsageError(f"no finished single-game runs under {where} to use as references")
    return refs


def _runs_budget(logdir: Path, runs: dict[str, dict[int, dict[str, Any]]]) -> Budget | None:
    """The runs' common ``steps_per_game`` (a comparison's runs share one); references need it to be one."""
    budgets = {
        json.dumps(s.get("steps_per_game"), sort_keys=True) for by_seed in runs.values() for s in by_seed.values()
    }
    if len(budgets) > 1:
        raise UsageError(
            f"the runs under {logdir} differ in --steps-per-game ({', '.join(sorted(budgets))}): plasticity pairs a "
            "segment with single-game runs of its budget, so report each budget from its own directory"
        )
    return cast(Budget | None, json.loads(budgets.pop())) if budgets else None


def fresh_dir(logdir: Path) -> Path:
    """Where ``compare --fresh-references`` puts its single-game runs: ``<logdir>/fresh/<game>/seed-<s>/``."""
    return logdir / "fresh"


def aggregate(runs: dict[str, dict[int, dict[str, Any]]], references: References | None = None) -> dict[str, Any]:
    """Per agent: every metric as mean +- 95% CI over seeds (the content of comparison.json)."""
    if not runs:
        raise UsageError("no finished runs (summary.json with complete=true) under that directory")
    first = next(iter(next(iter(runs.values())).values()))
    columns = first["columns"]
    out: dict[str, Any] = {
        "games": first["games"],
        "columns": columns,
        "steps_per_game": first["steps_per_game"],
        "agents": {},
    }
    for agent in sorted(runs):
        seeds = sorted(runs[agent])
        metrics = [summarize(runs[agent][s], references) for s in seeds]
        entry: dict[str, Any] = {
            "seeds": seeds,
            "units": metrics[0]["units"],
            "excluded_from_means": metrics[0]["excluded_from_means"],
            "resumed_without_replay": [s for s in seeds if _resumed_without_replay(runs[agent][s])],
            "minutes_per_run": mean_ci([_minutes(runs[agent][s]) for s in seeds]),
        }
        scalars = SCALARS + (("mean_plasticity",) if references else ())
        for key in scalars:
            entry[key] = mean_ci([m[key] for m in metrics])
        # each seed's value too: `ewc-rl pool` pools them over comparisons (JSON keys are strings)
        entry["per_seed"] = {key: {str(s): m[key] for s, m in zip(seeds, metrics, strict=True)} for key in scalars}
        per_game = ("forgetting", "retention_per_game", "final_score")
        for key in per_game + (("forward_transfer", "plasticity") if references else ()):
            entry[key] = {g: mean_ci([m[key].get(g) for m in metrics]) for g in columns}
        matrices = [metric_matrix(runs[agent][s]["score_matrix"], columns)[0] for s in seeds]
        entry["score_matrix"] = [
            [mean_ci([m[k][j] for m in matrices]) for j in range(len(columns))]
            for k in range(min(len(m) for m in matrices))
        ]
        out["agents"][agent] = entry
    if references:  # each game's fresh runs, whatever the pairing: what the footnote of the plasticity table shows
        out["fresh_references"] = {g: _fresh_stats(references.get(g, {})) for g in columns}
    summaries = [s for by_seed in runs.values() for s in by_seed.values()]
    summaries += [s for by_seed in (references or {}).values() for s in by_seed.values()]
    if any("provenance" in s for s in summaries):  # runs of ewc-rl train (not the toy's, nor older ones alone)
        out["provenance"] = _provenance(summaries)
    return out


def _provenance(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The commits and CPU models that made the runs, every session of each (summary.json's ``provenance`` and
    ``resumes``): runs repeat bit for bit only with one of each. ``unrecorded``: runs whose first session has no
    commit (made before the record existed, or by an installed wheel, whose version ``versions`` gives)."""
    sessions = [rec for s in summaries for rec in (s.get("provenance") or {}, *s.get("resumes", []))]
    return {
        "commits": sorted({r["commit"] for r in sessions if r.get("commit")}),
        "cpus": sorted({r["cpu"] for r in sessions if r.get("cpu")}),
        "dirty": any(r.get("dirty") for r in sessions),
        "unrecorded": sum(not (s.get("provenance") or {}).get("commit") for s in summaries),
    }


def _provenance_notes(comparison: dict[str, Any]) -> list[str]:
    """A line when the runs' code or CPU differ: their numbers then differ by more than the seeds' spread says."""
    made = comparison.get("provenance", {})
    parts = []
    if len(made.get("commits", [])) > 1:
        parts.append(f"{len(made['commits'])} commits of ewc_rl ({', '.join(c[:8] for c in made['commits'])})")
    if made.get("dirty"):
        parts.append("code with uncommitted changes")
    if len(made.get("cpus", [])) > 1:
        parts.append(f"{len(made['cpus'])} CPU models ({'; '.join(made['cpus'])})")
    if made.get("unrecorded") and made.get("commits"):
        parts.append(f"{made['unrecorded']} run(s) whose commit is not recorded (older runs, or an installed wheel)")
    if not parts:
        return []
    return [
        "",
        f"These runs were made with {' and '.join(parts)} (`provenance` in summary.json and comparison.json): runs "
        "repeat bit for bit only with one commit and one CPU model.",
    ]


def _minutes(summary: dict[str, Any]) -> float | None:
    wall = summary.get("wall_time_s")
    return None if wall is None else wall / 60


def _resumed_without_replay(summary: dict[str, Any]) -> bool:
    """Whether a resume of this run went on without replay transitions its checkpoint did not hold (or uncounted)."""
    return any(r.get("replay_lost") != 0 for r in summary.get("resumes", []))


def _resume_notes(comparison: dict[str, Any]) -> list[str]:
    """The runs whose learning an interruption changed (the fresh references' too): resumed without replay memory."""
    named = {**comparison["agents"], **{f"fresh {g}": f for g, f in comparison.get("fresh_references", {}).items()}}
    runs = [
        f"{name} ({_seed_list(a['resumed_without_replay'])})"
        for name, a in named.items()
        if a.get("resumed_without_replay")
    ]
    if not runs:
        return []
    return [
        "",
        "Resumed without replay memory that the rest of the run would have used (the checkpoint did not hold it, so "
        "learning went on without it; `resumes` in summary.json; `--checkpoint-replay` avoids it): "
        f"{'; '.join(runs)}.",
    ]


def _fresh_stats(by_seed: dict[int | None, dict[str, Any]]) -> dict[str, Any]:
    """One game's fresh runs: their normalised score over seeds, and the seeds where they did not learn the game."""
    seeds = sorted(by_seed, key=lambda s: (s is None, s or 0))
    scores = {s: fresh_score(by_seed[s]) for s in seeds}
    unlearned = [s for s, v in scores.items() if v is not None and v <= PLASTICITY_MIN_REFERENCE]
    lost = [s for s in seeds if _resumed_without_replay(by_seed[s])]
    return {
        **mean_ci(list(scores.values())),
        "seeds": seeds,
        "unlearned_seeds": unlearned,
        "resumed_without_replay": lost,
    }


def _pm(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    if stat["ci95"] is None:
        return f"{stat['mean']:.3f} (n=1)"
    return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"


def _exclusions(agents: dict[str, Any]) -> list[str]:
    """The sentence that says which games the means over games leave out (raw returns beside normalised scores)."""
    left_out = sorted({g for a in agents.values() for g in a.get("excluded_from_means", [])})
    if not left_out:
        return []
    return [
        "",
        f"Average performance and mean forgetting are means over the normalised games only: "
        f"{', '.join(left_out)} (no reference score, raw returns in other units) "
        f"{'is' if len(left_out) == 1 else 'are'} left out of them.",
    ]


def ranking(comparison: dict[str, Any]) -> list[str]:
    """Runs ordered by mean average performance (desc), then mean forgetting (asc); missing values last."""

    def key(name: str) -> tuple[float, float]:
        a = comparison["agents"][name]
        perf, forget = a["average_performance"]["mean"], a["mean_forgetting"]["mean"]
        return (-perf if perf is not None else math.inf, forget if forget is not None else math.inf)

    return sorted(comparison["agents"], key=key)


def _plastic_cell(agent: dict[str, Any]) -> str:
    return f" {_pm(agent['mean_plasticity'])} |" if "mean_plasticity" in agent else ""


def _seed_list(seeds: list[int | None]) -> str:
    named = ", ".join("?" if s is None else str(s) for s in seeds)
    return f"seed{'s' * (len(seeds) != 1)} {named}" if seeds else "no run"


def _plasticity_notes(comparison: dict[str, Any]) -> list[str]:
    """What the plasticity table divides by: each game's fresh runs, and the games where they did not learn."""
    fresh = comparison.get("fresh_references", {})
    scores = "; ".join(f"{g} {_pm(f).removesuffix(' (n=1)')} ({_seed_list(f['seeds'])})" for g, f in fresh.items())
    unlearned = [f"{g} ({_seed_list(f['unlearned_seeds'])})" for g, f in fresh.items() if f["unlearned_seeds"]]
    missing = [g for g, f in fresh.items() if f["mean"] is None]
    note = (
        "Plasticity: a game's normalised score when its first training segment ended divided by that of a fresh "
        "network trained on the game alone (same steps, settings and seed; the mean over the fresh runs' seeds when "
        "that seed has none): 1 = learned as well as from scratch. Mean plasticity: over the games with a value. "
        f"Fresh runs' normalised score: {scores or 'none'}."
    )
    if unlearned:
        note += (
            f" No ratio (`-`, or fewer seeds in n) where a fresh run did not learn the game (normalised score ≤ "
            f"{PLASTICITY_MIN_REFERENCE:g}: a ratio to it would be noise): {'; '.join(unlearned)}."
        )
    if missing:
        note += f" `-` for {', '.join(missing)}: no fresh run, or no normalised score."
    return ["", note]


def to_markdown(comparison: dict[str, Any]) -> str:
    agents = comparison["agents"]
    cols = comparison["columns"]
    plastic = (" mean plasticity |", "---|") if "mean_plasticity" in next(iter(agents.values())) else ("", "")
    seeds = sorted({len(a["seeds"]) for a in agents.values()})
    lines = [
        "# Comparison",
        "",
        f"Sequence: {' → '.join(comparison['games'])}, {_budget_words(comparison['steps_per_game'])}. "
        f"Mean ± 95% confidence half-width (Student t) over {'/'.join(map(str, seeds))} seed(s). "
        "Scores are normalised (0 = random policy, 1 = reference: human for Atari, a single-game agent for "
        "MinAtar; ewc_rl/scores.py) where a reference exists, raw otherwise. "
        "Forgetting: score when the game's last training segment ended minus score at the end (higher = "
        "more forgotten). Retention: the mean over the earlier games (all but the one trained last) of the final "
        "normalised score over the one when the game's last training segment ended, each clipped to [0, 1] "
        f"(1 = all kept), games below {RETENTION_MIN_SCORE:g} then or without a normalised score left out. "
        "Definitions: docs/metrics.md.",
        *_exclusions(agents),
        *_resume_notes(comparison),
        *_provenance_notes(comparison),
        "",
        "| agent | average performance | mean forgetting | clipped normalised sum | final game | retention |"
        + plastic[0],
        "|---|---|---|---|---|---|" + plastic[1],
    ]
    for name, a in agents.items():
        lines.append(
            f"| {name} | {_pm(a['average_performance'])} | {_pm(a['mean_forgetting'])} | "
            f"{_pm(a['clipped_normalized_sum'])} | {_pm(a['final_game_score'])} | {_pm(a['retention'])} |"
            + _plastic_cell(a)
        )
    from ewc_rl import tradeoff  # it imports this module's plotting helpers

    lines += ["", tradeoff.caption(comparison)]
    lines += [
        "",
        "## Ranking",
        "",
        "By mean average performance (higher first), then mean forgetting (lower first); for a --grid "
        "sweep, each row is one setting. Minutes per run: wall time as the runs were made (runs beside each other "
        "and other jobs slow them alike), mean over seeds: compare it only within one comparison.",
        "",
        "| rank | run | average performance | mean forgetting | retention |" + plastic[0] + " minutes per run |",
        "|---|---|---|---|---|" + plastic[1] + "---|",
    ]
    for rank, name in enumerate(ranking(comparison), 1):
        a = agents[name]
        minutes = a.get("minutes_per_run", {}).get("mean")
        lines.append(
            f"| {rank} | {name} | {_pm(a['average_performance'])} | {_pm(a['mean_forgetting'])} | "
            f"{_pm(a['retention'])} |" + _plastic_cell(a) + (" - |" if minutes is None else f" {minutes:.1f} |")
        )
    if "target" in comparison:
        lines += ["", *target_markdown(comparison["target"], comparison, ranking(comparison))]
    tables = [
        ("forgetting", "Forgetting per game"),
        ("retention_per_game", "Retention per game"),
        ("final_score", "Final score per game"),
        ("forward_transfer", "Forward transfer per game (vs single-game reference runs)"),
        ("plasticity", "Plasticity per game (vs fresh single-game runs)"),
    ]
    for key, title in tables:
        if key not in next(iter(agents.values())):
            continue
        lines += ["", f"## {title}", "", "| agent | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, a in agents.items():
            lines.append(f"| {name} | " + " | ".join(_pm(a[key][g]) for g in cols) + " |")
        if key == "plasticity":
            lines += _plasticity_notes(comparison)
        if key == "retention_per_game":
            lines += [
                "",
                "Final normalised score over the one when the game's last training segment ended, clipped to [0, 1]. "
                f"`-`: the game trained last, or below {RETENTION_MIN_SCORE:g} when its segment ended in every seed "
                "(nothing learned, nothing to keep; such a seed does not count in n), or no normalised score.",
            ]
    lines += [
        "",
        "## Score matrices",
        "",
        "Row k: every game's score when training segment k ended (- = not evaluated yet); mean ± 95% CI over seeds.",
    ]
    for name, a in agents.items():
        lines += ["", f"**{name}**", "", "| after segment | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for k, row in enumerate(a["score_matrix"]):
            lines.append(f"| {k + 1}: {comparison['games'][k]} | " + " | ".join(_pm(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    """Score of each game over global steps: one line per agent (mean over seeds), band = min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    first = next(iter(next(iter(runs.values())).values()))
    columns, games, budget = first["columns"], first["games"], first["steps_per_game"]
    ends = list(itertools.accumulate(budget if isinstance(budget, int) else budget[g] for g in games))
    starts = [0, *ends[:-1]]
    width = max(4.2 * len(columns), 6.0)
    fig, axes = plt.subplots(1, len(columns), figsize=(width, 3.8), squeeze=False, sharex=True, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, game in enumerate(columns):
        ax = axes[0][j]
        normalised = normalize(game, 0.0) is not None
        for i, agent in enumerate(sorted(runs)):
            by_step: dict[int, list[float]] = {}
            for summary in runs[agent].values():
                for e in summary["eval_history"]:
                    if e["game"] == game:
                        value = normalize(game, e["mean"]) if normalised else e["mean"]  # today's table
                        if value is not None:
                            by_step.setdefault(e["step"], []).append(value)
            if not by_step:
                continue
            xs = sorted(by_step)
            mean = [sum(by_step[x]) / len(by_step[x]) for x in xs]
            color = colors[i % len(colors)]
            ax.plot(
                xs,
                mean,
                marker="o",
                ms=3,
                color=color,
                ls=("-", "--", ":", "-.")[i % 4],
                label=f"{agent} ({len(runs[agent])} seeds)",
            )
            ax.fill_between(
                xs, [min(by_step[x]) for x in xs], [max(by_step[x]) for x in xs], color=color, alpha=0.2, linewidth=0
            )
        for g, start, end in zip(games, starts, ends, strict=True):
            ax.axvline(start, color="grey", lw=0.8, ls="--")
            if g == game:  # where this panel's game is trained
                ax.axvspan(start, end, color="grey", alpha=0.08, linewidth=0)
            ax.text(
                (start + end) / 2,
                1.0,
                _short(g),
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                ha="center",
                va="bottom",
                color="grey",
            )
        ax.set_xlim(0, ends[-1])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _steps(x)))
        ax.set_title(_short(game), pad=14)
        ax.set_xlabel("global agent step")
        ax.set_ylabel("normalised score" if normalised else "return (raw)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    save_titled(
        fig,
        "Evaluation score per game (line: mean over seeds; band: min-max over seeds; "
        "shaded: the game's own training; labels: the game trained in each segment)",
        width,
        path,
        dpi=110,
    )


def save_titled(fig: Any, title: str, width: float, path: Path, dpi: int = 100) -> None:
    """Give ``fig`` its title wrapped to the figure's ``width`` in inches, save it to ``path`` and close it.

    9-point text fits about 14 characters per inch, 12 with a margin: an unwrapped title ran off two panels.
    """
    import matplotlib.pyplot as plt

    fig.suptitle(textwrap.fill(title, int(12 * width)), fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _short(game: str) -> str:
    return game.removeprefix("MinAtar/")


def _steps(x: float) -> str:
    """Axis label for a step count: 0, 50k, 1.5M."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def write_report(logdir: Path, reference_dirs: Sequence[Path] = (), target: Target | None = None) -> dict[str, Path]:
    """Write comparison.json, .md and .png into ``logdir``, tradeoff.png when there are fresh references, and
    switches.md/.png where runs measured the plasticity diagnostics.

    The references are the single-game runs under ``reference_dirs`` (those as long as the runs' segments), or else
    those of ``compare --fresh-references`` when ``<logdir>/fresh`` exists, so that ``ewc-rl report LOGDIR``
    recomputes what ``compare`` wrote.
    With ``target``, comparison.json and .md also say which agents meet it (ewc_rl/target.py).
    """
    if not logdir.is_dir():
        raise UsageError(f"no such directory: {logdir}")
    for refdir in reference_dirs:
        if not refdir.is_dir():
            raise UsageError(f"--reference: no such directory: {refdir}")
    runs = load_runs(logdir)
    games = {g for by_seed in runs.values() for summary in by_seed.values() for g in summary["games"]}
    references: References | None = None
    if reference_dirs:
        references = load_references(reference_dirs, _runs_budget(logdir, runs), games)
    elif fresh_dir(logdir).is_dir():
        references = load_references([fresh_dir(logdir)], _runs_budget(logdir, runs), games, required=False)
    comparison = aggregate(runs, references or None)
    if target is not None:  # checked before anything is written: a bad --target leaves the directory as it was
        comparison["target"] = check_target(comparison, target)
    paths = {"json": logdir / "comparison.json", "md": logdir / "comparison.md", "png": logdir / "comparison.png"}
    write_json(paths["json"], comparison)
    paths["md"].write_text(to_markdown(comparison))
    plot(runs, paths["png"])
    from ewc_rl import switches, tradeoff  # they import this module's statistics and plotting helpers

    paths.update(tradeoff.write(comparison, logdir))
    paths.update(switches.write(runs, logdir))
    return paths


# -- one run as text (what `ewc-rl train` prints at the end) ---------------------------------------------


def _budget_words(budget: int | dict[str, int]) -> str:
    """summary.json's steps_per_game in words: one number for every game, or each game's own."""
    if isinstance(budget, int):
        return f"{budget} agent steps per game"
    return "agent steps per game: " + ", ".join(f"{g} {n}" for g, n in budget.items())


def fmt(x: float | None, digits: int = 1) -> str:
    """A score for a table: ``-`` when not evaluated."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_metrics(summary: dict[str, Any]) -> str:
    """The run's continual-learning metrics as a plain-text table."""
    m = summary["metrics"]
    units = m["units"]
    width = max(16, *(len(g) + 2 for g in summary["columns"]))
    lines = [f"{'game':<{width}}{'unit':>12}{'final':>10}{'forgetting':>12}"]
    for game in summary["columns"]:
        lines.append(
            f"{game:<{width}}{units[game]:>12}{fmt(m['final_score'][game], 3):>10}{fmt(m['forgetting'][game], 3):>12}"
        )
    lines.append(
        f"average performance: {fmt(m['average_performance'], 3)}   "
        f"mean forgetting: {fmt(m['mean_forgetting'], 3)}   "
        f"clipped normalised sum: {fmt(m['clipped_normalized_sum'], 3)}"
    )
    if m.get("excluded_from_means"):
        left_out = ", ".join(m["excluded_from_means"])
        lines.append(f"(means over the normalised games; left out, in raw returns: {left_out})")
    return "\n".join(lines)


def format_score_matrix(summary: dict[str, Any]) -> str:
    """The score matrix as a plain-text table (rows: after segment k; columns: games)."""
    cols = summary["columns"]
    width = max(8, *(len(c) for c in cols))
    labels = [f"{k + 1}: {summary['games'][k]}" for k in range(len(summary["score_matrix"]))]
    first = max(22, *(len(x) + 2 for x in labels))
    lines = ["after segment".ljust(first) + "".join(c.rjust(width + 2) for c in cols)]
    for label, row in zip(labels, summary["score_matrix"], strict=True):
        lines.append(label.ljust(first) + "".join(fmt(v).rjust(width + 2) for v in row))
    return "\n".join(lines)
