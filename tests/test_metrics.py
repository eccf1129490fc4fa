"""Metric functions on hand-made score matrices with answers worked out by hand."""

from __future__ import annotations

import pytest

from ewc_rl import metrics
from ewc_rl.scores import normalize

# Three segments A, B, A (a revisit) over games A, B, C; C is never trained and never evaluated.
GAMES = ["A", "B", "A"]
COLS = ["A", "B", "C"]
R = [
    [5.0, None, None],
    [2.0, 8.0, None],
    [6.0, 3.0, None],
]


def test_average_performance_ignores_games_never_evaluated():
    assert metrics.average_performance(R) == pytest.approx((6.0 + 3.0) / 2)
    assert metrics.average_performance([[None, None]]) is None
    assert metrics.average_performance([]) is None


def test_forgetting_uses_the_last_training_segment():
    # A: last trained in segment 2 -> 6 - 6 = 0; B: trained in segment 1 -> 8 - 3 = 5; C: never trained
    assert metrics.forgetting(R, GAMES, COLS) == [0.0, 5.0, None]


def test_isolated_forgetting_matrix():
    F = metrics.isolated_forgetting(R, GAMES, COLS)
    assert F[0] == [None, None, None]
    assert F[1] == [3.0, None, None]  # segment 1 (B) cost A 5 -> 2; B itself is not forgetting
    assert F[2] == [None, 5.0, None]  # segment 2 (A) cost B 8 -> 3; B was not evaluated before segment 1


def test_clipped_normalized_sum_clips_each_game_at_one():
    assert metrics.clipped_normalized_sum([0.5, 2.0, None, -0.25]) == pytest.approx(0.5 + 1.0 - 0.25)
    assert metrics.clipped_normalized_sum([None]) is None


def test_human_normalisation_uses_the_table_and_never_invents():
    assert normalize("Pong", -20.7) == pytest.approx(0.0)
    assert normalize("Pong", 14.6) == pytest.approx(1.0)
    assert normalize("Breakout", 16.1) == pytest.approx((16.1 - 1.7) / (30.5 - 1.7))
    assert normalize("Tetris", 100.0) is None


def test_forward_transfer_is_sound_for_scores_above_one():
    # Normalised scores are unbounded: (AUC - ref) / (1 - ref) scored 1.3 vs 1.2 as -0.5 and 0.5 vs 0.999 as -499.
    assert metrics.forward_transfer(1.3, 1.2) == pytest.approx(0.1)  # better than the reference: positive
    assert metrics.forward_transfer(1.1, 1.2) == pytest.approx(-0.1)  # worse: negative
    assert metrics.forward_transfer(0.5, 0.999) == pytest.approx(-0.499)
    assert metrics.forward_transfer(0.5, 1.0) == pytest.approx(-0.5)
    assert metrics.forward_transfer(0.6, 0.2) == pytest.approx(0.4)
    assert metrics.forward_transfer(None, 0.2) is None


def test_means_over_games_never_mix_normalised_and_raw_scores():
    # Pong and Breakout have reference scores, Tetris has none (raw return 120 at the end).
    pong, breakout = (-20.7 + 35.3 * 0.3, 1.7 + 28.8 * 0.2)  # normalised 0.3 and 0.2
    summary = {
        "games": ["Pong", "Breakout", "Tetris"],
        "columns": ["Pong", "Breakout", "Tetris"],
        "eval_history": [],
        "score_matrix": [[-20.7 + 35.3 * 0.5, None, None], [pong, 1.7 + 28.8 * 0.6, None], [pong, breakout, 120.0]],
    }
    m = metrics.summarize(summary)
    assert m["excluded_from_means"] == ["Tetris"]
    assert m["average_performance"] == pytest.approx((0.3 + 0.2) / 2)  # not (0.3 + 0.2 + 120) / 3
    assert m["mean_forgetting"] == pytest.approx((0.2 + 0.4) / 2)  # Tetris' 0 forgetting is left out too
    # All games raw: one unit, so the plain mean is right.
    raw = {**summary, "columns": ["T1", "T2"], "games": ["T1", "T2"], "score_matrix": [[4.0, None], [1.0, 6.0]]}
    m = metrics.summarize(raw)
    assert m["excluded_from_means"] == [] and m["average_performance"] == pytest.approx(3.5)
    assert m["mean_forgetting"] == pytest.approx((3.0 + 0.0) / 2)


