"""The task recogniser (ewc_rl/recognition.py) on synthetic frame streams with known switch points."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch as th

from ewc_rl import trainer
from ewc_rl.agent import ContinualDQN
from ewc_rl.cli import main
from ewc_rl.config import RecognitionConfig
from ewc_rl.recognition import Quantizer, Recognizer

PLANES = (3, 6, 6)  # binary planes, as MinAtar's (not downsampled)
FRAMES = (1, 16, 16)  # grey frames, downsampled to 8x8 and 4 levels


def planes_game(seed: int) -> np.ndarray:
    """Per-pixel probabilities of a plane-game: mostly empty cells, a few busy ones, one channel never used."""
    r = np.random.default_rng(seed)
    p = np.where(r.random(PLANES) < 0.8, 0.02, r.random(PLANES))
    p[r.integers(0, PLANES[0])] = 0.0
    return p


def frames_game(seed: int) -> np.ndarray:
    """Per-pixel grey means of a frame-game (a background) on which sprites of noise move."""
    return np.random.default_rng(seed).integers(0, 256, FRAMES).astype(float)


def stream(kind: str, order: list[int], length: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    games = [planes_game(g) if kind == "planes" else frames_game(g) for g in range(1 + max(order))]
    obs, truth = [], []
    for g in order:
        for _ in range(length):
            if kind == "planes":
                obs.append((rng.random(PLANES) < games[g]).astype(np.float32))
            else:
                noise = rng.normal(0, 20, FRAMES)
                noise[rng.random(FRAMES) < 0.05] = 120  # sprites
                obs.append(np.clip(games[g] + noise, 0, 255).astype(np.uint8))
            truth.append(g)
    return obs, truth


def run(rec: Recognizer, obs: list[np.ndarray]) -> list[int]:
    return [rec.observe(o) for o in obs]


def settings(**kw: float) -> RecognitionConfig:
    return RecognitionConfig(**{"window": 16, "threshold": 20.0, "size": 8, "levels": 4, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["planes", "frames"])
@pytest.mark.parametrize("order", [[0, 1, 0], [0, 1, 2, 0, 2, 1]])
def test_every_switch_is_found_within_a_bounded_delay_and_revisits_map_back(kind: str, order: list[int]) -> None:
    length, s = 600, settings()
    obs, truth = stream(kind, order, length)
    rec = Recognizer(obs[0].shape, s)
    contexts = run(rec, obs)
    # the context each game maps to is the one its first segment ends with; a revisit must end with it too
    first = {}
    for k, g in enumerate(order):
        first.setdefault(g, contexts[(k + 1) * length - 1])
    assert sorted(first.values()) == list(range(len(set(order))))  # one context per game, no more
    bound = 3 * s.window  # detection (a few frames) + the probation (window frames)
    for k, g in enumerate(order):
        seg = contexts[k * length : (k + 1) * length]
        settled = next(i for i, c in enumerate(seg) if all(c2 == first[g] for c2 in seg[i:]))
        assert settled <= (bound if k else 0), (k, g, settled)
    assert rec.switches == len(order) - 1  # no false switch in between
    assert rec.n_contexts == len(set(order))


@pytest.mark.parametrize("kind", ["planes", "frames"])
def test_no_false_switch_on_a_long_stationary_stream(kind: str) -> None:
    obs, _ = stream(kind, [0], 5_000, seed=3)
    rec = Recognizer(obs[0].shape, settings())
    assert set(run(rec, obs)) == {0}
    assert rec.switches == 0 and rec.n_contexts == 1


def explicit_log_likelihood(rec: Recognizer, obs: np.ndarray, k: int) -> float:
    """log prod_p (n_kpv + alpha) / (N_k + V alpha) at v = the frame's value at p, one pixel at a time."""
    x = rec.quantize(obs)
    a, V = rec.settings.alpha, rec.n_values
    total = 0.0
    for p in range(rec.n_pixels):
        n = rec.counts[k, p * V + int(x[p])]
        total += math.log((n + a) / (rec.totals[k] + V * a))
    return total


def explicit_fresh_evidence(frames: list[np.ndarray], q: Quantizer, alpha: float) -> float:
    """Prequential log-likelihood of the frames under a model that starts untrained and learns each frame."""
    counts: dict[tuple[int, int], int] = {}
    total = 0.0
    for t, o in enumerate(frames):
        x = q(o)
        for p in range(q.n_pixels):
            n = counts.get((p, int(x[p])), 0)
            total += math.log((n + alpha) / (t + q.n_values * alpha))
            counts[p, int(x[p])] = n + 1
    return total


@pytest.mark.parametrize("kind", ["planes", "frames"])
def test_log_likelihoods_and_the_untrained_evidence_against_explicit_loops(kind: str) -> None:
    obs, _ = stream(kind, [0, 1], 300)
    s = settings(window=20)
    rec = Recognizer(obs[0].shape, s)
    run(rec, obs[:360])  # context 0 trained on game 0, context 1 on the first frames of game 1
    assert rec.n_contexts == 2
    probe = obs[400]
    for k in range(2):
        assert rec.log_likelihoods(rec.quantize(probe))[k] == pytest.approx(explicit_log_likelihood(rec, probe, k))
    run(rec, obs[360:390])  # a full window of game 1 frames (no change inside it)
    assert not rec.probation and rec.filled == s.window
    window = obs[390 - s.window : 390]
    assert rec.fresh_evidence() == pytest.approx(explicit_fresh_evidence(window, rec.quantize, s.alpha), rel=1e-9)


