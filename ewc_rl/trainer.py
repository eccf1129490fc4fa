"""Runs a schedule: for each game, train -> evaluate all games seen -> the methods' segment end (consolidate).

Writes TensorBoard events, ``summary.json`` (the score matrix, settings, versions, wall time) and
checkpoints into one run directory. The last segment is not consolidated: nothing trains after it.

Checkpoints are written at every game boundary and every ``checkpoint_every`` agent steps, always at
the start of a ``train_freq`` chunk (so updates and target copies keep their cadence after a resume),
and on SIGINT/SIGTERM. A resume restores the learner, the schedule position and the evaluator history,
and purges TensorBoard events logged after the checkpoint. It does not restore the episode that was in
progress (the environment restarts), nor the replay memory unless ``checkpoint_replay`` is set.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from ewc_rl import checkpoints, export, provenance, recognition, tblog
from ewc_rl.agent import ContinualDQN, NonFiniteLossError, make_agent
from ewc_rl.callbacks import segment_callbacks
from ewc_rl.config import Config, from_dict
from ewc_rl.envs import make_env
from ewc_rl.errors import RunError, UsageError
from ewc_rl.evaluation import evaluate
from ewc_rl.methods import SegmentEnd
from ewc_rl.metrics import clipped_normalized_sum, drop_from_best, metric_matrix, normalized_matrix, summarize
from ewc_rl.probe import Probe
from ewc_rl.progress import ProgressFile
from ewc_rl.schedule import Budget, Segment, budget_text, make_schedule, unique_games
from ewc_rl.scores import normalize

SUMMARY_FORMAT = 1


@dataclass
class RunSpec:
    """What to run, beside the agent definition."""

    games: list[str]
    steps_per_game: Budget  # one number, or game -> steps (ewc_rl/schedule.py)
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
    log_formats: list[str] = field(default_factory=list)  # SB3 outputs beside TensorBoard: csv, json
    track: str | None = None  # wandb or mlflow (ewc_rl.tracking)


@dataclass
class RunState:
    """What the trainer accumulates over a run, beside the learner: checkpointed and restored as one."""

    score_matrix: list[list[float | None]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    eval_seconds: float = 0.0
    fisher_seconds: float = 0.0  # the methods' segment-end work (Fisher estimates, consolidation)
    wall_seconds: float = 0.0  # wall time of earlier sessions of a resumed run
    probe_seconds: float = 0.0  # the plasticity diagnostics (ewc_rl/probe.py)
    plasticity: list[dict[str, Any]] = field(default_factory=list)
    last_return: float | None = None
    recognition: dict[str, Any] = field(default_factory=recognition.new_record)  # inferred tasks vs true games
    # one entry per resume: {"step", "replay_lost", "commit", "dirty", "cpu"}, replay_lost being the replay
    # transitions the rest of the run lost (None: not counted), the rest what the resumed session ran on
    resumes: list[dict[str, Any]] = field(default_factory=list)
    # the commit and CPU the run started on: {"commit", "dirty", "cpu"} (empty in checkpoints older than the key)
    provenance: dict[str, Any] = field(default_factory=dict)


def _provenance() -> dict[str, Any]:
    """This session's code and CPU, as summary.json records them (ewc_rl/provenance.py)."""
    return {**provenance.code(), "cpu": provenance.cpu()}


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
        print(
            f"\newc-rl: {signal.Signals(signum).name} received: stopping at the next safe point to write a "
            "checkpoint (Ctrl-C again aborts without one)",
            file=sys.stderr,
        )