def test_summarize_mixes_normalised_and_raw_columns():
    summary = {
        "games": ["Pong", "Tetris"],
        "columns": ["Pong", "Tetris"],
        "score_matrix": [[-3.05, None], [-20.7, 40.0]],
        "eval_history": [
            {"game": "Pong", "segment": 0, "mean": -20.7, "step": 100},
            {"game": "Pong", "segment": 0, "mean": -3.05, "step": 200},
        ],
    }
    ref = {"eval_history": [{"game": "Pong", "segment": 0, "mean": -20.7, "step": 200}]}
    m = metrics.summarize(summary, references={"Pong": {None: ref}})
    assert m["units"] == {"Pong": "normalized", "Tetris": "raw"}
    assert m["forgetting"]["Pong"] == pytest.approx(0.5)  # 0.5 -> 0.0 normalised
    assert m["forgetting"]["Tetris"] == 0.0
    assert m["clipped_normalized_sum"] == pytest.approx(0.0)  # Tetris has no reference: left out
    assert m["final_game_score"] == 40.0
    assert m["forward_transfer"]["Pong"] == pytest.approx(0.25)  # AUC 0.25 vs reference 0
    assert m["excluded_from_means"] == ["Tetris"] and m["average_performance"] == pytest.approx(0.0)
    assert m["forward_transfer"]["Tetris"] is None


def single_game_run(game: str, seed: int | None, score: float) -> dict:
    """A fabricated finished single-game run: ``score`` (raw) when its segment ended."""
    history = [{"game": game, "segment": 0, "mean": score, "step": 10}]
    return {
        "complete": True,
        "games": [game],
        "columns": [game],
        "seed": seed,
        "score_matrix": [[score]],
        "eval_history": history,
    }


def test_plasticity_is_a_ratio_of_normalised_scores_and_none_when_the_fresh_network_did_not_learn():
    assert metrics.plasticity(0.5, 0.25) == pytest.approx(2.0)
    assert metrics.plasticity(-0.1, 0.5) == pytest.approx(-0.2)  # worse than random: negative, not hidden
    for unlearned in (0.1, 0.0, -0.2):  # at or below epsilon = 0.1, zero, negative: no ratio
        assert metrics.plasticity(0.5, unlearned) is None
    assert metrics.plasticity(None, 0.5) is None and metrics.plasticity(0.5, None) is None


def test_plasticity_pairs_seeds_and_uses_normalised_scores():
    # Pong (random -20.7, human 14.6), Breakout (1.7, 30.5), Freeway (0.0, 29.6); Tetris has no reference score.
    seq = ["Pong", "Breakout", "Freeway", "Tetris"]
    summary = {
        "games": seq,
        "columns": seq,
        "seed": 1,
        "eval_history": [{"game": "Pong", "segment": 0, "mean": -10.0, "step": 10}],
        "score_matrix": [
            [-10.0, None, None, None],
            [-15.0, 1.7 + 28.8 * 0.3, None, None],
            [-20.0, 1.7, 29.6 * 0.5, None],
            [-20.0, 1.7, 29.6 * 0.4, 80.0],
        ],
    }
    refs = {
        "Pong": {0: single_game_run("Pong", 0, -21.0), 1: single_game_run("Pong", 1, -3.05)},
        "Breakout": {
            0: single_game_run("Breakout", 0, 1.7 + 28.8 * 0.5),
            2: single_game_run("Breakout", 2, 1.7 + 28.8 * 0.7),
        },
        "Freeway": {1: single_game_run("Freeway", 1, 0.0)},
        "Tetris": {1: single_game_run("Tetris", 1, 50.0)},
    }
    m = metrics.summarize(summary, refs)
    # Pong, seed 1's own reference: (-10 + 20.7) / (-3.05 + 20.7); the raw ratio -10 / -3.05 = 3.3 would mean nothing.
    assert m["plasticity"]["Pong"] == pytest.approx(10.7 / 17.65)
    # Breakout has no seed-1 reference: the mean of seeds 0 and 2 (normalised 0.5 and 0.7), at its first segment's end.
    assert m["fresh_score"]["Breakout"] == pytest.approx(0.6)
    assert m["plasticity"]["Breakout"] == pytest.approx(0.3 / 0.6)
    assert m["fresh_score"]["Freeway"] == pytest.approx(0.0) and m["plasticity"]["Freeway"] is None  # did not learn
    assert m["plasticity"]["Tetris"] is None  # no normalised score
    assert m["mean_plasticity"] == pytest.approx((10.7 / 17.65 + 0.5) / 2)
    # Seed 0's own Pong reference scored below random (normalised -0.008): no ratio, not a huge negative number.
    m0 = metrics.summarize({**summary, "seed": 0}, refs)
    assert m0["fresh_score"]["Pong"] < 0 and m0["plasticity"]["Pong"] is None
    assert m0["plasticity"]["Breakout"] == pytest.approx(0.3 / 0.5)  # seed 0 has its own Breakout reference
    assert m0["mean_plasticity"] == pytest.approx(0.3 / 0.5)
    # Forward transfer pairs seeds the same way: Pong's AUC minus its own seed's reference AUC.
    assert m["forward_transfer"]["Pong"] == pytest.approx(10.7 / 35.3 - 0.5)
    assert m0["forward_transfer"]["Pong"] == pytest.approx(10.7 / 35.3 - (-0.3 / 35.3))


