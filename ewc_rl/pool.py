"""Pooling comparisons: one table over several sequences, each metric's mean and 95% interval over every
(sequence, seed) pair.

Issue 18 chooses settings and its recommended agent by a metric "averaged over the development sequences and seeds":
that needs each comparison's per-seed values, which comparison.json keeps (``per_seed``, written by ``ewc-rl
report``). The pooled mean is a plain mean over all pairs, not a mean of the sequences' means, so a sequence with
fewer finished seeds weighs less; the interval treats the pairs as independent (the sequences share their agent
files, so it is a description of the spread, not a test across sequences).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ewc_rl.errors import UsageError
from ewc_rl.report import _pm, mean_ci
from ewc_rl.tblog import write_json

METRICS = ("average_performance", "retention", "mean_plasticity", "mean_forgetting")
FILE = "pooled"  # pooled.json, pooled.md (and tradeoff.png) in --out


def load(dirs: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(directory name, comparison.json) of each comparison; each must hold per-seed values."""
    out = []
    for d in dirs:
        path = d / "comparison.json"
        if not path.is_file():
            raise UsageError(f"no comparison.json in {d}: run `ewc-rl report {d}` (or compare) first")
        comparison = json.loads(path.read_text())
        if any("per_seed" not in a for a in comparison["agents"].values()):
            raise UsageError(f"{path} has no per-seed values (written before pooling existed): run `ewc-rl report {d}`")
        out.append((str(d), comparison))
    names = [n for n, _ in out]
    if len(set(names)) < len(names):
        raise UsageError("a comparison directory is named twice")
    return out


def pool(comparisons: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per agent present in every comparison: each metric over all (sequence, seed) pairs, and per sequence."""
    sources = [name for name, _ in comparisons]
    everywhere = set.intersection(*(set(c["agents"]) for _, c in comparisons))
    if not everywhere:
        raise UsageError(f"no agent is in every comparison of {', '.join(sources)}: nothing to pool")
    left_out = {
        a: [name for name, c in comparisons if a not in c["agents"]]
        for a in sorted(set().union(*(c["agents"] for _, c in comparisons)) - everywhere)
    }
    agents: dict[str, Any] = {}
    for agent in sorted(everywhere):
        entry: dict[str, Any] = {"pairs": 0, "per_source": {}}
        for metric in METRICS:
            values: list[float | None] = []
            for name, c in comparisons:
                by_seed = c["agents"][agent]["per_seed"].get(metric)
                if by_seed is None:  # e.g. plasticity without references in one comparison: no pooled value
                    values = []
                    break
                values += by_seed.values()
                entry["per_source"].setdefault(name, {})[metric] = mean_ci(list(by_seed.values()))
            entry[metric] = mean_ci(values)
        entry["pairs"] = sum(len(c["agents"][agent]["seeds"]) for _, c in comparisons)
        agents[agent] = entry
    return {"sources": sources, "metrics": list(METRICS), "agents": agents, "left_out": left_out}


def to_markdown(pooled: dict[str, Any]) -> str:
    """The pooled table, ranked by average performance, then each sequence's average performance beside it."""
    sources = pooled["sources"]
    ranked = sorted(
        pooled["agents"].items(),
        key=lambda kv: (
            -(kv[1]["average_performance"]["mean"] if kv[1]["average_performance"]["mean"] is not None else -1e9)
        ),
    )
    lines = [
        "# Pooled comparison",
        "",
        f"Comparisons: {', '.join(f'`{s}`' for s in sources)}. Each metric: mean ± 95% confidence half-width "
        "(Student t) over every (comparison, seed) pair of the agent; definitions in docs/metrics.md. "
        "Ranked by pooled average performance.",
        "",
        "| rank | agent | average performance | retention | mean plasticity | mean forgetting | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, (name, a) in enumerate(ranked, 1):
        lines.append(
            f"| {rank} | {name} | {_pm(a['average_performance'])} | {_pm(a['retention'])} | "
            f"{_pm(a['mean_plasticity'])} | {_pm(a['mean_forgetting'])} | {a['pairs']} |"
        )
    lines += [
        "",
        "## Average performance per comparison",
        "",
        "| agent | " + " | ".join(f"`{s}`" for s in sources) + " |",
        "|---|" + "---|" * len(sources),
    ]
    for name, a in ranked:
        cells = [_pm(a["per_source"].get(s, {}).get("average_performance", {"mean": None})) for s in sources]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if pooled["left_out"]:
        lines += [
            "",
            "Not pooled (missing from a comparison): "
            + "; ".join(f"{a} (not in {', '.join(f'`{s}`' for s in where)})" for a, where in pooled["left_out"].items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write(dirs: list[Path], out: Path) -> dict[str, Path]:
    """pooled.json, pooled.md and the pooled trade-off figure in ``out``."""
    from ewc_rl import tradeoff

    resolved = {d.resolve() for d in dirs}
    if out.resolve() in resolved or (out / "compare.json").exists():
        raise UsageError(f"--out {out} is a comparison's directory (its tradeoff.png would be replaced); use another")
    pooled = pool(load(dirs))
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{FILE}.json", "md": out / f"{FILE}.md"}
    write_json(paths["json"], pooled)
    paths["md"].write_text(to_markdown(pooled))
    paths.update(tradeoff.write(pooled, out, over="comparisons and seeds"))
    return paths
