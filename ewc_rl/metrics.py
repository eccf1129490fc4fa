"""Continual-learning metrics from a score matrix. Pure functions: no I/O, no training.

R[k][j] is the score of game j (column) evaluated when training segment k ends; ``None`` where game j was
not evaluated then. Formulas (docs/metrics.md has them with their sources):

    average performance      mean_j R[K-1][j]                                        (games evaluated at the end)
    forgetting of j          R[last segment training j][j] - R[K-1][j]                (Continual World)
    isolated forgetting      F[k][j] = R[k-1][j] - R[k][j] for j not trained in k     (CORA)
    forward transfer of j    AUC_j - AUC_ref_j                                        (see docs/metrics.md)
    plasticity of j          N[first segment training j][j] / N_ref_j   (None when N_ref_j <= 0.1; issue 16)
    retention of j           clip(N[K-1][j] / N[last segment training j][j], 0, 1)   (j not trained last; None when
                             the denominator is below 0.1; issue 18)
    clipped normalised sum   sum_j min(N[K-1][j], 1)                                  (Kirkpatrick et al. 2017)

Scores are normalised where a reference exists (human for Atari, our reference agent for MinAtar; see
:mod:`ewc_rl.scores`) and raw otherwise. Means over games (average performance, mean forgetting) never mix the
two units: when some games are normalised, the raw ones are left out and listed (``excluded_from_means``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ewc_rl.scores import normalize

Matrix = list[list[float | None]]
References = dict[str, dict[int | None, dict[str, Any]]]  # game -> seed (None: not recorded) -> single-game summary

# A fresh reference below this normalised score did not learn the game: a ratio to it would be noise or a huge number.
PLASTICITY_MIN_REFERENCE = 0.1
# A game below this normalised score when its last segment ended learned nothing to keep: retention leaves it out.
RETENTION_MIN_SCORE = 0.1


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def normalized_matrix(matrix: Matrix, columns: list[str]) -> Matrix:
    """Human-normalised copy of ``matrix``; ``None`` for games without a reference score."""
    return [[normalize(g, v) for g, v in zip(columns, row, strict=True)] for row in matrix]


def metric_matrix(matrix: Matrix, columns: list[str]) -> tuple[Matrix, list[str]]:
    """Normalised scores where a reference exists, raw scores elsewhere, and each column's unit."""
    units = ["normalized" if normalize(g, 0.0) is not None else "raw" for g in columns]
    mixed = [
        [normalize(g, v) if u == "normalized" else v for g, u, v in zip(columns, units, row, strict=True)]
        for row in matrix
    ]
    return mixed, units


def comparable(units: list[str]) -> list[bool]:
    """Which columns a mean over games may include: the normalised ones, or every one when all are raw."""
    some_normalized = "normalized" in units
    return [u == "normalized" or not some_normalized for u in units]


def average_performance(matrix: Matrix, units: list[str] | None = None) -> float | None:
    """Mean over games of the score at the end of the whole sequence (only comparable units, given ``units``)."""
    if not matrix:
        return None
    keep = comparable(units) if units is not None else [True] * len(matrix[-1])
    return _mean([v for v, k in zip(matrix[-1], keep, strict=True) if k])


def mean_forgetting(forgetting_values: list[float | None], units: list[str]) -> float | None:
    """Mean over games of the forgetting, over comparable units only (as :func:`average_performance`)."""
    return _mean([v for v, k in zip(forgetting_values, comparable(units), strict=True) if k])


def forgetting(matrix: Matrix, segment_games: list[str], columns: list[str]) -> list[float | None]:
    """Per game: score when its last training segment ends minus score at the very end."""
    out: list[float | None] = []
    for j, game in enumerate(columns):
        trained = [k for k, g in enumerate(segment_games) if g == game]
        out.append(_diff(matrix[trained[-1]][j], matrix[-1][j]) if trained else None)
    return out


def isolated_forgetting(matrix: Matrix, segment_games: list[str], columns: list[str]) -> Matrix:
    """F[k][j]: how much training segment k cost game j (score just before k minus score when k ends).

    Row 0 has no "before"; the game trained in segment k is not forgetting there: both are ``None``.
    """
    out: Matrix = [[None] * len(columns)]
    for k in range(1, len(matrix)):
        out.append(
            [
                None if game == segment_games[k] else _diff(matrix[k - 1][j], matrix[k][j])
                for j, game in enumerate(columns)
            ]
        )
    return out


def kept(at_segment_end: float | None, final: float | None) -> float | None:
    """The share of a game's end-of-segment normalised score still there at the end, clipped to [0, 1].

    Clipped at 1: a game that improved later (transfer from the games after it) was kept, not "more than kept", and
    one such game must not hide another one's loss in the mean. Clipped at 0: below a random policy nothing is kept.
    ``None`` when the game scored below :data:`RETENTION_MIN_SCORE` at its segment's end: nothing was learned, so
    there is nothing to keep, and a ratio to a score near 0 would be noise.
    """
    if at_segment_end is None or final is None or at_segment_end < RETENTION_MIN_SCORE:
        return None
    return min(max(final / at_segment_end, 0.0), 1.0)


