"""Tensors a method keeps per finished game (rehearsal's transitions, the functional anchor's states and outputs).

Not a method itself (it registers nothing): the storage, the uniform draw over every kept row and the switch to a
game's own per-game layers that both methods need, written once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th

from ewc_rl.networks import PerGameCnnPolicy

if TYPE_CHECKING:
    from ewc_rl.agent import ContinualDQN

Rows = dict[str, th.Tensor]  # named tensors with the same number of rows


class GameStore:
    """Rows of named tensors per game, in the order the games were first stored."""

    def __init__(self) -> None:
        self.games: dict[str, Rows] = {}

    def put(self, game: str, rows: Rows) -> None:
        """Keep ``rows`` for ``game``, replacing what it held."""
        self.games[game] = {k: v.detach() for k, v in rows.items()}

    def size(self, game: str) -> int:
        rows = self.games.get(game)
        return len(next(iter(rows.values()))) if rows else 0

    def others(self, game: str) -> list[str]:
        """The games with rows, except ``game`` (the one training: it has its own replay)."""
        return [g for g in self.games if g != game and self.size(g)]

    def draw(self, n: int, exclude: str) -> list[tuple[str, th.Tensor]]:
        """``n`` rows drawn uniformly with replacement from every game's rows but ``exclude``'s, as (game, row
        indices) per game. The draw uses numpy's global generator, as stable-baselines3's buffers do, so that a
        checkpoint (which saves it) resumes the very same draws."""
        games = self.others(exclude)
        if not games or n <= 0:
            return []
        sizes = np.array([self.size(g) for g in games])
        ends = np.cumsum(sizes)
        picks = np.random.randint(0, int(ends[-1]), size=n)
        which = np.searchsorted(ends, picks, side="right")
        out = []
        for k, game in enumerate(games):
            rows = picks[which == k] - (ends[k] - sizes[k])
            if len(rows):
                out.append((game, th.as_tensor(rows, device=next(iter(self.games[game].values())).device)))
        return out

    def rows(self, game: str, index: th.Tensor) -> Rows:
        return {k: v[index] for k, v in self.games[game].items()}

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for rows in self.games.values() for v in rows.values())

    def state_dict(self) -> dict[str, Any]:
        return {"games": list(self.games), "rows": list(self.games.values())}

    def load_state_dict(self, state: dict[str, Any], device: Any) -> None:
        self.games = {
            g: {k: v.to(device) for k, v in rows.items()} for g, rows in zip(state["games"], state["rows"], strict=True)
        }


def one_forward(agent: ContinualDQN) -> bool:
    """Whether states of any game can share one forward with the update's batch, each row's output the same as
    in a forward of its own: no per-game layers (a forward uses one game's) and no batch-statistics layer."""
    return not isinstance(agent.policy, PerGameCnnPolicy) and not agent.mode_matters


@contextmanager
def playing(agent: ContinualDQN, game: str) -> Iterator[None]:
    """Both networks use ``game``'s per-game layers inside the block (a no-op without them), the current game's
    again after it."""
    agent.select_game(game)
    try:
        yield
    finally:
        agent.select_game(agent.game)
