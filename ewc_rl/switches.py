"""What the earlier games left in the network: the plasticity diagnostics at the start of every game, over seeds.

Each run's summary.json holds the diagnostics of ``ewc_rl/probe.py`` (``plasticity``: one record per measurement).
The record taken at a game's start (``when = "switch"``: its warm-up over, before its first update, on its own
probe states) shows the network that the earlier games handed over; at the first game it is a fresh network.
Comparing those records across the segments answers "what changed in the network between the start of the
first game and the start of the k-th" per layer, which is what issue 16 asks the docs to show. ``ewc-rl report``
writes the table into ``switches.md`` and the figure ``switches.png`` beside the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ewc_rl.report import mean_ci, save_titled

# Order of the rows and panels: what the literature reads first (dead units, feature rank) before the scales.
_ORDER = (
    "dormant/tau0.1/",
    "dormant/tau0/",
    "srank",
    "grad_norm",
    "q_abs",
    "action_gap",
    "policy_entropy",
    "param_norm/",
)
_SKIP = ("cost_share", "update_norm/", "policy_churn")  # undefined at a switch (no earlier measurement in the segment)


def _rank(key: str) -> tuple[int, str]:
    for i, prefix in enumerate(_ORDER):
        if key == prefix or key.startswith(prefix):
            return i, key
    return len(_ORDER), key


def switch_records(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Segment index -> the diagnostics measured at its start (the first ``switch`` record of that segment)."""
    out: dict[int, dict[str, Any]] = {}
    for record in summary.get("plasticity", []):
        if record.get("when") == "switch":
            out.setdefault(int(record["segment"]), record)
    return out


def aggregate(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per agent, per diagnostic, per segment start: mean and 95% interval over seeds (None where none measured)."""
    first = next(iter(next(iter(runs.values())).values()))
    games: list[str] = first["games"]
    agents: dict[str, Any] = {}
    for agent in sorted(runs):
        per_seed = [switch_records(runs[agent][s]) for s in sorted(runs[agent])]
        keys = sorted(
            {k for records in per_seed for r in records.values() for k in r if isinstance(r[k], (int, float))}
            - {"step", "segment"},
            key=_rank,
        )
        keys = [k for k in keys if not any(k == s or k.startswith(s) for s in _SKIP)]
        if not keys:
            continue
        agents[agent] = {
            "seeds": sorted(runs[agent]),
            "diagnostics": {
                key: [mean_ci([records.get(k, {}).get(key) for records in per_seed]) for k in range(len(games))]
                for key in keys
            },
        }
    return {"games": games, "agents": agents}


def _cell(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    digits = 0 if abs(stat["mean"]) >= 100 else 1 if abs(stat["mean"]) >= 10 else 3
    mean = f"{stat['mean']:.{digits}f}"
    return mean if stat["ci95"] is None else f"{mean} ± {stat['ci95']:.{digits}f}"


def to_markdown(table: dict[str, Any]) -> str:
    """One table per agent: a row per diagnostic, a column per game start."""
    games = table["games"]
    lines = [
        "# The network at the start of every game",
        "",
        "The plasticity diagnostics (docs/metrics.md) measured at each game's start, on that game's probe states, "
        "before its first update: the first column is a fresh network, the others what the earlier games left. "
        "Mean ± 95% confidence half-width (Student t) over seeds. Layers: `net.0` the first hidden layer, `head` the "
        "Q head (module paths).",
    ]
    header = [f"start of {k + 1}: {g.removeprefix('MinAtar/')}" for k, g in enumerate(games)]
    for agent, entry in table["agents"].items():
        lines += ["", f"**{agent}** (seeds {', '.join(map(str, entry['seeds']))})", ""]
        lines += ["| diagnostic | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
        for key, stats in entry["diagnostics"].items():
            lines.append(f"| `{key}` | " + " | ".join(_cell(s) for s in stats) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    """A panel per diagnostic, x = the game starting, a line per agent with 95% interval bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = [g.removeprefix("MinAtar/") for g in table["games"]]
    keys = sorted({k for e in table["agents"].values() for k in e["diagnostics"]}, key=_rank)
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, layout="constrained")
    xs = list(range(len(games)))
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, (agent, entry) in enumerate(table["agents"].items()):
            stats = entry["diagnostics"].get(key)
            if stats is None:
                continue
            points = [(x, s["mean"], s["ci95"] or 0.0) for x, s in zip(xs, stats, strict=True) if s["mean"] is not None]
            if not points:
                continue
            offset = (i - (len(table["agents"]) - 1) / 2) * 0.03  # bars side by side, not on top of each other
            ax.errorbar(
                [x + offset for x, _, _ in points],
                [m for _, m, _ in points],
                yerr=[c for _, _, c in points],
                marker="o",
                ms=3,
                capsize=2,
                ls=("-", "--", ":", "-.")[i % 4],
                label=agent,
            )
        ax.set_title(key, fontsize=9)
        ax.set_xticks(xs, [f"{k + 1}: {g}" for k, g in enumerate(games)], fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    save_titled(
        fig,
        "Plasticity diagnostics at the start of each game (before its first update, on its own probe states); "
        "mean over seeds, bars: 95% interval",
        3.6 * cols,
        path,
    )


def write(runs: dict[str, dict[int, dict[str, Any]]], logdir: Path) -> dict[str, Path]:
    """switches.md and switches.png in ``logdir``; nothing when no run measured the diagnostics."""
    table = aggregate(runs)
    if not table["agents"]:
        return {}
    paths = {"switches_md": logdir / "switches.md", "switches_png": logdir / "switches.png"}
    paths["switches_md"].write_text(to_markdown(table))
    plot(table, paths["switches_png"])
    return paths