def test_sparse_binary_scores_stay_exact_past_the_log_tables_first_size() -> None:
    """The binary planes' scores (all-empty frame + active pixels' log-odds, logs from a table grown with the counts)
    against the explicit per-pixel loop, once a context has learnt more frames than the table first held."""
    obs, _ = stream("planes", [0], 1_500, seed=5)
    rec = Recognizer(obs[0].shape, settings())
    run(rec, obs)
    assert rec.totals[0] == 1_500 > 1024
    probe = stream("planes", [1], 1, seed=6)[0][0]
    got = rec.log_likelihoods(rec.quantize(probe))[0]
    assert got == pytest.approx(explicit_log_likelihood(rec, probe, 0), rel=1e-12)


def test_push_one_frame_at_a_time_is_observe() -> None:
    obs, _ = stream("planes", [0, 1, 0], 400)
    one, queued = Recognizer(obs[0].shape, settings()), Recognizer(obs[0].shape, settings(every=1))
    assert [queued.push(o) for o in obs] == run(one, obs)
    assert np.array_equal(queued.counts, one.counts) and queued.fresh_sum == one.fresh_sum


@pytest.mark.parametrize("order", [[0, 1, 0], [0, 1, 2, 0, 2, 1]])
def test_batches_find_every_switch_and_keep_the_window_in_step(order: list[int]) -> None:
    """A batch of ``every`` frames is one step of the rule: the same switches, each seen at a batch's end; after each
    batch the window's counts, score sums and untrained evidence are those of the frames it holds."""
    length, s = 600, settings(every=5)
    obs, _ = stream("planes", order, length)
    rec = Recognizer(obs[0].shape, s)
    contexts = []
    for t, o in enumerate(obs):
        contexts.append(rec.push(o))
        if (t + 1) % s.every:
            assert contexts[-1] == (contexts[-2] if t else 0)  # the context changes only at a batch's end
            continue
        held = rec.frames[: rec.filled]  # after a restart the ring fills from slot 0
        assert np.array_equal(rec.window_ones, held.sum(axis=0))
        assert np.allclose(rec.score_sums, rec.scores[: rec.filled].sum(axis=0))
        expected = explicit_fresh_evidence(list(held.astype(np.float32)), rec.quantize, s.alpha) if len(held) else 0.0
        assert rec.fresh_evidence() == pytest.approx(expected, rel=1e-9)
    assert rec.switches == len(order) - 1 and rec.n_contexts == len(set(order))
    first = {}
    for k, g in enumerate(order):
        first.setdefault(g, contexts[(k + 1) * length - 1])
        seg = contexts[k * length : (k + 1) * length]
        settled = next(i for i, c in enumerate(seg) if all(c2 == first[g] for c2 in seg[i:]))
        assert settled <= (3 * s.window + s.every if k else 0), (k, g, settled)


def test_batches_raise_no_false_alarm_at_the_start_of_a_stream() -> None:
    """A young context (fewer than ``window`` frames) learns frame by frame: scored before a batch, an empty context
    loses to the untrained model, which learns within the window: an alarm, and on MinAtar a second context."""
    obs, _ = stream("planes", [0], 2_000, seed=3)
    rec = Recognizer(obs[0].shape, settings(every=8))
    alarms = 0
    for o in obs:
        assert rec.push(o) == 0
        alarms += rec.probation
    assert alarms == 0 and rec.switches == 0 and rec.n_contexts == 1


def test_a_resumed_recogniser_continues_exactly_with_queued_frames() -> None:
    obs, _ = stream("planes", [0, 1, 0], 400)
    whole = Recognizer(obs[0].shape, settings(every=7))
    expected = [whole.push(o) for o in obs]
    first = Recognizer(obs[0].shape, settings(every=7))
    got = [first.push(o) for o in obs[:412]]
    assert first.n_pending == 412 % 7
    second = Recognizer(obs[0].shape, settings(every=7))
    second.load_state_dict({k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in first.state_dict().items()})
    got += [second.push(o) for o in obs[412:]]
    assert got == expected
    old = {k: v for k, v in first.state_dict().items() if k not in ("pending", "n_pending")}  # before batches
    third = Recognizer(obs[0].shape, settings(every=7))
    third.load_state_dict(old)
    assert third.n_pending == 0


def test_quantizer_averages_blocks_into_levels() -> None:
    q = Quantizer((2, 4, 4), size=2, levels=4)
    frame = np.zeros((2, 4, 4), dtype=np.uint8)
    frame[1, :2, :2] = 255  # top-left block bright (the newest frame only counts)
    frame[1, 2:, 2:] = [[0, 255], [255, 255]]  # mean 191.25 -> level 2
    frame[0] = 255  # an older frame: ignored
    assert q(frame).tolist() == [3, 0, 0, 2]
    binary = Quantizer((2, 3, 3), size=42, levels=8)
    assert binary.n_values == 2 and binary.n_pixels == 18


