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


def make_schedule(
    games: list[str], steps_per_game: int, cycles: int = 1, orders: list[list[str]] | None = None
) -> list[Segment]:
    """``games`` in order, repeated ``cycles`` times; ``orders`` gives each cycle its own order instead."""
    if not games:
        raise ValueError("a schedule needs at least one game")
    if steps_per_game < 1 or cycles < 1:
        raise ValueError("steps_per_game and cycles must be positive")
    orders = orders or [list(games)] * cycles
    sequence = [(c, g) for c, order in enumerate(orders) for g in order]
    return [Segment(i, g, steps_per_game, c) for i, (c, g) in enumerate(sequence)]


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
