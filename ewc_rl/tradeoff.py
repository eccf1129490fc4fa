"""Retention against plasticity, one point per agent: the figure of issue 18's study.

An agent that keeps its earlier games and still learns new ones sits in the upper right; plain fine-tuning keeps
little (low retention), a strong anchor learns little (low plasticity). Both axes come from comparison.json
(``retention`` and ``mean_plasticity``, mean and 95% interval over seeds), so ``ewc-rl report`` redraws exactly what
``compare`` drew. Plasticity needs fresh single-game runs: without them there is no figure, and comparison.md says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ewc_rl.report import save_titled

# Issue 18's acceptance target: learn every game to 80% of a fresh network, keep 70% of every earlier game.
TARGET_PLASTICITY = 0.8
TARGET_RETENTION = 0.7
FILE = "tradeoff.png"


def available(comparison: dict[str, Any]) -> bool:
    """Whether the comparison has the plasticity metric (fresh references were found)."""
    return any("mean_plasticity" in a for a in comparison["agents"].values())


def points(comparison: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any], dict[str, Any]]], list[str]]:
    """(agent, plasticity stat, retention stat) for the agents with both means, and the names of the others."""
    placed, missing = [], []
    for name, a in comparison["agents"].items():
        x, y = a.get("mean_plasticity"), a["retention"]
        if x is not None and x["mean"] is not None and y["mean"] is not None:
            placed.append((name, x, y))
        else:
            missing.append(name)
    return placed, missing


def caption(comparison: dict[str, Any], over: str = "seeds") -> str:
    """comparison.md's line about the figure: what it shows, or why there is none."""
    if not available(comparison):
        return (
            f"No trade-off figure (`{FILE}`, retention against plasticity): plasticity needs fresh single-game runs "
            "(`ewc-rl compare --fresh-references`, or `ewc-rl report LOGDIR --reference DIR`)."
        )
    placed, missing = points(comparison)
    if not placed:
        return f"No trade-off figure (`{FILE}`): no agent has both a retention and a plasticity value."
    text = (
        f"Trade-off figure `{FILE}`: retention against mean plasticity, one point per agent (mean over {over}, bars: "
        f"95% intervals), dashed lines at issue 18's targets (plasticity {TARGET_PLASTICITY:g}, retention "
        f"{TARGET_RETENTION:g})."
    )
    return text + (f" No point for {', '.join(missing)}: no retention or no plasticity value." if missing else "")


# Above this many points their names, written beside them, overlap: the points get numbers, the names a key.
MAX_NAMED = 8


def labels(names: list[str]) -> tuple[list[str], str]:
    """The names without the prefix they all share up to a hyphen ("minatar-"), and that prefix: the part that
    tells the points apart is what the figure has room for."""
    if len(names) < 2:
        return names, ""
    common = names[0]
    for name in names[1:]:
        while not name.startswith(common):
            common = common[:-1]
    prefix = common[: common.rfind("-") + 1]
    if any(name == prefix or not name[len(prefix) :] for name in names):
        prefix = ""
    return [name[len(prefix) :] for name in names], prefix


def _limits(stats: list[dict[str, Any]], low: float, high: float) -> tuple[float, float]:
    """An axis range holding ``low``..``high`` and every mean with its interval bar, with a margin."""
    ends = [s["mean"] + sign * (s["ci95"] or 0.0) for s in stats for sign in (-1, 1)]
    return min(low, *ends) - 0.05, max(high, *ends) + 0.05


def plot(comparison: dict[str, Any], path: Path, over: str = "seeds") -> None:
    """x = mean plasticity, y = retention, one labelled point per agent with 95% interval bars on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed, _ = points(comparison)
    names, prefix = labels([name for name, _, _ in placed])
    numbered = len(placed) > MAX_NAMED
    width = 9.6 if numbered else 6.4
    fig, ax = plt.subplots(figsize=(width, 5.0), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    marks = []
    for i, ((_, x, y), name) in enumerate(zip(placed, names, strict=True)):
        mark = ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=x["ci95"],
            yerr=y["ci95"],
            fmt="os^Dv<>"[i % 7],
            color=colors[i % len(colors)],
            ms=6,
            capsize=3,
            label=f"{i + 1}  {name}" if numbered else None,
        )
        marks.append(mark)
        text = str(i + 1) if numbered else name
        ax.annotate(text, (x["mean"], y["mean"]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    targets = [
        ax.axvline(TARGET_PLASTICITY, color="grey", ls="--", lw=1, label=f"target: plasticity {TARGET_PLASTICITY:g}"),
        ax.axhline(TARGET_RETENTION, color="grey", ls="--", lw=1, label=f"target: retention {TARGET_RETENTION:g}"),
    ]
    ax.set_xlim(*_limits([x for _, x, _ in placed], 0.0, 1.1))  # the targets and 0..1 always in view, bars too
    ax.set_ylim(*_limits([y for _, _, y in placed], 0.0, 1.0))  # retention is clipped to [0, 1], its bars are not
    ax.set_xlabel("mean plasticity (1 = each game learned as well as from scratch)")
    ax.set_ylabel("retention (share of the earlier games' scores kept)")
    ax.grid(alpha=0.3)
    ax.legend(handles=targets, fontsize=8, loc="lower left")
    if numbered:
        fig.legend(
            handles=marks,
            fontsize=8,
            loc="outside right center",
            title=f"{prefix}…" if prefix else None,
            title_fontsize=8,
        )
    named = f"run labels without their common prefix '{prefix}'" if prefix else "run labels"
    save_titled(
        fig,
        f"Retention against plasticity: a point is one agent ({named}), its mean over {over}; bars: 95% intervals "
        f"over {over}; upper right of the dashed lines: issue 18's targets met on average",
        width,
        path,
        dpi=110,
    )


def write(comparison: dict[str, Any], logdir: Path, over: str = "seeds") -> dict[str, Path]:
    """tradeoff.png in ``logdir`` when there is a point to draw; otherwise none (an older one is removed)."""
    path = logdir / FILE
    if not available(comparison) or not points(comparison)[0]:
        path.unlink(missing_ok=True)  # a figure from earlier references would no longer match comparison.json
        return {}
    plot(comparison, path, over)
    return {"tradeoff_png": path}
