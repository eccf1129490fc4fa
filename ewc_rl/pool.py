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
from ewc_rl.report import _pm, mean_ci, ranking
from ewc_rl.tblog import write_json

METRICS = ("average_performance", "retention", "mean_plasticity", "mean_forgetting")
FILE = "pooled"  # pooled.json, pooled.md (and tradeoff.png) in --out
OVER = "comparisons and seeds"  # what each pooled mean is taken over, in the figure and its caption


def load(dirs: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(directory name, comparison.json) of each comparison; each must hold per-seed, normalised values."""
    out = []
    seen: dict[Path, Path] = {}
    for d in dirs:
        if not d.is_dir():
            raise UsageError(f"no such directory: {d}")
        if d.resolve() in seen:
            raise UsageError(f"{d} is named twice (also as {seen[d.resolve()]}): its seeds would count twice")
        seen[d.resolve()] = d
        path = d / "comparison.json"
        if not path.is_file():
            raise UsageError(f"no comparison.json in {d}: run `ewc-rl report {d}` (or compare) first")
        try:
            comparison = json.loads(path.read_text())
            agents = comparison["agents"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a comparison.json ({exc})") from None
        if any("per_seed" not in a for a in agents.values()):
            raise UsageError(f"{path} has no per-seed values (written before pooling existed): run `ewc-rl report {d}`")
        raw = sorted({g for a in agents.values() for g, unit in a["units"].items() if unit != "normalized"})
        if raw:
            raise UsageError(f"{d} has games without a normalised score ({', '.join(raw)}): pooling would mix units")
        out.append((str(d), comparison))
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
        entry: dict[str, Any] = {
            "pairs": sum(len(c["agents"][agent]["seeds"]) for _, c in comparisons),
            "per_source": {},
        }
        for metric in METRICS:
            values: list[float | None] = []
            for name, c in comparisons:
                by_seed = c["agents"][agent]["per_seed"].get(metric)
                if by_seed is not None:
                    values += by_seed.values()
                    entry["per_source"].setdefault(name, {})[metric] = mean_ci(list(by_seed.values()))
            # plasticity exists only where a comparison had references: pooled over some comparisons it would
            # mean something else than over all of them, so it is pooled only when every one has it
            complete = all(metric in entry["per_source"].get(name, {}) for name in sources)
            entry[metric] = mean_ci(values if complete else [])
        agents[agent] = entry
    no_plasticity = [n for n, c in comparisons if not any("mean_plasticity" in a for a in c["agents"].values())]
    return {
        "sources": sources,
        "metrics": list(METRICS),
        "agents": agents,
        "left_out": left_out,
        "without_plasticity": no_plasticity,
    }


def _cell(stat: dict[str, Any], pairs: int) -> str:
    """mean ± interval, with its n where fewer pairs than the agent's have a value (e.g. retention when nothing
    was learned)."""
    text = _pm(stat)
    return f"{text} (n={stat['n']})" if stat["mean"] is not None and stat["n"] != pairs else text


def to_markdown(pooled: dict[str, Any]) -> str:
    """The pooled table, ranked by average performance, then each comparison's average performance beside it."""
    from ewc_rl import tradeoff

    sources = pooled["sources"]
    ranked = [(name, pooled["agents"][name]) for name in ranking(pooled)]
    lines = [
        "# Pooled comparison",
        "",
        f"Comparisons: {', '.join(f'`{s}`' for s in sources)}. Each metric: mean ± 95% confidence half-width "
        "(Student t) over every (comparison, seed) pair of the agent (`pairs`; n where fewer have a value); "
        "definitions in docs/metrics.md. Ranked by pooled average performance, then mean forgetting.",
    ]
    if pooled["without_plasticity"]:
        lines.append(
            "No pooled plasticity: "
            + ", ".join(f"`{s}`" for s in pooled["without_plasticity"])
            + " had no fresh references (`ewc-rl report DIR --reference ...` adds them)."
        )
    lines += [
        "",
        "| rank | agent | average performance | retention | mean plasticity | mean forgetting | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, (name, a) in enumerate(ranked, 1):
        cells = [_cell(a[m], a["pairs"]) for m in ("average_performance", "retention", "mean_plasticity")]
        lines.append(
            f"| {rank} | {name} | {' | '.join(cells)} | {_cell(a['mean_forgetting'], a['pairs'])} | {a['pairs']} |"
        )
    lines += ["", tradeoff.caption(pooled, over=OVER)]
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
    """pooled.json, pooled.md and, when some agent has plasticity, the pooled trade-off figure in ``out``."""
    from ewc_rl import tradeoff

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    if out.resolve() in {d.resolve() for d in dirs} or (out / "comparison.json").exists():
        raise UsageError(f"--out {out} is a comparison's directory (its tradeoff.png would be replaced); use another")
    pooled = pool(load(dirs))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    paths = {"json": out / f"{FILE}.json", "md": out / f"{FILE}.md"}
    write_json(paths["json"], pooled)
    paths["md"].write_text(to_markdown(pooled))
    paths.update(tradeoff.write(pooled, out, over=OVER))
    return paths