def test_a_resumed_recogniser_continues_exactly() -> None:
    obs, _ = stream("planes", [0, 1, 0], 400)
    whole = Recognizer(obs[0].shape, settings())
    expected = run(whole, obs)
    first = Recognizer(obs[0].shape, settings())
    got = run(first, obs[:410])  # stopped during a probation
    assert first.probation
    second = Recognizer(obs[0].shape, settings())
    second.load_state_dict({k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in first.state_dict().items()})
    got += run(second, obs[410:])
    assert got == expected
    assert np.array_equal(second.counts, whole.counts) and second.fresh_sum == whole.fresh_sum


def test_classify_names_the_context_of_a_games_frames_without_learning_them() -> None:
    obs, truth = stream("frames", [0, 1], 500)
    rec = Recognizer(obs[0].shape, settings())
    contexts = run(rec, obs)
    before = rec.counts.copy()
    for g in (0, 1):
        batch = [o for o, t in zip(obs[:1000], truth, strict=True) if t == g][-10:]
        assert rec.classify(np.stack(batch)) == contexts[truth.index(g) + 499]
    unseen, _ = stream("frames", [2], 10, seed=9)
    assert rec.classify(np.stack(unseen)) == rec.n_contexts  # a game never seen: an untrained context
    assert np.array_equal(rec.counts, before)


def test_no_new_context_beyond_max_contexts() -> None:
    obs, _ = stream("planes", [0, 1, 2], 400)
    rec = Recognizer(obs[0].shape, settings(max_contexts=2))
    run(rec, obs)
    assert rec.n_contexts == 2


# -- the learner with inferred tasks, through the CLI --------------------------------------------------------------

INFERRED_AGENT = """
[dqn]
learning_starts = 100
target_update_interval = 50
buffer_size = 2000
[agent]
network = "minatar"
per_game_layers = true
task_inference = "inferred"
[recognition]
alpha = 1.0
max_contexts = 4
every = 4  # batches: the checkpoint holds the queued frames
[penalty]
kind = "ewc"
lambda = 10.0
fisher_states = 16
fisher_batch_size = 8
"""


def _inferred_run(tmp_path: Path, logdir: str, *extra: str) -> int:
    agent = tmp_path / "inferred.toml"
    agent.write_text(INFERRED_AGENT)
    args = ["train", "--agent", str(agent), "--games", "MinAtar/Breakout,MinAtar/Freeway", "--cycles", "2"]
    args += ["--steps-per-game", "400", "--eval-every", "400", "--eval-episodes", "1", "--no-progress", "--seed", "1"]
    args += ["--threads", "1", "--set", "eval.max_episode_steps=50", "--logdir", str(tmp_path / logdir), *extra]
    return main(args)


def test_inferred_tasks_drive_the_per_game_parts_and_resume_exactly(tmp_path: Path, monkeypatch) -> None:
    assert _inferred_run(tmp_path, "straight") == 0
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    rec = summary["recognition"]
    own = rec["context_of_game"]
    assert sorted(own.values()) == ["0", "1"] and rec["missed_switches"] == 0
    assert rec["overall_accuracy"] > 0.8 and len(rec["delays"]) == 3
    # the anchors are keyed by the contexts the agent inferred, never by the labels
    state = th.load(next((tmp_path / "straight" / "checkpoints").glob("ckpt-*")) / "state.pt", weights_only=True)
    keys = state["methods"]["penalty"]["keys"]
    assert keys and all(k.startswith("context-") for k in keys)
    # evaluation of each game uses the context the recogniser assigns to its frames
    for e in summary["eval_history"][2:]:
        assert str(e["context"]) == own[e["game"]], e

    checkpoint = trainer.Trainer.checkpoint

    def stop_after_first_game(self: trainer.Trainer, agent: ContinualDQN, segment: int, done: int) -> None:
        checkpoint(self, agent, segment, done)
        if (segment, done) == (1, 0):
            self.stop.signum = signal.SIGTERM

    monkeypatch.setattr(trainer.Trainer, "checkpoint", stop_after_first_game)
    assert _inferred_run(tmp_path, "resumed") == 128 + signal.SIGTERM
    monkeypatch.setattr(trainer.Trainer, "checkpoint", checkpoint)
    assert _inferred_run(tmp_path, "resumed", "--resume") == 0
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert resumed["score_matrix"] == summary["score_matrix"]
    assert {k: v for k, v in resumed["recognition"].items() if k != "time_s"} == {
        k: v for k, v in rec.items() if k != "time_s"
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("agent.task_inference=guess", "'agent.task_inference' must be one of labels, inferred"),
        ("recognition.window=1", "'recognition.window' must be >= 2"),
    ],
)
def test_bad_inference_settings_are_one_line_errors(tmp_path: Path, capsys, setting: str, message: str) -> None:
    assert _inferred_run(tmp_path, "bad", "--set", setting) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