def retention(normalized: Matrix, segment_games: list[str], columns: list[str]) -> list[float | None]:
    """Per game: :func:`kept` from the end of the game's last training segment to the end of the sequence.

    ``None`` for the game trained last (nothing came after it), games never trained, and games without a normalised
    score (``normalized`` has ``None`` there): a ratio of raw returns depends on where the game's scale starts, and
    the 0.1 threshold has no meaning in raw points.
    """
    out: list[float | None] = []
    for j, game in enumerate(columns):
        trained = [k for k, g in enumerate(segment_games) if g == game]
        earlier = bool(trained) and game != segment_games[-1]
        out.append(kept(normalized[trained[-1]][j], normalized[-1][j]) if earlier else None)
    return out


def drop_from_best(history: list[float]) -> float:
    """How far the latest of a game's evaluations is below its best so far (>= 0): forgetting as it happens."""
    return max(history) - history[-1]


def clipped_normalized_sum(normalized_row: list[float | None]) -> float | None:
    """The EWC paper's Atari metric: sum over games of the human-normalised score, each clipped to 1."""
    known = [min(v, 1.0) for v in normalized_row if v is not None]
    return sum(known) if known else None


def segment_auc(eval_history: list[dict[str, Any]], game: str, segment: int) -> float | None:
    """Mean normalised score of ``game`` over the evaluations made during training segment ``segment``."""
    values = [normalize(game, e["mean"]) for e in eval_history if e["game"] == game and e["segment"] == segment]
    return _mean(values)


def forward_transfer(auc: float | None, auc_reference: float | None) -> float | None:
    """AUC - AUC_ref: positive when earlier games helped learn this one.

    Not Continual World's (AUC - AUC_ref) / (1 - AUC_ref): that assumes scores <= 1 (success rates), and normalised
    Atari scores are unbounded (1.3 against 1.2 would come out negative, a reference of 0.999 would blow it up).
    """
    if auc is None or auc_reference is None:
        return None
    return auc - auc_reference


def plasticity(score: float | None, fresh: float | None) -> float | None:
    """N / N_fresh: 1 = learned as well as a fresh network; ``None`` when the fresh one did not learn.

    Both are normalised scores (0 = random policy), so the ratio is (s - random) / (s_fresh - random): a ratio of raw
    returns would depend on where a game's scale starts (negative returns, a random score far from 0).
    """
    if score is None or fresh is None or fresh <= PLASTICITY_MIN_REFERENCE:
        return None
    return score / fresh


def paired_reference(
    by_seed: dict[int | None, dict[str, Any]], seed: int | None, value: Callable[[dict[str, Any]], float | None]
) -> float | None:
    """``value(reference)`` of the reference run with the same seed, or else its mean over every reference seed."""
    if seed is not None and seed in by_seed:
        return value(by_seed[seed])
    return _mean([value(ref) for ref in by_seed.values()])


def _first_segment_auc(reference: dict[str, Any], game: str) -> float | None:
    return segment_auc(reference["eval_history"], game, 0)


def fresh_score(reference: dict[str, Any]) -> float | None:
    """A single-game run's normalised score when its (only) segment ended."""
    matrix = reference.get("score_matrix") or []
    if not matrix:
        return None
    game = reference["games"][0]
    return normalize(game, matrix[0][reference["columns"].index(game)])


def summarize(summary: dict[str, Any], references: References | None = None) -> dict[str, Any]:
    """All metrics of one run from its summary.json; ``references`` maps games and seeds to single-game runs."""
    columns = summary["columns"]
    games = summary["games"][: len(summary["score_matrix"])]  # a run still going has fewer rows
    scores, units = metric_matrix(summary["score_matrix"], columns)
    norm = normalized_matrix(summary["score_matrix"], columns)
    forgetting_values = forgetting(scores, games, columns)
    retention_values: list[float | None] = retention(norm, games, columns) if norm else [None] * len(columns)
    result: dict[str, Any] = {
        "units": dict(zip(columns, units, strict=True)),
        "excluded_from_means": [g for g, k in zip(columns, comparable(units), strict=True) if not k],
        "average_performance": average_performance(scores, units),
        "final_score": dict(zip(columns, scores[-1], strict=True)) if scores else {},
        "final_game_score": scores[-1][columns.index(games[-1])] if scores else None,
        "forgetting": dict(zip(columns, forgetting_values, strict=True)),
        "mean_forgetting": mean_forgetting(forgetting_values, units),
        "isolated_forgetting": isolated_forgetting(scores, games, columns),
        "clipped_normalized_sum": clipped_normalized_sum(norm[-1]) if norm else None,
        "retention_per_game": dict(zip(columns, retention_values, strict=True)),
        "retention": _mean(retention_values),
    }
    if references:
        seed = summary.get("seed")
        transfer, fresh, ratio = {}, {}, {}
        for j, game in enumerate(columns):
            refs = references.get(game, {})
            first = games.index(game) if game in games else None
            auc = segment_auc(summary["eval_history"], game, first) if first is not None else None
            auc_ref = paired_reference(refs, seed, partial(_first_segment_auc, game=game))
            transfer[game] = forward_transfer(auc, auc_ref)
            fresh[game] = paired_reference(refs, seed, fresh_score)
            ratio[game] = plasticity(norm[first][j] if first is not None else None, fresh[game])
        result["forward_transfer"] = transfer
        result["fresh_score"] = fresh
        result["plasticity"] = ratio
        result["mean_plasticity"] = _mean(list(ratio.values()))
    return result
