"""Task recognition from what the agent sees: which game is this? (the EWC paper's agent without task labels)

Kirkpatrick et al. (2017) infer the task with a Forget-Me-Not process (Milan et al. 2016): an online clustering of
frames into contexts, each a per-pixel Dirichlet-multinomial model, with a new context whenever an untrained model
explains the frames better than every trained one, and the trained contexts kept so that a revisited game maps back
to its own. This module is that model in a windowed form, in numpy (no library offers it):

* **Frames** are quantised to a small categorical image (:class:`Quantizer`). Atari: the newest of the stacked
  84x84 grey frames, averaged over ``f x f`` blocks to ``size x size`` (42 = the paper's resolution) and cut into
  ``levels`` grey levels: block means smooth sprites' exact positions and the few levels merge shades of one colour,
  so each pixel's distribution is concentrated (few values, well estimated from few frames) while the backgrounds,
  walls and colours that tell games apart survive. MinAtar: the (10, 10, 10) {0, 1} planes as they are, each
  (channel, cell) a binary pixel: they are already small, and their channels are object types, which is what
  tells the games apart.
* **A context** k holds counts n_k[p, v] of value v at pixel p over the N_k frames it has learnt; its predictive
  probability of a frame is the product over pixels of (n_k[p, x_p] + alpha) / (N_k + V alpha). Scores are
  log-likelihoods in nats, over all pixels at once.
* **The untrained model** is scored by its evidence for the frames of the window (the Dirichlet-multinomial
  marginal likelihood of the window's counts: a new context trained from the window's first frame). A frozen
  uniform model would not do: it pays log V at every pixel, also at the many pixels that every game leaves
  empty, and so loses to any trained context even on a game that context has never seen.
* **Switch rule**: every frame is scored by every stored context before the current one learns it (prequential).
  When the sum over the last ``window`` frames of another context's scores, or the untrained model's evidence,
  beats the current context's sum by more than ``threshold`` nats, a change is detected, and the next ``window``
  frames (a probation, during which nothing learns and the current context stays in use) decide where it leads:
  the stored context with the highest summed score takes them (the current one again: a false alarm), unless the
  untrained model's evidence is higher still: then they found a new context (while fewer than ``max_contexts``
  exist). Deciding on frames that all come after the change matters for revisits: on a window that mixes the
  previous game's frames with the revisited one's, the untrained model beats the revisited game's own context,
  which cannot explain the previous game's frames. A switch therefore lands ``window`` frames after its detection.

The state is arrays and integers only (:meth:`Recognizer.state_dict`), for the code-free checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ewc_rl.config import RecognitionConfig


class Quantizer:
    """Observation -> flat array of small ints (one per pixel; bools for binary planes), and the number of values a
    pixel takes."""

    def __init__(self, shape: tuple[int, ...], size: int, levels: int) -> None:
        if len(shape) != 3:
            raise ValueError(f"task recognition needs (channels, height, width) observations, got shape {shape}")
        channels, height, width = shape
        self.pooled = height > size or width > size
        if self.pooled:
            if height != width or height % size:
                raise ValueError(f"recognition.size = {size} must divide the frame side ({height}x{width})")
            self.factor, self.size, self.levels = height // size, size, levels
            self.n_pixels, self.n_values = size * size, levels
        else:  # binary planes (MinAtar): every (channel, cell) is a pixel
            self.n_pixels, self.n_values = channels * height * width, 2

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.pooled:  # bool: its nonzero() (the active pixels, which the binary scores use) is the fast one
            return obs.reshape(-1) > 0
        frame, f = obs[-1], self.factor  # the newest frame of the stack
        # block sums as f * f strided slices: several times faster than reshape(s, f, s, f).sum(axis=(1, 3))
        sums = sum(frame[i::f, j::f].astype(np.intp) for i in range(f) for j in range(f))
        return (sums * self.levels // (256 * f * f)).reshape(-1)


class Recognizer:
    """The windowed Forget-Me-Not recogniser: :meth:`observe` a frame, get the current context's index.

    Binary planes (MinAtar) are scored sparsely: a context's log-likelihood of a frame is its log-likelihood of the
    all-empty frame (``base``) plus, at each active pixel, that pixel's log-odds of 1 against 0 (``log_odds``), so
    a frame costs its ~30 active pixels per context instead of all 1,000; only the context that learns the frame
    recomputes its row (its total changed at every pixel). The untrained evidence is the closed form of the window's
    per-pixel counts. The result is the dense categorical score exactly (tests/test_recognition.py checks both
    against explicit loops); numpy's per-call cost, not arithmetic, is what remains.
    """

    def __init__(self, shape: tuple[int, ...], settings: RecognitionConfig | None = None) -> None:
        self.settings = s = settings if settings is not None else RecognitionConfig()
        self.quantize = Quantizer(shape, s.size, s.levels)
        P, V, K, W = self.quantize.n_pixels, self.quantize.n_values, s.max_contexts, s.window
        self.n_pixels, self.n_values = P, V
        self.binary = not self.quantize.pooled
        self._offsets = np.arange(P, dtype=np.intp) * V  # pixel p's value v sits at p * V + v
        self.totals = np.zeros(K, dtype=np.int64)  # N_k
        if self.binary:
            self.ones = np.zeros((K, P), dtype=np.int64)  # n_k[p, 1] (n_k[p, 0] = N_k - n_k[p, 1])
            self.base = np.zeros(K)  # log p_k(the all-empty frame)
            self.log_odds = np.zeros((K, P))  # log (n_k[p, 1] + alpha) / (n_k[p, 0] + alpha)
            self._log_table = np.log(np.arange(1024) + s.alpha)  # log(n + alpha), grown as the counts grow
            for k in range(K):
                self._refresh(k)
            self.window_ones = np.zeros(P, dtype=np.int64)  # m[p, 1] over the window
            c = np.arange(W + 1)  # lgamma(c + alpha) - lgamma(alpha) for the counts c a window can hold
            self._lgamma = np.array([math.lgamma(n + s.alpha) for n in c]) - math.lgamma(s.alpha)
            self._lgamma_full = self._lgamma + self._lgamma[::-1]  # a full window: m[p, 0] = W - m[p, 1]
        else:
            self._counts = np.zeros((K, P * V), dtype=np.int64)  # n_k[p, v], flat
            self.log_counts = np.full((K, P * V), math.log(s.alpha))  # log(n_k + alpha), kept in step with counts
            self._window_counts = np.zeros(P * V, dtype=np.int64)  # m[p, v] over the window
        self.n_contexts = 1  # context 0 exists (empty) from the start: the first game needs no switch
        self.current = 0
        self.frames = np.zeros((W, P), dtype=np.uint8)  # the window's quantised frames (a ring)
        self.scores = np.zeros((W, K))  # each window frame's log-likelihood under every context when it came
        self.score_sums = np.zeros(K)  # their sums over the window, kept in step
        self.fresh_sum = 0.0  # sum over (p, v) of lgamma(m + alpha) - lgamma(alpha): the untrained evidence
        self.pos = 0  # next ring slot
        self.filled = 0  # frames in the window since it last restarted
        self.switches = 0
        self.probation = False  # a change was detected: the next ``window`` frames decide where it leads
        self.pending = np.zeros((s.every, P), dtype=np.uint8)  # frames queued by push(), processed every ``every``
        self.n_pending = 0
        # binary planes: the observations as they came, quantised together when the queue is processed (one copy
        # per frame instead of a quantiser's four numpy calls); its dtype follows the observations'
        self._raw = np.zeros((s.every, *shape), dtype=np.uint8)

    @property
    def counts(self) -> np.ndarray:
        """n_k[p, v] as a (contexts, pixels * values) table, p-major (the binary form keeps n_k[p, 1] only)."""
        if not self.binary:
            return self._counts
        return np.stack([self.totals[:, None] - self.ones, self.ones], axis=-1).reshape(len(self.totals), -1)

    @property
    def window_counts(self) -> np.ndarray:
        """m[p, v] over the window, flat as :attr:`counts`."""
        if not self.binary:
            return self._window_counts
        return np.stack([self.filled - self.window_ones, self.window_ones], axis=-1).reshape(-1)

    # -- scores ---------------------------------------------------------------------------------------

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """log p_k(frame) under every stored context k (a quantised frame ``x``), vectorised over pixels."""
        K, s = self.n_contexts, self.settings
        if self.binary:
            return self.base[:K] + np.take(self.log_odds[:K], x.nonzero()[0], axis=1).sum(axis=1)
        idx = self._offsets + x
        # np.take along the pixel axis: several times faster than the equivalent fancy index [:K, idx]
        return np.take(self.log_counts[:K], idx, axis=1).sum(axis=1) - self.n_pixels * np.log(
            self.totals[:K] + self.n_values * s.alpha
        )

    def fresh_evidence(self) -> float:
        """log p(window frames) under an untrained context: the Dirichlet-multinomial marginal likelihood."""
        a, V, n = self.settings.alpha, self.n_values, self.filled
        return self.fresh_sum - self.n_pixels * (math.lgamma(n + V * a) - math.lgamma(V * a))

    def evidence(self) -> np.ndarray:
        """Summed window scores of every stored context, then the untrained model's evidence (last entry)."""
        evidence = np.empty(self.n_contexts + 1)
        evidence[:-1] = self.score_sums[: self.n_contexts]
        evidence[-1] = self.fresh_evidence()
        return evidence

    # -- the online step ------------------------------------------------------------------------------

    def observe(self, obs: np.ndarray) -> int:
        """Score one observation, learn it (outside a probation), detect or decide a switch; return the current
        context."""
        self._step(self.quantize(obs))
        return self.current

    def push(self, obs: np.ndarray) -> int:
        """Queue one observation; every ``settings.every`` observations, process the queue in one pass (binary
        planes: numpy's per-call cost, not arithmetic, is what a frame costs, so a batch costs little more than one
        frame). A batch is one step of the rule: its frames are scored by the contexts as they were before it, then
        learnt together, and a change is tested once, after the batch (while the current context has learnt fewer than
        ``window`` frames, frame by frame). So the context changes at most every ``every`` steps, and a switch is seen
        up to ``every - 1`` steps later; ``every = 1`` is :meth:`observe`."""
        if self.binary:
            if obs.dtype != self._raw.dtype:
                self._raw = self._raw.astype(obs.dtype)  # keeps queued rows (0/1 after a checkpoint load)
            self._raw[self.n_pending] = obs
        else:
            self.pending[self.n_pending] = self.quantize(obs)
        self.n_pending += 1
        if self.n_pending == len(self.pending):
            self._quantize_queue()
            self.n_pending = 0
            frames, i, W = self.pending, 0, self.settings.window
            while i < len(frames):  # a chunk never spans the end of a probation, nor more than the window's ring
                # A young context learns frame by frame: scored before a batch, it would lose to the untrained model,
                # which learns within the window (the first frames of a run would found a second context).
                young = not self.probation and self.totals[self.current] < W
                take = 1 if young else min(len(frames) - i, W - self.filled if self.probation else W)
                self._batch(frames[i : i + take])
                i += take
        return self.current

    def _quantize_queue(self) -> None:
        """The binary planes' quantiser (``> 0``) over the queued observations, into ``pending``."""
        if self.binary and self.n_pending:
            n = self.n_pending
            np.greater(self._raw[:n].reshape(n, -1), 0, out=self.pending[:n])

    def _step(self, x: np.ndarray) -> None:
        """One quantised frame through the online step."""
        W = self.settings.window
        scores = self.log_likelihoods(x)
        if self.filled == W:  # the oldest frame leaves the window
            self.score_sums -= self.scores[self.pos]
        self._window_add(x)
        self.frames[self.pos] = x
        self.scores[self.pos, : self.n_contexts] = scores
        self.score_sums[: self.n_contexts] += scores
        self.pos = (self.pos + 1) % W
        self._test(x[None])

    def _test(self, frames: np.ndarray) -> None:
        """After ``frames`` entered the window: decide at the end of a probation; else the current context learns
        them, and a change is detected when a challenger's window evidence beats it by ``threshold``."""
        s = self.settings
        evidence = self.evidence()
        if self.n_contexts >= s.max_contexts:
            evidence[-1] = -np.inf
        if self.probation:
            if self.filled == s.window:
                self._decide(evidence)
            return
        self._learn(self.current, frames)
        mine = evidence[self.current]
        evidence[self.current] = -np.inf
        if evidence.max() - mine > s.threshold:  # a change: judge the frames that come after it
            self.probation = True
            self._restart_window()

    def _batch(self, X: np.ndarray) -> None:
        """Quantised frames ``X`` (at most ``window``) through one step: scored by every stored context, into the
        window (pushing out the frames in the ring slots they take, once it is full), then :meth:`_test`."""
        if len(X) == 1 or not self.binary:  # Atari's frames: one by one (their cost is far below the agent's)
            for x in X:
                self._step(x)
            return
        W, K, n = self.settings.window, self.n_contexts, len(X)
        scores = self.base[:K] + X @ self.log_odds[:K].T  # the sparse scores of all frames in one product
        slots: slice | np.ndarray
        leaving: slice | np.ndarray
        if self.filled == W and self.pos + n <= W:  # the usual case: a full window, no wrap; slices, not indices
            slots = leaving = slice(self.pos, self.pos + n)
        else:
            slots = (self.pos + np.arange(n)) % W
            leaving = slots[self.filled + np.arange(n) >= W]
        self.score_sums -= self.scores[leaving].sum(axis=0)
        self.score_sums[:K] += scores.sum(axis=0)
        self.window_ones += X.sum(axis=0, dtype=np.int64) - self.frames[leaving].sum(axis=0, dtype=np.int64)
        self.filled = min(W, self.filled + n)
        m = self.window_ones
        if self.filled == W:
            self.fresh_sum = float(self._lgamma_full.take(m).sum())
        else:
            self.fresh_sum = float((self._lgamma.take(self.filled - m) + self._lgamma.take(m)).sum())
        self.frames[slots] = X
        self.scores[slots, :K] = scores
        self.pos = (self.pos + n) % W
        self._test(X)

    def _window_add(self, x: np.ndarray) -> None:
        """``x`` enters the window (in the ring slot ``pos``), the oldest frame leaving it if it is full."""
        a, full = self.settings.alpha, self.filled == self.settings.window
        if self.binary:
            m = self.window_ones
            if full:
                m -= self.frames[self.pos]
            else:
                self.filled += 1
            m += x
            # closed form, one gather over the pixels: cheaper in numpy calls than an update at the changed ones
            if full:
                self.fresh_sum = float(self._lgamma_full.take(m).sum())
            else:
                self.fresh_sum = float((self._lgamma.take(self.filled - m) + self._lgamma.take(m)).sum())
            return
        idx = self._offsets + x
        if full:
            old = self._offsets + self.frames[self.pos]
            self._window_counts[old] -= 1
            self.fresh_sum -= np.log(self._window_counts[old] + a).sum()
        else:
            self.filled += 1
        self.fresh_sum += np.log(self._window_counts[idx] + a).sum()
        self._window_counts[idx] += 1

    def _decide(self, evidence: np.ndarray) -> None:
        """End of a probation: the window holds only frames after the change. The stored context that explains
        them best takes them (the current one again: a false alarm), unless the untrained model explains them
        better still (a new context)."""
        best = int(np.argmax(evidence[:-1]))
        if evidence[-1] > evidence[best] + self.settings.threshold:
            best = self.n_contexts
            self.n_contexts += 1
        self._learn(best, self.frames[: self.filled])
        self.switches += best != self.current
        self.current = best
        self.probation = False
        self._restart_window()

    def _learn(self, k: int, frames: np.ndarray) -> None:
        """Context ``k`` learns quantised frames (a 2-D array, one row each)."""
        self.totals[k] += len(frames)
        if self.binary:
            self.ones[k] += frames[0] if len(frames) == 1 else frames.sum(axis=0, dtype=np.int64)
            self._refresh(k)
            return
        counts = self._counts[k]  # 1-D views: their fancy indexing is the fast path
        for x in frames:
            idx = self._offsets + x.astype(np.intp)
            counts[idx] += 1
            self.log_counts[k][idx] = np.log(counts[idx] + self.settings.alpha)

    def _refresh(self, k: int) -> None:
        """Binary context ``k``'s all-empty score and log-odds from its counts (a new total changes every pixel).
        The logarithms come from a table of log(n + alpha): a gather costs a fraction of np.log over the pixels."""
        a, ones, total = self.settings.alpha, self.ones[k], int(self.totals[k])
        if total >= len(self._log_table):
            self._log_table = np.log(np.arange(2 * total + 2) + a)
        log_zeros = self._log_table.take(total - ones)
        np.subtract(self._log_table.take(ones), log_zeros, out=self.log_odds[k])
        self.base[k] = log_zeros.sum() - self.n_pixels * math.log(total + 2 * a)

    def _restart_window(self) -> None:
        if self.binary:
            self.window_ones[:] = 0
        else:
            self._window_counts[:] = 0
        self.scores[:] = 0.0
        self.score_sums[:] = 0.0
        self.fresh_sum = 0.0
        self.filled = self.pos = 0

    # -- classification without learning (evaluation) -------------------------------------------------

    def classify(self, observations: np.ndarray) -> int:
        """The context that best explains a batch of observations of one game, without learning them: the stored
        context with the highest summed log-likelihood, or ``n_contexts`` (a context not created yet: untrained
        parts) when the untrained model's evidence for the batch is higher still."""
        K, a, V, n = self.n_contexts, self.settings.alpha, self.n_values, len(observations)
        xs = np.stack([self.quantize(o) for o in observations])
        if self.binary:
            ones = xs.sum(axis=0, dtype=np.int64)
            stored = n * self.base[:K] + self.log_odds[:K] @ ones
            m = np.stack([n - ones, ones], axis=-1).reshape(-1)
        else:
            idx = self._offsets + xs
            stored = self.log_counts[:K, idx].sum(axis=2).sum(axis=1) - n * self.n_pixels * np.log(
                self.totals[:K] + V * a
            )
            m = np.bincount(idx.reshape(-1), minlength=self.n_pixels * V)
        lg = np.vectorize(math.lgamma)
        fresh = float((lg(m + a) - math.lgamma(a)).sum())
        fresh -= self.n_pixels * (math.lgamma(n + V * a) - math.lgamma(V * a))
        best = int(np.argmax(stored))
        if fresh > stored[best] and self.n_contexts < self.settings.max_contexts:
            return self.n_contexts
        return best

    # -- checkpoint -----------------------------------------------------------------------------------

    # log_counts, log_odds and base follow from counts: not saved (a checkpoint that has log_counts loads too);
    # a checkpoint written before push() has no pending frames (an empty queue)
    _ARRAYS = ("counts", "totals", "frames", "scores", "score_sums", "window_counts", "pending")
    _SCALARS = ("n_contexts", "current", "pos", "filled", "switches", "probation", "n_pending")

    def state_dict(self) -> dict[str, Any]:
        """Arrays and numbers only (the checkpoint stays code-free)."""
        self._quantize_queue()
        return {
            **{k: getattr(self, k).copy() for k in self._ARRAYS},
            **{k: int(getattr(self, k)) for k in self._SCALARS},
            "fresh_sum": float(self.fresh_sum),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        arrays = {}
        state = {"pending": self.pending, "n_pending": 0, **state}
        for k in self._ARRAYS:
            value, mine = np.asarray(state[k]), getattr(self, k)
            if value.shape != mine.shape:
                raise ValueError(f"recognition state {k} has shape {value.shape}, this run needs {mine.shape}")
            arrays[k] = value.astype(mine.dtype)
        for k in ("totals", "frames", "scores", "score_sums", "pending"):
            setattr(self, k, arrays[k])
        for k in self._SCALARS:
            setattr(self, k, type(getattr(self, k))(state[k]))
        self.fresh_sum = float(state["fresh_sum"])
        if self.binary:  # the queued frames, quantised already, stand in for the observations they came from
            self._raw = self.pending.reshape(self._raw.shape).copy()
            self.ones = np.ascontiguousarray(arrays["counts"][:, 1 :: self.n_values])
            self.window_ones = np.ascontiguousarray(arrays["window_counts"][1 :: self.n_values])
            for context in range(len(self.totals)):
                self._refresh(context)
        else:
            self._counts, self._window_counts = arrays["counts"], arrays["window_counts"]
            self.log_counts = np.log(self._counts + self.settings.alpha)


def context_key(k: int) -> str:
    """The name of context ``k`` where per-game parts are keyed by name (replay memories, anchors, stores)."""
    return f"context-{k}"


def context_index(key: str) -> int:
    return int(key.removeprefix("context-"))


# -- what the trainer reports (summary.json, TensorBoard) ---------------------------------------------------------


def new_record() -> dict[str, Any]:
    """The trainer's tally of recognition against the true games: plain containers, checkpointed with its state."""
    return {"confusion": {}, "switches": [], "true_switches": [], "seconds": 0.0}


def assignment(confusion: dict[str, dict[str, int]]) -> dict[str, str]:
    """Game -> the context that stands for it: one-to-one, the largest cells of the confusion table first (greedy;
    exact for the tables of a working recogniser, where each game's context holds most of its steps)."""
    cells = sorted(((n, g, c) for g, row in confusion.items() for c, n in row.items()), reverse=True)
    chosen: dict[str, str] = {}
    for _, game, context in cells:
        if game not in chosen and context not in chosen.values():
            chosen[game] = context
    return chosen


def metrics(record: dict[str, Any]) -> dict[str, Any]:
    """Accuracy per game (steps spent in the game's own context, one context per game), overall accuracy,
    detection delays (agent steps from a true switch to the first inferred switch after it, within its segment),
    missed and false switches (inferred switches that are not the first after a true switch)."""
    confusion = record["confusion"]
    own = assignment(confusion)
    steps = {g: sum(row.values()) for g, row in confusion.items()}
    right = {g: row.get(own.get(g, ""), 0) for g, row in confusion.items()}
    delays = [t["detected"] - t["step"] for t in record["true_switches"] if t["detected"] is not None]
    total = sum(steps.values())
    return {
        "overall_accuracy": sum(right.values()) / total if total else None,
        "accuracy": {g: right[g] / steps[g] for g in confusion if steps[g]},
        "context_of_game": own,
        "delays": delays,
        "median_delay": float(np.median(delays)) if delays else None,
        "missed_switches": sum(t["detected"] is None for t in record["true_switches"]),
        "false_switches": len(record["switches"]) - len(delays),
        "switches": record["switches"],
        "confusion": confusion,
        "time_s": round(record["seconds"], 2),
    }
