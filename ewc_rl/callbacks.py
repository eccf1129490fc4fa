"""Per-step work during one segment, as stable-baselines3 callbacks composed in order.

The trainer hands ``learn`` one :class:`Sequence` of these (and of any callbacks the continual methods add):

    StopAndCheckpoint   SIGINT/SIGTERM and periodic checkpoints, at the first step of a ``train_freq`` chunk
    Recognize           with inferred tasks: the recogniser sees each new observation; the agent follows its context
    TrainLog            train/* points: episode returns, epsilon, fps, every ``log_every`` steps or episode end
    ProbeAtSwitch       the plasticity probe's states drawn and measured once the warm-up is over (ewc_rl/probe.py)
    PeriodicEval        every game seen so far, every ``eval.every`` agent steps
    (methods' callbacks)
    Progress            the progress bar, in global agent steps
    StopAtEnd           ends ``learn`` when the segment's last step is done

They share the trainer (its run state, logger, stop flag) and never reach into each other.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.type_aliases import TrainFreq

from ewc_rl.recognition import context_key

if TYPE_CHECKING:
    from ewc_rl.agent import ContinualDQN
    from ewc_rl.schedule import Segment
    from ewc_rl.trainer import Trainer


class Sequence(CallbackList):
    """SB3's ``CallbackList``, except that a callback returning False ends the step there.

    A stop request writes a checkpoint of the state before this step; nothing after it (a log point, an
    evaluation) may then change what the checkpoint claims to hold.
    """

    def _on_step(self) -> bool:
        return all(callback.on_step() for callback in self.callbacks)  # all() stops at the first False


class _SegmentCallback(BaseCallback):
    def __init__(self, trainer: Trainer, segment: Segment) -> None:
        super().__init__()
        self.trainer, self.segment = trainer, segment

    @property
    def agent(self) -> ContinualDQN:
        return self.model  # type: ignore[return-value]  # SB3 types it as its base class


class StopAndCheckpoint(_SegmentCallback):
    """Checkpoints on a stop signal and every ``checkpoint_every`` agent steps, at consistent points only."""

    def _on_training_start(self) -> None:
        every = self.trainer.spec.checkpoint_every
        self.next_ckpt = (self.num_timesteps // every + 1) * every if every else None

    def _at_chunk_start(self) -> bool:
        """True on the first step of a ``train_freq`` chunk: everything before this step is complete.

        SB3 calls the callback after an environment step but before storing that transition, and trains
        after each chunk; so here the learner's state is exactly "step - 1 finished", a consistent point.
        """
        agent = self.agent
        n = agent.n_envs
        chunk = cast(TrainFreq, agent.train_freq)  # SB3 turns the int it was given into a TrainFreq
        freq = chunk.frequency * (n if chunk.unit.value == "step" else 1)
        return (self.num_timesteps - n - agent.segment_start) % max(freq, 1) == 0

    def _checkpoint_here(self) -> None:
        agent = self.agent
        agent.num_timesteps -= agent.n_envs  # the state saved is that of the previous step (see above)
        try:
            self.trainer.checkpoint(agent, self.segment.index, agent.num_timesteps - agent.segment_start)
        finally:
            agent.num_timesteps += agent.n_envs

    def _on_step(self) -> bool:
        if not (self._at_chunk_start() and self.num_timesteps - self.agent.n_envs > self.agent.segment_start):
            return True
        if self.trainer.stop.signum is not None:
            self._checkpoint_here()
            return False
        every = self.trainer.spec.checkpoint_every
        if self.next_ckpt is not None and self.num_timesteps > self.next_ckpt:
            self._checkpoint_here()
            self.next_ckpt = ((self.num_timesteps - 1) // every + 1) * every
        return True


class Recognize(_SegmentCallback):
    """With inferred tasks: the recogniser sees every new observation (after the checkpoint callback, which saves
    the state before this step), and a change of its context moves the agent's per-game parts there; the step is
    tallied against the true game, which only the trainer knows.

    Kept to a few operations per step (inside training, with the network's update between steps, each costs many
    times what it costs alone): the tally counts steps in the current context and enters the confusion table when
    the context changes and at each rollout's end (so a checkpoint, taken at a chunk's start, has every step before
    it); TrainLog records the context with its other points."""

    def _on_training_start(self) -> None:
        self.context: int | None = None  # the context of the steps counted in ``steps``
        self.steps = 0
        self.row = self.trainer.state.recognition["confusion"].setdefault(self.segment.game, {})

    def _tally(self) -> None:
        if self.steps:
            key = str(self.context)
            self.row[key] = self.row.get(key, 0) + self.steps
            self.steps = 0

    def _on_step(self) -> bool:
        agent = self.agent
        recognizer = agent.recognizer
        assert recognizer is not None
        t0 = time.perf_counter()
        new_obs = self.locals["new_obs"]
        if len(new_obs) == 1:  # one environment: no iterator over the rows
            recognizer.push(new_obs[0])
        else:
            for obs in new_obs:
                recognizer.push(obs)
        context = recognizer.current
        changed = context != self.context
        if changed:
            self._tally()
            self.context = context
        self.steps += agent.n_envs
        self.trainer.state.recognition["seconds"] += time.perf_counter() - t0
        if changed and context_key(context) != agent.game:
            self.trainer.switch_task(agent, self.segment, context_key(context), self.logger)
        return True

    def _on_rollout_end(self) -> None:
        self._tally()

    def _on_training_end(self) -> None:
        self._tally()


class TrainLog(_SegmentCallback):
    """train/* points: each finished episode's return, and epsilon, fps and the game every ``log_every`` steps."""

    def __init__(self, trainer: Trainer, segment: Segment, end_step: int) -> None:
        super().__init__(trainer, segment)
        self.end_step = end_step

    def _on_training_start(self) -> None:
        self.next_log = self.num_timesteps + self.trainer.spec.log_every
        self._mark()

    def _mark(self) -> None:
        self.mark_step, self.mark_time, self.mark_eval = (
            self.num_timesteps,
            time.perf_counter(),
            self.trainer.state.eval_seconds,
        )

    def _dump(self) -> None:
        busy = (time.perf_counter() - self.mark_time) - (self.trainer.state.eval_seconds - self.mark_eval)
        if self.num_timesteps > self.mark_step and busy > 0:
            self.logger.record("train/fps", (self.num_timesteps - self.mark_step) / busy)
        self.logger.record("train/epsilon", self.agent.exploration_rate)
        self.logger.record("train/game", self.segment.index)
        if self.agent.recognizer is not None:  # the inferred context against the true game
            self.logger.record("recognition/context", self.agent.recognizer.current)
            self.logger.record("recognition/game", self.trainer.columns.index(self.segment.game))
        self.logger.dump(self.num_timesteps)
        self._mark()

    def _on_step(self) -> bool:
        episode_ended = False
        for info in self.locals["infos"]:
            if "episode" in info:
                self.trainer.state.last_return = float(info["episode"]["r"])
                self.logger.record("train/episode_return", self.trainer.state.last_return)
                episode_ended = True
        if episode_ended or self.num_timesteps >= self.next_log:
            self._dump()
            self.next_log = self.num_timesteps + self.trainer.spec.log_every
        return True

    def _on_training_end(self) -> None:
        # A segment shorter than log_every, with no episode ended (several environments share its steps),
        # would otherwise leave no train/* point at all.
        if self.num_timesteps >= self.end_step and self.num_timesteps > self.mark_step:
            self._dump()


class PeriodicEval(_SegmentCallback):
    """Every game seen so far, every ``eval.every`` agent steps (the segment's end gets its own evaluation)."""

    def __init__(self, trainer: Trainer, segment: Segment, end_step: int) -> None:
        super().__init__(trainer, segment)
        self.end_step, self.every = end_step, trainer.cfg.eval.every

    def _on_training_start(self) -> None:
        self.next_eval = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            if self.num_timesteps < self.end_step:
                self.trainer.evaluate_seen(self.agent, self.segment, self.logger)
            self.next_eval += self.every
        return True


class ProbeAtSwitch(_SegmentCallback):
    """Draws the segment's probe states once the warm-up has filled the memory, before the first update, and
    measures the network there: the network the previous game left, on the new game's states."""

    def _on_step(self) -> bool:
        probe, agent = self.trainer.probe, self.agent
        if probe is None or probe.data is not None or self.num_timesteps < agent.learning_starts:
            return True
        probe.draw(agent)
        at_switch = self.num_timesteps <= max(agent.learning_starts, agent.segment_start) + agent.n_envs
        self.trainer.log_probe(agent, self.segment, self.logger, "switch" if at_switch else "resume")
        return True


class Progress(_SegmentCallback):
    """The progress bar counts global agent steps and shows epsilon and the last training return; the run's
    progress file (read by ``ewc-rl compare``) follows it."""

    def _on_step(self) -> bool:
        if self.trainer.progress is not None:
            self.trainer.progress.update(self.num_timesteps)
        bar = self.trainer.pbar
        if bar is not None:
            bar.update(self.num_timesteps - bar.n)
            last = self.trainer.state.last_return
            bar.set_postfix_str(
                f"eps={self.agent.exploration_rate:.3f} ret={'-' if last is None else f'{last:g}'}", refresh=False
            )
        return True


class StopAtEnd(_SegmentCallback):
    """Ends ``learn`` once the segment's last agent step is done."""

    def __init__(self, trainer: Trainer, segment: Segment, end_step: int) -> None:
        super().__init__(trainer, segment)
        self.end_step = end_step

    def _on_step(self) -> bool:
        return self.num_timesteps < self.end_step


def segment_callbacks(trainer: Trainer, agent: ContinualDQN, segment: Segment, end_step: int) -> Sequence:
    """The callbacks of one segment, in the order they run at every step."""
    extra = [cb for method in agent.methods for cb in method.callbacks(agent)]
    recognize = [Recognize(trainer, segment)] if agent.recognizer is not None else []
    return Sequence(
        [
            StopAndCheckpoint(trainer, segment),
            *recognize,
            TrainLog(trainer, segment, end_step),
            ProbeAtSwitch(trainer, segment),
            PeriodicEval(trainer, segment, end_step),
            *extra,
            Progress(trainer, segment),
            StopAtEnd(trainer, segment, end_step),
        ]
    )
