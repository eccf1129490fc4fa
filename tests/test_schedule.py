from __future__ import annotations

import pytest

from ewc_rl.schedule import make_schedule, unique_games


def test_cycles_revisit_games_in_order():
    s = make_schedule(["Pong", "Breakout"], 100, cycles=2)
    assert [(x.index, x.game, x.cycle, x.steps) for x in s] == [
        (0, "Pong", 0, 100), (1, "Breakout", 0, 100), (2, "Pong", 1, 100), (3, "Breakout", 1, 100)]
    assert unique_games(s) == ["Pong", "Breakout"]


def test_rejects_empty_and_nonpositive():
    with pytest.raises(ValueError):
        make_schedule([], 10)
    with pytest.raises(ValueError):
        make_schedule(["Pong"], 0)
