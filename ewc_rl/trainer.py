"""Runs a schedule: for each game, train -> evaluate all games seen -> estimate the Fisher -> consolidate.

Writes TensorBoard events, ``summary.json`` (the score matrix, settings, versions, wall time) and
checkpoints into one run directory. The last segment is not consolidated: nothing trains after it.

Checkpoints are written at every game boundary and every ``checkpoint_every`` agent steps, always at
the start of a ``train_freq`` chunk (so updates and target copies keep their cadence after a resume),
and on SIGINT/SIGTERM. A resume restores the learner, the schedule position and the evaluator history,
and purges TensorBoard events logged after the checkpoint. It does not restore the episode that was in
progress (the environment restarts), nor the replay memory unless ``checkpoint_replay`` is set.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from ewc_rl import checkpoints
from ewc_rl import logging as tblog
from ewc_rl.agent import EWCDQN, NonFiniteLossError, make_agent
from ewc_rl.config import Config
from ewc_rl.envs import make_env
from ewc_rl.errors import RunError, UsageError
from ewc_rl.evaluation import evaluate
from ewc_rl.metrics import clipped_normalized_sum, metric_matrix, normalized_matrix, summarize
from ewc_rl.schedule import Segment, make_schedule, unique_games
from ewc_rl.scores import normalize

SUMMARY_FORMAT = 1


@dataclass
class RunSpec:
    """What to run, beside the agent definition."""

    games: list[str]
    steps_per_game: int
    logdir: Path
    orders: list[list[str]] | None = None  # per-cycle visiting orders (random schedules)
    cycles: int = 1
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    log_every: int = 1_000
    eval_all_games: bool = False
    checkpoint_every: int = 100_000
    checkpoint_replay: bool = False
    command: list[str] = field(default_factory=list)


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written at ``step``."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class _StopFlag:
    """SIGINT/SIGTERM set a flag that training checks at safe points; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\newc-rl: {signal.Signals(signum).name} received: stopping at the next safe point to write a "
              "checkpoint (Ctrl-C again aborts without one)", file=sys.stderr)


