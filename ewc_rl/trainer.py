"""Runs a schedule: for each game, train -> evaluate all games seen -> estimate the Fisher -> consolidate.

Writes TensorBoard events and ``summary.json`` (the score matrix, settings, versions, wall time) into
one run directory. The last segment is not consolidated: nothing trains after it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from ewc_rl import logging as tblog
from ewc_rl import networks
from ewc_rl.agent import EWCDQN
from ewc_rl.config import Config
from ewc_rl.envs import make_env, suite
from ewc_rl.evaluation import evaluate
from ewc_rl.metrics import clipped_normalized_sum, metric_matrix, normalized_matrix, summarize
from ewc_rl.penalty import Penalty
from ewc_rl.schedule import Segment, make_schedule, unique_games
from ewc_rl.scores import normalize

SUMMARY_FORMAT = 1


@dataclass
class RunSpec:
    """What to run, beside the agent definition."""

    games: list[str]
    steps_per_game: int
    logdir: Path
    cycles: int = 1
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    log_every: int = 1_000
    eval_all_games: bool = False
    command: list[str] = field(default_factory=list)


class Trainer:
    """One ``ewc-rl train``: builds the agent, runs the schedule, logs, writes summary.json."""

    def __init__(self, cfg: Config, spec: RunSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.schedule = make_schedule(spec.games, spec.steps_per_game, spec.cycles)
        self.columns = unique_games(self.schedule)
        self.score_matrix: list[list[float | None]] = []
        self.eval_history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self.fisher_seconds = 0.0
        self.last_return: float | None = None
        self.pbar: tqdm | None = None
        self.t_start = time.perf_counter()

    # -- pieces --------------------------------------------------------------------------------------

    def _build_agent(self, logger: Logger) -> EWCDQN:
        c = self.cfg
        env = make_env(self.schedule[0].game, c.env, training=True, seed=self.spec.seed)
        penalty = Penalty(c.penalty.kind, c.penalty.lam, c.penalty.decay, c.penalty.normalize)
        network = networks.resolve(c.agent.network, suite(self.schedule[0].game))
        agent = EWCDQN(
            "CnnPolicy", env, penalty=penalty, policy_kwargs=networks.policy_kwargs(network),
            double_dqn=c.agent.double_dqn, per_game_replay=c.agent.per_game_replay, seed=self.spec.seed,
            device=self.spec.device,
            replay_buffer_kwargs={"handle_timeout_termination": not c.dqn.optimize_memory_usage},
            **vars(c.dqn),
        )
        agent.set_logger(logger)
        return agent

    def evaluate_seen(self, agent: EWCDQN, segment: Segment, logger: Logger) -> dict[str, float]:
        """Evaluate every game trained so far (all of the schedule's with ``eval_all_games``); log them."""
        t0 = time.perf_counter()
        e = self.cfg.eval
        seen = unique_games(self.schedule[: segment.index + 1])
        games = self.columns if self.spec.eval_all_games else seen
        if self.pbar is not None:
            self.pbar.set_postfix_str(f"evaluating {len(games)} game(s)")
        means = {}
        for j, game in enumerate(games):
            returns = evaluate(agent.q_net, game, self.cfg.env, episodes=e.episodes, epsilon=e.epsilon,
                               max_episode_steps=e.max_episode_steps, device=agent.device,
                               seed=self.spec.seed * 100_003 + agent.num_timesteps + j)
            means[game] = float(np.mean(returns))
            logger.record(f"eval/{game}/return", means[game])
            norm = normalize(game, means[game])
            if norm is not None:
                logger.record(f"eval/{game}/normalized", norm)
            self.eval_history.append({"step": agent.num_timesteps, "segment": segment.index, "game": game,
                                      "returns": returns, "mean": means[game], "normalized": norm})
        logger.record("eval/mean_return", float(np.mean([means[g] for g in seen])))
        seen_norm = [n for g in seen if (n := normalize(g, means[g])) is not None]
        if seen_norm:
            logger.record("eval/mean_normalized", float(np.mean(seen_norm)))
        clipped = clipped_normalized_sum([normalize(g, means[g]) for g in means])
        if clipped is not None:
            logger.record("eval/clipped_normalized_sum", clipped)
        self.eval_seconds += time.perf_counter() - t0
        logger.record("eval/cost_share", self.eval_seconds / max(time.perf_counter() - self.t_start, 1e-9))
        logger.dump(agent.num_timesteps)
        return means

    def _consolidate(self, agent: EWCDQN, segment: Segment, logger: Logger) -> None:
        p = self.cfg.penalty
        if p.kind == "none":
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

    def summary(self, wall: float, complete: bool) -> dict[str, Any]:
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
            "device": self.spec.device,
            "command": self.spec.command,
            "wall_time_s": round(wall, 2),
            "eval_time_s": round(self.eval_seconds, 2),
            "fisher_time_s": round(self.fisher_seconds, 2),
            "eval_all_games": self.spec.eval_all_games,
            "normalized_matrix": normalized_matrix(self.score_matrix, self.columns),
        }
        summary["metrics"] = summarize(summary) if self.score_matrix else {}
        return summary

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        spec = self.spec
        spec.logdir.mkdir(parents=True, exist_ok=True)
        self.t_start = t_start = time.perf_counter()
        logger = tblog.create_logger(spec.logdir)
        tblog.log_layout(logger, self.columns)
        agent = self._build_agent(logger)
        tblog.log_hparams(logger, {**self.cfg.flat(), "run.games": ",".join(spec.games),
                                   "run.steps_per_game": spec.steps_per_game, "run.cycles": spec.cycles,
                                   "run.seed": spec.seed, "run.agent": self.cfg.name})
        total = sum(s.steps for s in self.schedule)
        self.pbar = tqdm(total=total, unit="step", dynamic_ncols=True, disable=not spec.progress,
                         mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
        summary_path = spec.logdir / "summary.json"
        try:
            for seg in self.schedule:
                env = agent.env if seg.index == 0 else make_env(
                    seg.game, self.cfg.env, training=True, seed=spec.seed * 1_000 + seg.index)
                assert env is not None
                agent.begin_segment(env, seg.game, seg.steps)
                tblog.log_game_switch(logger, agent.num_timesteps, seg.index, seg.game, len(self.schedule))
                self.pbar.set_description(f"[{seg.index + 1}/{len(self.schedule)}] {seg.game}")
                callback = _SegmentCallback(self, seg, agent.num_timesteps + seg.steps)
                agent.learn(seg.steps, callback=callback, log_interval=None, reset_num_timesteps=False)
                means = self.evaluate_seen(agent, seg, logger)
                self.score_matrix.append([means.get(g) for g in self.columns])
                self._log_heatmap(logger, agent.num_timesteps)
                if seg.index < len(self.schedule) - 1:
                    self._consolidate(agent, seg, logger)
                agent.end_segment(seg.game, keep_replay=self.cfg.agent.keep_replay)
                env.close()
                tblog.write_json(summary_path, self.summary(time.perf_counter() - t_start, complete=False))
        finally:
            self.pbar.close()
            logger.close()
        summary = self.summary(time.perf_counter() - t_start, complete=True)
        tblog.write_json(summary_path, summary)
        return summary


class _SegmentCallback(BaseCallback):
    """Per-step bookkeeping during one segment: TensorBoard points, periodic evaluation, progress bar."""

    def __init__(self, trainer: Trainer, segment: Segment, end_step: int) -> None:
        super().__init__()
        self.trainer, self.segment, self.end_step = trainer, segment, end_step
        self.every = trainer.cfg.eval.every

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.every + 1) * self.every
        self.next_log = self.num_timesteps + self.trainer.spec.log_every
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

    def _on_step(self) -> bool:
        t = self.trainer
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
    lines = [f"{'game':<16}{'unit':>12}{'final':>10}{'forgetting':>12}"]
    for game in summary["columns"]:
        lines.append(f"{game:<16}{units[game]:>12}{fmt(m['final_score'][game], 3):>10}"
                     f"{fmt(m['forgetting'][game], 3):>12}")
    lines.append(f"average performance: {fmt(m['average_performance'], 3)}   "
                 f"mean forgetting: {fmt(m['mean_forgetting'], 3)}   "
                 f"clipped normalised sum: {fmt(m['clipped_normalized_sum'], 3)}")
    return "\n".join(lines)


def format_score_matrix(summary: dict[str, Any]) -> str:
    """The score matrix as a plain-text table (rows: after segment k; columns: games)."""
    cols = summary["columns"]
    width = max(8, *(len(c) for c in cols))
    lines = ["after segment".ljust(22) + "".join(c.rjust(width + 2) for c in cols)]
    for k, row in enumerate(summary["score_matrix"]):
        label = f"{k + 1}: {summary['games'][k]}"
        lines.append(label.ljust(22) + "".join(fmt(v).rjust(width + 2) for v in row))
    return "\n".join(lines)