class Trainer:
    """One ``ewc-rl train``: builds the agent, runs (or resumes) the schedule, logs, writes summary.json."""

    def __init__(self, cfg: Config, spec: RunSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.schedule = make_schedule(spec.games, spec.steps_per_game, spec.cycles, spec.orders)
        self.columns = unique_games(self.schedule)
        self.session = _provenance()  # once per process: the first session's record, or a resume's
        self.state = RunState(provenance=dict(self.session))
        self.last_checkpoint: tuple[int, Path] | None = None
        self.pbar: tqdm | None = None
        self.progress: ProgressFile | None = None  # <run>/steps.json, read by `ewc-rl compare`
        self.stop = _StopFlag()
        self.device: str | None = None  # resolved from spec.device once the agent exists
        self.agent: ContinualDQN | None = None  # the learner, once built (the Python API hands it out)
        self.t_start = time.perf_counter()
        self.probe = Probe(cfg.eval.probe_states, spec.seed) if cfg.eval.plasticity else None

    # -- identity of a run (what a resume must match) ------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Every setting that shapes the run's results, flat, for comparing a resume with its checkpoint."""
        return {
            **self.cfg.flat(),
            "run.games": [s.game for s in self.schedule],
            "run.steps_per_game": self.spec.steps_per_game,
            "run.cycles": self.spec.cycles,
            "run.seed": self.spec.seed,
            "run.eval_all_games": self.spec.eval_all_games,
        }

    def _check_identity(self, saved: dict[str, Any]) -> None:
        now = self.identity()
        # A setting added after the checkpoint was written is not in it: at its default it changes nothing.
        defaults = {**from_dict({}).flat(), **saved}
        diff = [k for k in sorted(set(saved) | set(now)) if defaults.get(k) != now.get(k)]
        if diff:
            shown = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff[:4])
            more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
            raise UsageError(f"--resume with settings that differ from the saved run: {shown}{more}")

    # -- pieces --------------------------------------------------------------------------------------

    def _train_env(self, game: str, seed: int) -> Any:
        return make_env(
            game, self.cfg.env, training=True, seed=seed, n_envs=self.cfg.agent.n_envs, threads=th.get_num_threads()
        )

    def _build_agent(self) -> ContinualDQN:
        env = self._train_env(self.schedule[0].game, self.spec.seed)
        return make_agent(self.cfg, env, self.columns, seed=self.spec.seed, device=self.spec.device)

    def evaluate_seen(self, agent: ContinualDQN, segment: Segment, logger: Logger) -> dict[str, float]:
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
            chosen: list[int] = []
            before_play = None
            if agent.recognizer is not None:  # the context the recogniser assigns to the game's first frames

                def before_play(obs: np.ndarray, chosen: list[int] = chosen) -> None:
                    assert agent.recognizer is not None
                    chosen.append(agent.recognizer.classify(obs))
                    agent.select_game(recognition.context_key(chosen[-1]))

            else:
                agent.select_game(game)
            returns = evaluate(
                agent.q_net,
                game,
                self.cfg.env,
                episodes=e.episodes,
                epsilon=e.epsilon,
                max_episode_steps=e.max_episode_steps,
                device=agent.device,
                seed=self.spec.seed * 100_003 + agent.num_timesteps + j,
                threads=th.get_num_threads(),
                before_play=before_play,
            )
            means[game] = float(np.mean(returns))
            norms[game] = normalize(game, means[game])
            logger.record(f"eval/{game}/return", means[game])
            if norms[game] is not None:
                logger.record(f"eval/{game}/normalized", norms[game])
            self.state.eval_history.append(
                {
                    "step": agent.num_timesteps,
                    "segment": segment.index,
                    "game": game,
                    "returns": returns,
                    "mean": means[game],
                    "normalized": norms[game],
                    **({"context": chosen[0]} if chosen else {}),
                }
            )
            if chosen:
                logger.record(f"eval/{game}/context", chosen[0])
        agent.select_game(agent.game)
        self._log_forgetting(logger, seen, segment.game)
        logger.record("eval/mean_return", float(np.mean([means[g] for g in seen])))
        seen_norm = [n for g in seen if (n := norms[g]) is not None]
        if seen_norm:
            logger.record("eval/mean_normalized", float(np.mean(seen_norm)))
        clipped = clipped_normalized_sum(list(norms.values()))
        if clipped is not None:
            logger.record("eval/clipped_normalized_sum", clipped)
        self.state.eval_seconds += time.perf_counter() - t0
        logger.record("eval/cost_share", self.state.eval_seconds / max(self.wall(), 1e-9))
        self.log_probe(agent, segment, logger, "eval", dump=False)
        logger.dump(agent.num_timesteps)
        return means

    def log_probe(self, agent: ContinualDQN, segment: Segment, logger: Logger, when: str, dump: bool = True) -> None:
        """The plasticity diagnostics now (if the segment's probe states exist): plasticity/* and summary.json."""
        if self.probe is None:
            return
        t0 = time.perf_counter()
        values = self.probe(agent)
        if values is None:
            return
        for key, value in values.items():
            logger.record(f"plasticity/{key}", value)
        self.state.plasticity.append(
            {"step": agent.num_timesteps, "segment": segment.index, "game": segment.game, "when": when, **values}
        )
        self.state.probe_seconds += time.perf_counter() - t0
        logger.record("plasticity/cost_share", self.state.probe_seconds / max(self.wall(), 1e-9))
        if dump:
            logger.dump(agent.num_timesteps)

    def _log_forgetting(self, logger: Logger, seen: list[str], training: str) -> None:
        """eval/<Game>/forgetting (best evaluation so far minus the latest, normalised where a reference exists)
        for every game trained so far, and their mean over the games not in training now."""
        drops = {}
        for game in seen:
            history = [
                e["mean"] if e["normalized"] is None else e["normalized"]
                for e in self.state.eval_history
                if e["game"] == game
            ]
            drops[game] = drop_from_best(history)
            logger.record(f"eval/{game}/forgetting", drops[game])
        earlier = [drops[g] for g in seen if g != training]
        if earlier:
            logger.record("eval/mean_forgetting", float(np.mean(earlier)))

    def _end_methods(self, agent: ContinualDQN, segment: Segment) -> None:
        """Every method's segment end (the anchor estimates its Fisher and consolidates here)."""
        t0 = time.perf_counter()
        end = SegmentEnd(
            segment.game,
            segment.index,
            last=segment.index == len(self.schedule) - 1,
            seed=self.spec.seed,
            status=self._status,
        )
        for method in agent.methods:
            method.on_segment_end(agent, end)
        self.state.fisher_seconds += time.perf_counter() - t0

    def switch_task(self, agent: ContinualDQN, segment: Segment, task: str, logger: Logger) -> None:
        """The recogniser changed its context: tally the switch against the true ones, and move the agent there (the
        methods' segment end for the context it leaves: its Fisher, stored states, resets)."""
        t0 = time.perf_counter()
        record, step = self.state.recognition, agent.num_timesteps
        record["switches"].append({"step": step, "from": agent.game, "to": task, "game": segment.game})
        pending = record["true_switches"][-1] if record["true_switches"] else None
        if pending is not None and pending["detected"] is None and pending["segment"] == segment.index:
            pending["detected"] = step
        logger.record("recognition/switch", f"step {step}: {agent.game} -> {task} (playing {segment.game})")
        logger.dump(step)
        end = SegmentEnd(agent.game, len(record["switches"]) - 1, last=False, seed=self.spec.seed, status=self._status)
        agent.switch_task(task, end, keep_replay=self.cfg.agent.keep_replay)
        self.state.fisher_seconds += time.perf_counter() - t0

    def _log_recognition(self, logger: Logger, step: int) -> None:
        """The recogniser's accuracy so far, its cost and the confusion image (at each game switch)."""
        values = recognition.metrics(self.state.recognition)
        if values["overall_accuracy"] is not None:
            logger.record("recognition/accuracy", values["overall_accuracy"])
        logger.record("recognition/cost_share", self.state.recognition["seconds"] / max(self.wall(), 1e-9))
        tblog.log_confusion(logger, self.state.recognition["confusion"], self.columns, step)

    def _status(self, text: str) -> None:
        if self.pbar is not None:
            self.pbar.set_postfix_str(text)

    def _log_heatmap(self, logger: Logger, step: int) -> None:
        scores, units = metric_matrix(self.state.score_matrix, self.columns)
        rows = [f"{k + 1}: {s.game}" for k, s in enumerate(self.schedule[: len(scores)])]
        unit = {frozenset({"normalized"}): "normalised", frozenset({"raw"}): "raw"}.get(
            frozenset(units), "normalised where known, else raw"
        )
        # Normalised scores on a fixed 0 (random policy) .. 1 (reference) scale; raw returns have no common scale.
        limits = (0.0, 1.0) if set(units) == {"normalized"} else None
        tblog.log_score_heatmap(logger, scores, rows, self.columns, step, f"score matrix ({unit})", limits)

    def _log_switch(self, logger: Logger, step: int, seg: Segment) -> None:
        tblog.log_game_switch(logger, step, seg.index, seg.game, len(self.schedule))

    def wall(self) -> float:
        """Wall time of the whole run so far, earlier sessions of a resumed run included."""
        return self.state.wall_seconds + time.perf_counter() - self.t_start

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
            "score_matrix": self.state.score_matrix,
            "eval_history": self.state.eval_history,
            "settings": self.cfg.to_dict(),
            "versions": provenance.package_versions(),
            "provenance": self.state.provenance,
            "device": self.spec.device if self.device is None else self.device,
            "command": self.spec.command,
            "wall_time_s": round(self.wall(), 2),
            "eval_time_s": round(self.state.eval_seconds, 2),
            "fisher_time_s": round(self.state.fisher_seconds, 2),
            "probe_time_s": round(self.state.probe_seconds, 2),
            "plasticity": self.state.plasticity,
            "eval_all_games": self.spec.eval_all_games,
            "resumes": self.state.resumes,
            "normalized_matrix": normalized_matrix(self.state.score_matrix, self.columns),
        }
        if self.cfg.agent.task_inference == "inferred":
            summary["recognition"] = recognition.metrics(self.state.recognition)
        summary["metrics"] = summarize(summary) if self.state.score_matrix else {}
        return summary

    # -- checkpoints ---------------------------------------------------------------------------------

    def checkpoint(self, agent: ContinualDQN, segment: int, done_in_segment: int) -> None:
        """Write a checkpoint: ``segment`` is the next to run (or running), ``done_in_segment`` its steps so far."""
        if self.pbar is not None:
            self.pbar.set_postfix_str("checkpoint")
        tblog.flush(agent.logger)
        agent_meta, tensors, replays = agent.checkpoint_state(self.spec.checkpoint_replay)
        rng_meta, rng_tensors = checkpoints.rng_state()
        meta = {
            "step": agent.num_timesteps,
            "segment": segment,
            "done_in_segment": done_in_segment,
            "identity": self.identity(),
            "agent": agent_meta,
            "rng": rng_meta,
            "trainer": {**asdict(self.state), "wall_seconds": self.wall()},
            "kept_replays": sorted(agent.kept_replays),
            "with_replay": self.spec.checkpoint_replay,
            "replay_sizes": agent.replay_sizes(),
        }
        path = checkpoints.save(self.spec.logdir, meta, {**tensors, "rng": rng_tensors}, replays)
        self.last_checkpoint = (agent.num_timesteps, path)

    def _restore(self, agent: ContinualDQN, ckpt: checkpoints.Checkpoint) -> tuple[int, int]:
        """Load a checkpoint into the agent and the trainer; return (segment, steps done in it)."""
        meta = ckpt.meta
        segment, done = int(meta["segment"]), int(meta["done_in_segment"])
        game = self.schedule[segment].game if segment < len(self.schedule) else None
        try:
            agent.restore_checkpoint(meta["agent"], ckpt.state, ckpt.replays, game if done else None)
            checkpoints.set_rng_state(meta["rng"], ckpt.state["rng"])
            self.state = RunState(**meta["trainer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise checkpoints.CheckpointError(
                f"checkpoint {ckpt.path} does not fit this run: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}"
            ) from None
        self.last_checkpoint = (int(meta["step"]), ckpt.path)
        lost = self._replay_lost(meta, segment, done)
        self.state.resumes.append({"step": int(meta["step"]), "replay_lost": lost, **self.session})
        if lost != 0:
            what = "its replay memory" if lost is None else f"the {lost:,} replay transitions"
            tqdm.write(
                f"ewc-rl: resuming at step {meta['step']} without {what} the rest of the run would use: the "
                "checkpoint does not hold them (--checkpoint-replay writes them), so learning goes on without them",
                file=sys.stderr,
            )
        return segment, done

    def _replay_lost(self, meta: dict[str, Any], segment: int, done: int) -> int | None:
        """Transitions that the rest of the run would have used and the checkpoint does not hold (None: not counted,
        a checkpoint of an older version). A memory kept for a game that is not trained again is not lost."""
        if meta.get("with_replay") or segment >= len(self.schedule):
            return 0
        ahead = {s.game for s in self.schedule[segment:]}
        inferred = self.cfg.agent.task_inference == "inferred"  # kept memories are the contexts', any may recur
        sizes = meta.get("replay_sizes")
        if sizes is None:  # an older checkpoint: whether a memory was lost, not its size
            kept = any(inferred or game in ahead for game in meta.get("kept_replays", []))
            current = done > 0 or inferred or not self.cfg.agent.per_game_replay  # a memory that goes on
            return None if kept or current else 0
        return sum(n for key, n in sizes.items() if key == "current" or inferred or key.removeprefix("kept/") in ahead)

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
            logger = tblog.create_logger(spec.logdir, spec.log_formats)
        else:
            agent = self._build_agent()
            spec.logdir.mkdir(parents=True, exist_ok=True)
            logger = tblog.create_logger(spec.logdir, spec.log_formats)
        hparams = {
            **self.cfg.flat(),
            "run.games": ",".join(spec.games),
            "run.steps_per_game": (  # hparams take numbers and text, not mappings
                spec.steps_per_game
                if isinstance(spec.steps_per_game, int)
                else budget_text(spec.steps_per_game, list(dict.fromkeys(spec.games)))
            ),
            "run.cycles": spec.cycles,
            "run.seed": spec.seed,
            "run.agent": self.cfg.name,
        }
        if spec.track:
            from ewc_rl.tracking import tracker

            logger.output_formats.append(tracker(spec.track, spec.logdir, hparams, resume))
        if not resume:
            self._log_switch(logger, 0, self.schedule[0])
            tblog.log_layout(logger, self.columns)
            tblog.log_hparams(logger, hparams)
        agent.set_logger(logger)
        self.agent = agent
        self.device = str(agent.device)
        self.t_start = time.perf_counter()
        total = sum(s.steps for s in self.schedule)
        self.pbar = tqdm(
            total=total,
            initial=agent.num_timesteps,
            unit="step",
            dynamic_ncols=True,
            disable=not spec.progress,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        self.progress = ProgressFile(spec.logdir, total)
        self.progress.update(agent.num_timesteps)
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
            self.progress.update(agent.num_timesteps, force=True)
            logger.close()
        export.save(agent, agent.game, export.final_path(spec.logdir), self.cfg.eval.epsilon)
        summary = self.summary(complete=True)
        tblog.write_json(spec.logdir / "summary.json", summary)
        return summary

    def _run_segment(self, agent: ContinualDQN, seg: Segment, logger: Logger, done: int) -> None:
        """Train one segment (``done`` of its steps already behind it), then evaluate, consolidate, checkpoint."""
        spec = self.spec
        env_seed = spec.seed * 1_000 + seg.index + (7_919 * agent.num_timesteps if done else 0)
        env = (
            agent.env if seg.index == 0 and not done and agent.env is not None else self._train_env(seg.game, env_seed)
        )
        agent.begin_segment(env, seg.game, seg.steps, start=agent.num_timesteps - done)
        if agent.recognizer is not None and seg.index > 0 and not done:
            self.state.recognition["true_switches"].append(
                {"step": agent.num_timesteps, "segment": seg.index, "game": seg.game, "detected": None}
            )
        if self.probe is not None:
            self.probe.new_segment()
        assert self.pbar is not None
        self.pbar.set_description(f"[{seg.index + 1}/{len(self.schedule)}] {seg.game}")
        if seg.steps > done:
            callback = segment_callbacks(self, agent, seg, agent.num_timesteps - done + seg.steps)
            agent.learn(
                seg.steps - done,
                callback=callback,
                log_interval=None,  # type: ignore[arg-type]  # never
                reset_num_timesteps=False,
            )
        if self.stop.signum is not None and agent.num_timesteps - agent.segment_start < seg.steps:
            raise Interrupted(self.stop.signum, agent.num_timesteps)  # the callback wrote the checkpoint
        means = self.evaluate_seen(agent, seg, logger)
        self.state.score_matrix.append([means.get(g) for g in self.columns])
        self._log_heatmap(logger, agent.num_timesteps)
        if agent.recognizer is None:  # inferred tasks end at inferred switches (switch_task), not at the labels'
            self._end_methods(agent, seg)
            agent.end_segment(seg.game, keep_replay=self.cfg.agent.keep_replay)
        else:
            self._log_recognition(logger, agent.num_timesteps)
        env.close()
        summary = self.summary(complete=False)
        tblog.write_json(spec.logdir / "summary.json", summary)
        tblog.log_run_metrics(logger, summary["metrics"], agent.num_timesteps)
        if seg.index + 1 < len(self.schedule):  # logged before the checkpoint, so a resume never repeats it
            self._log_switch(logger, agent.num_timesteps, self.schedule[seg.index + 1])
        # Before the checkpoint: a resume starts after this segment and would never write the model.
        export.save(agent, agent.game, export.after_game_path(spec.logdir, seg.game), self.cfg.eval.epsilon)
        self.checkpoint(agent, seg.index + 1, 0)
        if self.stop.signum is not None and seg.index < len(self.schedule) - 1:
            raise Interrupted(self.stop.signum, agent.num_timesteps)
