"""The sequence of training segments: which game, for how many agent steps, in what order.

``--games Pong,Breakout`` gives the order directly. ``--games random10`` draws 10 games from a named
pool (``--pool``, or the agent file's ``schedule.pool``) with a seeded generator, so the same seed always
gives the same games and order. With ``--cycles N`` every cycle visits each drawn game once: the first in
the order drawn, each later cycle in a fresh random order (revisits, as in Kirkpatrick et al. 2017; the
paper says only "random order with revisits", so the one-visit-per-cycle structure is our choice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ewc_rl.errors import UsageError

# The 19 games on which DQN reaches human level that Kirkpatrick et al. (2017) draw their 10 from, as read
# off their supplement's figure S3 (the reading is uncertain: see REFERENCE.md section 1).
POOLS: dict[str, tuple[str, ...]] = {
    "kirkpatrick2017": (
        "CrazyClimber",
        "Riverraid",
        "Jamesbond",
        "Breakout",
        "Gopher",
        "Kangaroo",
        "KungFuMaster",
        "FishingDerby",
        "Enduro",
        "Pong",
        "StarGunner",
        "DemonAttack",
        "Boxing",
        "Asterix",
        "RoadRunner",
        "Defender",
        "Freeway",
        "Krull",
        "SpaceInvaders",
    ),
}
_RANDOM = re.compile(r"^random(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Segment:
    """One stretch of training on one game."""

    index: int
    game: str
    steps: int
    cycle: int


# Agent steps per visit: one number for every game, or a number per game (games differ in how long they take to
# learn; a visit of a game always has that game's budget).
Budget = int | dict[str, int]


def budget_for(games: list[str], steps: list[int]) -> Budget:
    """``--steps-per-game``'s values for ``--games``: one for every game, or one per entry of ``--games`` (a game
    listed twice has one budget). Uniform values come back as one number, so such a run is the same as before."""
    if any(n < 1 for n in steps):
        raise UsageError(f"--steps-per-game must be positive, got {','.join(map(str, steps))}")
    if len(steps) == 1:
        return steps[0]
    if len(steps) != len(games):
        raise UsageError(
            f"--steps-per-game has {len(steps)} values for {len(games)} games; give one, or one per game of --games"
        )
    budget: dict[str, int] = {}
    for game, n in zip(games, steps, strict=True):
        if budget.setdefault(game, n) != n:
            raise UsageError(f"--steps-per-game gives {game} two budgets ({budget[game]} and {n}); a game has one")
    return budget if len(set(budget.values())) > 1 else steps[0]


def steps_of(budget: Budget, game: str) -> int:
    """Agent steps of one visit of ``game``."""
    return budget if isinstance(budget, int) else budget[game]


def budget_text(budget: Budget, games: list[str]) -> str:
    """The budget as ``--steps-per-game`` takes it for ``games`` (one number, or one per game in that order)."""
    return str(budget) if isinstance(budget, int) else ",".join(str(budget[g]) for g in games)


def make_schedule(
    games: list[str], steps_per_game: Budget, cycles: int = 1, orders: list[list[str]] | None = None
) -> list[Segment]:
    """``games`` in order, repeated ``cycles`` times; ``orders`` gives each cycle its own order instead."""
    if not games:
        raise ValueError("a schedule needs at least one game")
    orders = orders or [list(games)] * cycles
    sequence = [(c, g) for c, order in enumerate(orders) for g in order]
    if cycles < 1 or any(steps_of(steps_per_game, g) < 1 for _, g in sequence):
        raise ValueError("steps_per_game and cycles must be positive")
    return [Segment(i, g, steps_of(steps_per_game, g), c) for i, (c, g) in enumerate(sequence)]


def unique_games(schedule: list[Segment]) -> list[str]:
    """Each game once, in order of first appearance: the columns of the score matrix."""
    return list(dict.fromkeys(s.game for s in schedule))


def random_count(text: str) -> int | None:
    """N for ``--games randomN``, None for an explicit list of games."""
    match = _RANDOM.match(text.strip())
    return int(match.group(1)) if match else None


def pool_games(name: str) -> tuple[str, ...]:
    if name not in POOLS:
        raise UsageError(f"unknown game pool '{name}'; pools: {', '.join(POOLS)}")
    return POOLS[name]


def draw(pool: str, n: int, cycles: int, seed: int) -> list[list[str]]:
    """``cycles`` visiting orders of ``n`` games drawn from ``pool``: deterministic for a seed."""
    games = pool_games(pool)
    if not 1 <= n <= len(games):
        raise UsageError(f"--games random{n}: pool '{pool}' has {len(games)} games")
    rng = np.random.default_rng([seed, 2017])
    drawn = [games[i] for i in rng.choice(len(games), size=n, replace=False)]
    return [drawn] + [[drawn[i] for i in rng.permutation(n)] for _ in range(cycles - 1)]