class Trainer:
    """One ``ewc-rl train``: builds the agent, runs (or resumes) the schedule, logs, writes summary.json."""

    def __init__(self, cfg: Config, spec: RunSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.schedule = make_schedule(spec.games, spec.steps_per_game, spec.cycles, spec.orders)
        self.columns = unique_games(self.schedule)
        self.score_matrix: list[list[float | None]] = []
        self.eval_history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self.fisher_seconds = 0.0
        self.wall_before = 0.0  # wall time of earlier sessions of a resumed run
        self.last_return: float | None = None
        self.last_checkpoint: tuple[int, Path] | None = None
        self.pbar: tqdm | None = None
        self.stop = _StopFlag()
        self.device: str | None = None  # resolved from spec.device once the agent exists
        self.t_start = time.perf_counter()

    # -- identity of a run (what a resume must match) ------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Every setting that shapes the run's results, flat, for comparing a resume with its checkpoint."""
        return {**self.cfg.flat(), "run.games": [s.game for s in self.schedule],
                "run.steps_per_game": self.spec.steps_per_game, "run.cycles": self.spec.cycles,
                "run.seed": self.spec.seed, "run.eval_all_games": self.spec.eval_all_games}

    def _check_identity(self, saved: dict[str, Any]) -> None:
        now = self.identity()
        diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if diff:
            shown = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff[:4])
            more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
            raise UsageError(f"--resume with settings that differ from the saved run: {shown}{more}")

    # -- pieces --------------------------------------------------------------------------------------

    def _train_env(self, game: str, seed: int) -> Any:
        return make_env(game, self.cfg.env, training=True, seed=seed, n_envs=self.cfg.agent.n_envs,
                        threads=th.get_num_threads())

    def _build_agent(self) -> EWCDQN:
        env = self._train_env(self.schedule[0].game, self.spec.seed)
        return make_agent(self.cfg, env, self.columns, seed=self.spec.seed, device=self.spec.device)

    def evaluate_seen(self, agent: EWCDQN, segment: Segment, logger: Logger) -> dict[str, float]:
        """Evaluate every game trained so far (all of the schedule's with ``eval_all_games``); log them."""
        t0 = time.perf_counter()
        e = self.cfg.eval
        seen = unique_games(self.schedule[: segment.index + 1])
        games = self.columns if self.spec.eval_all_games else seen
        if self.pbar is not None:
            self.pbar.set_postfix_str(f"evaluating {len(games)} game(s)")
        means: dict[str, float] = {}
        norms: dict[str, float | None] = {}
        for j, game in enumerate(games):
            agent.select_game(game)
            returns = evaluate(agent.q_net, game, self.cfg.env, episodes=e.episodes, epsilon=e.epsilon,
                               max_episode_steps=e.max_episode_steps, device=agent.device,
                               seed=self.spec.seed * 100_003 + agent.num_timesteps + j,
                               threads=th.get_num_threads())
            means[game] = float(np.mean(returns))
            norms[game] = normalize(game, means[game])
            logger.record(f"eval/{game}/return", means[game])
            if norms[game] is not None:
                logger.record(f"eval/{game}/normalized", norms[game])
            self.eval_history.append({"step": agent.num_timesteps, "segment": segment.index, "game": game,
                                      "returns": returns, "mean": means[game], "normalized": norms[game]})
        agent.select_game(agent.game)
        logger.record("eval/mean_return", float(np.mean([means[g] for g in seen])))
        seen_norm = [n for g in seen if (n := norms[g]) is not None]
        if seen_norm:
            logger.record("eval/mean_normalized", float(np.mean(seen_norm)))
        clipped = clipped_normalized_sum(list(norms.values()))
        if clipped is not None:
            logger.record("eval/clipped_normalized_sum", clipped)
        self.eval_seconds += time.perf_counter() - t0
        logger.record("eval/cost_share", self.eval_seconds / max(self.wall(), 1e-9))
        logger.dump(agent.num_timesteps)
        return means

    def _consolidate(self, agent: EWCDQN, segment: Segment, logger: Logger) -> None:
        p = self.cfg.penalty
        if p.kind == "none":
            return
        trained = agent.steps_on(segment.game)
        if trained < p.consolidate_after_steps:
            logger.record("schedule/consolidation", f"step {agent.num_timesteps}: no anchor for {segment.game} yet "
                          f"({trained} of penalty.consolidate_after_steps = {p.consolidate_after_steps} steps)")
            logger.dump(agent.num_timesteps)
            return
        t0 = time.perf_counter()
        fisher = None
        if agent.penalty.needs_fisher:
            if self.pbar is not None:
                self.pbar.set_postfix_str(f"Fisher ({p.fisher}, {p.fisher_states} states)")
            fisher = agent.estimate_fisher(p.fisher, p.fisher_states, p.tau, p.fisher_batch_size,
                                           seed=self.spec.seed * 7919 + segment.index)
        agent.consolidate(segment.game, fisher)
        if fisher is not None:
            tblog.log_fisher(logger, fisher, agent.num_timesteps)
        self.fisher_seconds += time.perf_counter() - t0

    def _log_heatmap(self, logger: Logger, step: int) -> None:
        scores, units = metric_matrix(self.score_matrix, self.columns)
        rows = [f"{k + 1}: {s.game}" for k, s in enumerate(self.schedule[: len(scores)])]
        unit = {frozenset({"normalized"}): "normalised", frozenset({"raw"}): "raw"}.get(
            frozenset(units), "normalised where known, else raw")
        tblog.log_score_heatmap(logger, scores, rows, self.columns, step, f"score matrix ({unit})")

    def _log_switch(self, logger: Logger, step: int, seg: Segment) -> None:
        tblog.log_game_switch(logger, step, seg.index, seg.game, len(self.schedule))

    def wall(self) -> float:
        """Wall time of the whole run so far, earlier sessions of a resumed run included."""
        return self.wall_before + time.perf_counter() - self.t_start

    def summary(self, complete: bool) -> dict[str, Any]:
        summary = {
            "format": SUMMARY_FORMAT,
            "complete": complete,
            "agent": self.cfg.name,
            "agent_file": self.cfg.source,
            "games": [s.game for s in self.schedule],
            "columns": self.columns,
            "steps_per_game": self.spec.steps_per_game,
            "cycles": self.spec.cycles,
            "seed": self.spec.seed,
            "score_matrix": self.score_matrix,
            "eval_history": self.eval_history,
            "settings": self.cfg.to_dict(),
            "versions": tblog.package_versions(),
            "device": self.spec.device if self.device is None else self.device,
            "command": self.spec.command,
            "wall_time_s": round(self.wall(), 2),
            "eval_time_s": round(self.eval_seconds, 2),
            "fisher_time_s": round(self.fisher_seconds, 2),
            "eval_all_games": self.spec.eval_all_games,
            "normalized_matrix": normalized_matrix(self.score_matrix, self.columns),
        }
        summary["metrics"] = summarize(summary) if self.score_matrix else {}
        return summary

    # -- checkpoints ---------------------------------------------------------------------------------

    def checkpoint(self, agent: EWCDQN, segment: int, done_in_segment: int) -> None:
        """Write a checkpoint: ``segment`` is the next to run (or running), ``done_in_segment`` its steps so far."""
        if self.pbar is not None:
            self.pbar.set_postfix_str("checkpoint")
        agent_meta, tensors, replays = agent.checkpoint_state(self.spec.checkpoint_replay)
        rng_meta, rng_tensors = checkpoints.rng_state()
        meta = {"step": agent.num_timesteps, "segment": segment, "done_in_segment": done_in_segment,
                "identity": self.identity(), "agent": agent_meta, "rng": rng_meta,
                "trainer": {"score_matrix": self.score_matrix, "eval_history": self.eval_history,
                            "eval_seconds": self.eval_seconds, "fisher_seconds": self.fisher_seconds,
                            "wall_seconds": self.wall(), "last_return": self.last_return},
                "kept_replays": sorted(agent.kept_replays), "with_replay": self.spec.checkpoint_replay}
        path = checkpoints.save(self.spec.logdir, meta, {**tensors, "rng": rng_tensors}, replays)
        self.last_checkpoint = (agent.num_timesteps, path)

    def _restore(self, agent: EWCDQN, ckpt: checkpoints.Checkpoint) -> tuple[int, int]:
        """Load a checkpoint into the agent and the trainer; return (segment, steps done in it)."""
        meta = ckpt.meta
        segment, done = int(meta["segment"]), int(meta["done_in_segment"])
        game = self.schedule[segment].game if segment < len(self.schedule) else None
        try:
            agent.restore_checkpoint(meta["agent"], ckpt.state, ckpt.replays, game if done else None)
            checkpoints.set_rng_state(meta["rng"], ckpt.state["rng"])
            t = meta["trainer"]
            self.score_matrix, self.eval_history = t["score_matrix"], t["eval_history"]
            self.eval_seconds, self.fisher_seconds = t["eval_seconds"], t["fisher_seconds"]
            self.wall_before, self.last_return = t["wall_seconds"], t["last_return"]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise checkpoints.CheckpointError(
                f"checkpoint {ckpt.path} does not fit this run: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
        self.last_checkpoint = (int(meta["step"]), ckpt.path)
        return segment, done

    def _where_to_resume(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written"
        step, path = self.last_checkpoint
        return f"last good checkpoint: step {step} ({path}); resume with --resume"

    # -- the run -------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run the schedule (or continue it from the latest checkpoint); return the final summary."""
        spec = self.spec
        first, done = 0, 0
        if resume:  # everything that can refuse a resume runs before anything in the logdir changes
            ckpt = checkpoints.load(spec.logdir)
            self._check_identity(ckpt.meta.get("identity", {}))
            agent = self._build_agent()
            first, done = self._restore(agent, ckpt)
            if (first, done) != (0, 0):
                agent.env.close()  # type: ignore[union-attr]  # each later segment makes its own
            tblog.purge_events_after(spec.logdir, int(ckpt.meta["step"]))
            logger = tblog.create_logger(spec.logdir)
        else:
            agent = self._build_agent()
            spec.logdir.mkdir(parents=True, exist_ok=True)
            logger = tblog.create_logger(spec.logdir)
            self._log_switch(logger, 0, self.schedule[0])
            tblog.log_layout(logger, self.columns)
            tblog.log_hparams(logger, {**self.cfg.flat(), "run.games": ",".join(spec.games),
                                       "run.steps_per_game": spec.steps_per_game, "run.cycles": spec.cycles,
                                       "run.seed": spec.seed, "run.agent": self.cfg.name})
        agent.set_logger(logger)
        self.device = str(agent.device)
        self.t_start = time.perf_counter()
        total = sum(s.steps for s in self.schedule)
        self.pbar = tqdm(total=total, initial=agent.num_timesteps, unit="step", dynamic_ncols=True,
                         disable=not spec.progress, mininterval=1.0 if sys.stderr.isatty() else 30.0,
                         file=sys.stderr)
        try:
            with self.stop:
                for seg in self.schedule[first:]:
                    self._run_segment(agent, seg, logger, done if seg.index == first else 0)
        except (NonFiniteLossError, FloatingPointError) as exc:
            raise RunError(f"{exc}; {self._where_to_resume()}") from None
        except checkpoints.CheckpointWriteError as exc:
            raise RunError(f"stopped: {exc}") from None
        finally:
            self.pbar.close()
            logger.close()
        summary = self.summary(complete=True)
        tblog.write_json(spec.logdir / "summary.json", summary)
        return summary

    def _run_segment(self, agent: EWCDQN, seg: Segment, logger: Logger, done: int) -> None:
        """Train one segment (``done`` of its steps already behind it), then evaluate, consolidate, checkpoint."""
        spec = self.spec
        env_seed = spec.seed * 1_000 + seg.index + (7_919 * agent.num_timesteps if done else 0)
        env = agent.env if seg.index == 0 and not done and agent.env is not None else self._train_env(
            seg.game, env_seed)
        agent.begin_segment(env, seg.game, seg.steps, start=agent.num_timesteps - done)
        assert self.pbar is not None
        self.pbar.set_description(f"[{seg.index + 1}/{len(self.schedule)}] {seg.game}")
        if seg.steps > done:
            callback = _SegmentCallback(self, seg, agent.num_timesteps - done + seg.steps)
            agent.learn(seg.steps - done, callback=callback, log_interval=None, reset_num_timesteps=False)
        if self.stop.signum is not None and agent.num_timesteps - agent.segment_start < seg.steps:
            raise Interrupted(self.stop.signum, agent.num_timesteps)  # the callback wrote the checkpoint
        means = self.evaluate_seen(agent, seg, logger)
        self.score_matrix.append([means.get(g) for g in self.columns])
        self._log_heatmap(logger, agent.num_timesteps)
        if seg.index < len(self.schedule) - 1:
            self._consolidate(agent, seg, logger)
        agent.end_segment(seg.game, keep_replay=self.cfg.agent.keep_replay)
        env.close()
        tblog.write_json(spec.logdir / "summary.json", self.summary(complete=False))
        if seg.index + 1 < len(self.schedule):  # logged before the checkpoint, so a resume never repeats it
            self._log_switch(logger, agent.num_timesteps, self.schedule[seg.index + 1])
        self.checkpoint(agent, seg.index + 1, 0)
        if self.stop.signum is not None and seg.index < len(self.schedule) - 1:
            raise Interrupted(self.stop.signum, agent.num_timesteps)


class _SegmentCallback(BaseCallback):
    """Per-step bookkeeping during one segment: TensorBoard points, evaluation, checkpoints, progress bar."""

    def __init__(self, trainer: Trainer, segment: Segment, end_step: int) -> None:
        super().__init__()
        self.trainer, self.segment, self.end_step = trainer, segment, end_step
        self.every = trainer.cfg.eval.every
        self.ckpt_every = trainer.spec.checkpoint_every

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.every + 1) * self.every
        self.next_log = self.num_timesteps + self.trainer.spec.log_every
        self.next_ckpt = (self.num_timesteps // self.ckpt_every + 1) * self.ckpt_every if self.ckpt_every else None
        self._mark()

    def _mark(self) -> None:
        self.mark_step, self.mark_time, self.mark_eval = (
            self.num_timesteps, time.perf_counter(), self.trainer.eval_seconds)

    def _dump(self) -> None:
        agent: EWCDQN = self.model  # type: ignore[assignment]
        busy = (time.perf_counter() - self.mark_time) - (self.trainer.eval_seconds - self.mark_eval)
        if self.num_timesteps > self.mark_step and busy > 0:
            self.logger.record("train/fps", (self.num_timesteps - self.mark_step) / busy)
        self.logger.record("train/epsilon", agent.exploration_rate)
        self.logger.record("train/game", self.segment.index)
        self.logger.dump(self.num_timesteps)
        self._mark()

    def _at_chunk_start(self) -> bool:
        """True on the first step of a ``train_freq`` chunk: everything before this step is complete.

        SB3 calls the callback after an environment step but before storing that transition, and trains
        after each chunk; so here the learner's state is exactly "step - 1 finished", a consistent point.
        """
        agent: EWCDQN = self.model  # type: ignore[assignment]
        n = agent.n_envs
        freq = agent.train_freq.frequency * (n if agent.train_freq.unit.value == "step" else 1)
        return (self.num_timesteps - n - agent.segment_start) % max(freq, 1) == 0

    def _on_training_end(self) -> None:
        # A segment shorter than log_every, with no episode ended (several environments share its steps),
        # would otherwise leave no train/* point at all.
        if self.num_timesteps >= self.end_step and self.num_timesteps > self.mark_step:
            self._dump()

    def _checkpoint_here(self) -> None:
        agent: EWCDQN = self.model  # type: ignore[assignment]
        agent.num_timesteps -= agent.n_envs  # the state saved is that of the previous step (see above)
        try:
            self.trainer.checkpoint(agent, self.segment.index, agent.num_timesteps - agent.segment_start)
        finally:
            agent.num_timesteps += agent.n_envs

    def _on_step(self) -> bool:
        t = self.trainer
        if self._at_chunk_start() and self.num_timesteps - self.model.n_envs > self.model.segment_start:  # type: ignore[attr-defined]
            if t.stop.signum is not None:
                self._checkpoint_here()
                return False
            if self.next_ckpt is not None and self.num_timesteps > self.next_ckpt:
                self._checkpoint_here()
                self.next_ckpt = ((self.num_timesteps - 1) // self.ckpt_every + 1) * self.ckpt_every
        episode_ended = False
        for info in self.locals["infos"]:
            if "episode" in info:
                t.last_return = float(info["episode"]["r"])
                self.logger.record("train/episode_return", t.last_return)
                episode_ended = True
        if episode_ended or self.num_timesteps >= self.next_log:
            self._dump()
            self.next_log = self.num_timesteps + t.spec.log_every
        if self.num_timesteps >= self.next_eval:
            if self.num_timesteps < self.end_step:  # the segment's end gets its own evaluation
                t.evaluate_seen(self.model, self.segment, self.logger)  # type: ignore[arg-type]
            self.next_eval += self.every
        if t.pbar is not None:
            t.pbar.update(self.num_timesteps - t.pbar.n)  # the bar counts global agent steps
            ret = "-" if t.last_return is None else f"{t.last_return:g}"
            t.pbar.set_postfix_str(f"eps={self.model.exploration_rate:.3f} ret={ret}", refresh=False)
        return self.num_timesteps < self.end_step


def fmt(x: float | None, digits: int = 1) -> str:
    """A score for a table: ``-`` when not evaluated."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_metrics(summary: dict[str, Any]) -> str:
    """The run's continual-learning metrics as a plain-text table."""
    m = summary["metrics"]
    units = m["units"]
    width = max(16, *(len(g) + 2 for g in summary["columns"]))
    lines = [f"{'game':<{width}}{'unit':>12}{'final':>10}{'forgetting':>12}"]
    for game in summary["columns"]:
        lines.append(f"{game:<{width}}{units[game]:>12}{fmt(m['final_score'][game], 3):>10}"
                     f"{fmt(m['forgetting'][game], 3):>12}")
    lines.append(f"average performance: {fmt(m['average_performance'], 3)}   "
                 f"mean forgetting: {fmt(m['mean_forgetting'], 3)}   "
                 f"clipped normalised sum: {fmt(m['clipped_normalized_sum'], 3)}")
    if m.get("excluded_from_means"):
        left_out = ", ".join(m["excluded_from_means"])
        lines.append(f"(means over the normalised games; left out, in raw returns: {left_out})")
    return "\n".join(lines)


def format_score_matrix(summary: dict[str, Any]) -> str:
    """The score matrix as a plain-text table (rows: after segment k; columns: games)."""
    cols = summary["columns"]
    width = max(8, *(len(c) for c in cols))
    labels = [f"{k + 1}: {summary['games'][k]}" for k in range(len(summary["score_matrix"]))]
    first = max(22, *(len(x) + 2 for x in labels))
    lines = ["after segment".ljust(first) + "".join(c.rjust(width + 2) for c in cols)]
    for label, row in zip(labels, summary["score_matrix"], strict=True):
        lines.append(label.ljust(first) + "".join(fmt(v).rjust(width + 2) for v in row))
    return "\n".join(lines)
