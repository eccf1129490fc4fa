"""The sequence of training segments: which game, for how many agent steps, in what order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """One stretch of training on one game."""

    index: int
    game: str
    steps: int
    cycle: int


def make_schedule(games: list[str], steps_per_game: int, cycles: int = 1) -> list[Segment]:
    """``games`` in order, repeated ``cycles`` times (revisits, as in the EWC paper)."""
    if not games:
        raise ValueError("a schedule needs at least one game")
    if steps_per_game < 1 or cycles < 1:
        raise ValueError("steps_per_game and cycles must be positive")
    order = [(c, g) for c in range(cycles) for g in games]
    return [Segment(i, g, steps_per_game, c) for i, (c, g) in enumerate(order)]


def unique_games(schedule: list[Segment]) -> list[str]:
    """Each game once, in order of first appearance: the columns of the score matrix."""
    return list(dict.fromkeys(s.game for s in schedule))