def test_kept_clips_to_zero_and_one_and_leaves_out_games_that_learned_nothing():
    assert metrics.kept(0.5, 0.4) == pytest.approx(0.8)
    assert metrics.kept(0.5, 0.9) == 1.0  # better at the end than after its segment: kept, not "more than kept"
    assert metrics.kept(0.5, -0.1) == 0.0  # below a random policy: nothing kept, not a negative share
    assert metrics.kept(0.1, 0.05) == pytest.approx(0.5)  # 0.1 itself is not below 0.1
    assert metrics.kept(0.099, 0.05) is None and metrics.kept(-0.2, 0.3) is None  # nothing learned, nothing to keep
    assert metrics.kept(None, 0.3) is None and metrics.kept(0.3, None) is None


def test_retention_uses_each_games_last_segment_and_normalised_scores_only():
    # --cycles 2 over Pong, Freeway, Tetris (no reference score), Boxing, Breakout: ten segments, Breakout last.
    seq = ["Pong", "Freeway", "Tetris", "Boxing", "Breakout"]
    raw = {"Pong": (-20.7, 35.3), "Freeway": (0.0, 29.6), "Boxing": (0.1, 12.0), "Breakout": (1.7, 28.8)}

    def score(game: str, n: float) -> float:  # the raw return of normalised score n
        return raw[game][0] + raw[game][1] * n

    matrix = [[score(g, 0.35) if g in raw else 30.0 for g in seq] for _ in range(10)]  # what no ratio below reads
    # Normalised scores where each game's first and last segment ended, and at the end (row 9).
    for g, first, last, final in (
        ("Pong", 0.9, 0.5, 0.8),  # last segment (5): 0.8 / 0.5 = 1.6, clipped to 1 (the first segment would give 0.89)
        ("Freeway", 0.05, 0.4, 0.3),  # 0.3 / 0.4 = 0.75 (the first segment, below 0.1, would leave it out)
        ("Boxing", 0.6, 0.08, 0.3),  # below 0.1 when its last segment (8) ended: left out (the first would give 0.5)
        ("Breakout", 0.5, 0.9, 0.45),  # trained last: nothing came after it, no retention
    ):
        j = seq.index(g)
        matrix[j][j], matrix[j + 5][j], matrix[9][j] = score(g, first), score(g, last), score(g, final)
    j = seq.index("Tetris")
    matrix[j][j], matrix[j + 5][j], matrix[9][j] = 200.0, 100.0, 50.0  # raw: a ratio of points is left out
    summary = {"games": seq * 2, "columns": seq, "eval_history": [], "score_matrix": matrix}
    m = metrics.summarize(summary)
    assert m["retention_per_game"] == {
        "Pong": 1.0,
        "Freeway": pytest.approx(0.75),
        "Tetris": None,
        "Boxing": None,
        "Breakout": None,
    }
    assert m["retention"] == pytest.approx((1.0 + 0.75) / 2)
    # No game qualifies (every game raw; or the only normalised game trained last): None, not 0.
    for games in (["T1", "T2"], ["Tetris", "Pong"]):
        two = {"games": games, "columns": games, "eval_history": [], "score_matrix": [[40.0, None], [10.0, 6.0]]}
        assert metrics.summarize(two)["retention"] is None
