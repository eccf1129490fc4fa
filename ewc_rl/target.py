"""A continual-learning target checked per agent: keeps every earlier game, learns every game, beats a baseline.

Issue 18's study (docs/results/continual.md) asks of an agent three things at once, each read off a comparison's
numbers (comparison.json), so that `ewc-rl report --target` states whether they hold instead of a reader doing it
by eye:

- every earlier game (all but the one trained last) keeps at least ``min_retention`` of its end-of-segment score:
  the game's retention, mean over seeds (games never learned in any seed have none and are not counted: their
  plasticity is what fails; a part that no game decides is not met);
- every game is learned to at least ``min_plasticity`` of a fresh network's score on the same budget: the game's
  plasticity, mean over seeds (games no fresh run learned have none and are not counted; a game without a finished
  fresh run is an error, not a pass);
- the agent's average performance beats the baseline's with non-overlapping 95% intervals (lower bound above the
  baseline's upper bound; one seed, the agent's or the baseline's, has no interval, so it cannot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ewc_rl.errors import UsageError


@dataclass(frozen=True)
class Target:
    """The thresholds; issue 18's are the defaults."""

    baseline: str
    min_retention: float = 0.7
    min_plasticity: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.min_retention <= 1:
            raise UsageError(f"--min-retention must be in (0, 1], got {self.min_retention:g}")
        if not self.min_plasticity > 0:
            raise UsageError(f"--min-plasticity must be positive, got {self.min_plasticity:g}")


def _lowest(means: dict[str, float | None]) -> dict[str, Any] | None:
    known = {g: v for g, v in means.items() if v is not None}
    if not known:
        return None
    game = min(known, key=lambda g: known[g])
    return {"game": game, "value": known[game]}


def _all_at_least(means: dict[str, float | None], threshold: float) -> bool:
    """Every game with a value reaches ``threshold`` (up to float rounding of a ratio that is exactly it), and at
    least one has a value: a part no game can decide is not met."""
    known = [v for v in means.values() if v is not None]
    return bool(known) and all(v >= threshold - 1e-9 for v in known)


def _interval(stat: dict[str, Any]) -> tuple[float, float] | None:
    if stat["mean"] is None or stat["ci95"] is None:
        return None
    return stat["mean"] - stat["ci95"], stat["mean"] + stat["ci95"]


def check(comparison: dict[str, Any], target: Target) -> dict[str, Any]:
    """Per agent: each part of the target with the figure that decides it, and whether all three hold."""
    agents = comparison["agents"]
    if target.baseline not in agents:
        raise UsageError(f"--target: no agent '{target.baseline}' in this comparison (agents: {', '.join(agents)})")
    if any("plasticity" not in a for a in agents.values()):
        raise UsageError(
            "--target needs plasticity: fresh references (compare --fresh-references, or report --reference DIR)"
        )
    unknown = [g for g, f in comparison.get("fresh_references", {}).items() if f["mean"] is None]
    if unknown:  # a game without a fresh score would pass the plasticity part undecided
        raise UsageError(
            f"--target: no finished fresh reference with a normalised score for {', '.join(unknown)}, so plasticity "
            "cannot be decided (let compare --fresh-references finish, or report --reference DIR)"
        )
    last = comparison["games"][-1]
    earlier = [g for g in comparison["columns"] if g != last]
    base = _interval(agents[target.baseline]["average_performance"])
    out: dict[str, Any] = {
        "baseline": target.baseline,
        "min_retention": target.min_retention,
        "min_plasticity": target.min_plasticity,
        "agents": {},
    }
    for name, a in agents.items():
        retention = {g: a["retention_per_game"][g]["mean"] for g in earlier}
        plasticity = {g: a["plasticity"][g]["mean"] for g in comparison["columns"]}
        own = _interval(a["average_performance"])
        entry = {
            "retention_per_game": retention,
            "lowest_retention": _lowest(retention),
            "retention_met": _all_at_least(retention, target.min_retention),
            "plasticity_per_game": plasticity,
            "lowest_plasticity": _lowest(plasticity),
            "plasticity_met": _all_at_least(plasticity, target.min_plasticity),
            "beats_baseline": name != target.baseline and own is not None and base is not None and own[0] > base[1],
        }
        entry["met"] = entry["retention_met"] and entry["plasticity_met"] and entry["beats_baseline"]
        out["agents"][name] = entry
    return out


def _lowest_cell(lowest: dict[str, Any] | None, ok: bool) -> str:
    if lowest is None:
        return "- ✗ (no game decides it)"
    return f"{lowest['value']:.3f} ({lowest['game']}) {'✓' if ok else '✗'}"


def _bounds(stat: dict[str, Any]) -> str:
    bounds = _interval(stat)
    if bounds is None:
        return "-" if stat["mean"] is None else f"{stat['mean']:.3f} (n=1)"
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}"


def to_markdown(result: dict[str, Any], comparison: dict[str, Any], order: list[str]) -> list[str]:
    """The section of comparison.md: one row per agent (in ``order``), the deciding figure of each part."""
    base = result["baseline"]
    met = [name for name in order if result["agents"][name]["met"]]
    lines = [
        "## Target",
        "",
        f"Keeps at least {result['min_retention']:g} of every earlier game's end-of-segment score (retention per "
        f"game, mean over seeds), learns every game to at least {result['min_plasticity']:g} of a fresh network's "
        f"score (plasticity per game, mean over seeds), and beats {base}'s average performance with non-overlapping "
        "95% intervals. Each cell gives the figure that decides its part: the lowest game, or the interval "
        f"(mean ± 95% half-width) against {base}'s {_bounds(comparison['agents'][base]['average_performance'])}. "
        "Games without a retention (never learned) or plasticity (no fresh run learned them) are not counted.",
        "",
        f"**Met by: {', '.join(met) if met else 'no agent'}.**",
        "",
        "| agent | lowest retention | lowest plasticity | average performance | target |",
        "|---|---|---|---|---|",
    ]
    for name in order:
        e = result["agents"][name]
        perf = _bounds(comparison["agents"][name]["average_performance"])
        perf += " (baseline)" if name == base else (" ✓" if e["beats_baseline"] else " ✗")
        lines.append(
            f"| {name} | {_lowest_cell(e['lowest_retention'], e['retention_met'])} | "
            f"{_lowest_cell(e['lowest_plasticity'], e['plasticity_met'])} | {perf} | "
            f"{'**met**' if e['met'] else 'not met'} |"
        )
    return lines
