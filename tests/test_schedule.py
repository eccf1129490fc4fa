from __future__ import annotations

import pytest

from ewc_rl.errors import UsageError
from ewc_rl.schedule import budget_for, budget_text, make_schedule, unique_games


def test_cycles_revisit_games_in_order():
    s = make_schedule(["Pong", "Breakout"], 100, cycles=2)
    assert [(x.index, x.game, x.cycle, x.steps) for x in s] == [
        (0, "Pong", 0, 100),
        (1, "Breakout", 0, 100),
        (2, "Pong", 1, 100),
        (3, "Breakout", 1, 100),
    ]
    assert unique_games(s) == ["Pong", "Breakout"]


def test_rejects_empty_and_nonpositive():
    with pytest.raises(ValueError):
        make_schedule([], 10)
    with pytest.raises(ValueError):
        make_schedule(["Pong"], 0)


def test_random_draw_is_deterministic_and_only_uses_the_pool():
    from ewc_rl.schedule import POOLS, draw

    pool = POOLS["kirkpatrick2017"]
    first = draw("kirkpatrick2017", 10, cycles=3, seed=5)
    assert first == draw("kirkpatrick2017", 10, cycles=3, seed=5)
    assert first != draw("kirkpatrick2017", 10, cycles=3, seed=6)
    assert len(first) == 3 and len(set(first[0])) == 10 and set(first[0]) <= set(pool)
    assert all(sorted(order) == sorted(first[0]) for order in first)  # each cycle revisits the same ten
    assert first[1] != first[0] or first[2] != first[0]
    seen = {g for seed in range(50) for g in draw("kirkpatrick2017", 10, 1, seed)[0]}
    assert seen == set(pool)


def test_random_draw_errors_and_cycle_orders_in_the_schedule():
    from ewc_rl.errors import UsageError
    from ewc_rl.schedule import draw, random_count

    assert random_count("random10") == 10 and random_count("Random3") == 3 and random_count("Pong") is None
    with pytest.raises(UsageError, match="pool 'kirkpatrick2017' has 19 games"):
        draw("kirkpatrick2017", 20, 1, 0)
    with pytest.raises(UsageError, match="unknown game pool 'atari57'"):
        draw("atari57", 3, 1, 0)
    s = make_schedule(["A", "B"], 10, cycles=2, orders=[["A", "B"], ["B", "A"]])
    assert [(x.game, x.cycle) for x in s] == [("A", 0), ("B", 0), ("B", 1), ("A", 1)]


def test_a_budget_per_game_follows_the_game_through_cycles_and_orders() -> None:
    budget = budget_for(["A", "B"], [10, 30])
    assert budget == {"A": 10, "B": 30} and budget_text(budget, ["B", "A"]) == "30,10"
    s = make_schedule(["A", "B"], budget, cycles=2, orders=[["A", "B"], ["B", "A"]])
    assert [(seg.game, seg.steps) for seg in s] == [("A", 10), ("B", 30), ("B", 30), ("A", 10)]
    assert budget_for(["A", "B", "A"], [10, 30, 10]) == {"A": 10, "B": 30}  # a revisit: the game's one budget
    assert budget_for(["A", "B"], [10, 10]) == 10 and budget_for(["A", "B"], [7]) == 7  # uniform: one number


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, 20, 30], "has 3 values for 2 games"),
        ([10, 0], "must be positive"),
    ],
)
def test_bad_budgets_are_usage_errors(steps: list[int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        budget_for(["A", "B"], steps)
    with pytest.raises(UsageError, match="two budgets"):
        budget_for(["A", "B", "A"], [10, 20, 30])
