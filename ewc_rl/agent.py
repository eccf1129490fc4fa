"""The learner: stable-baselines3's DQN with continual methods, Double DQN, and per-game phases.

``ContinualDQN`` is a plain SB3 ``DQN`` subclass, so ``predict``, ``save`` and ``load`` work as in SB3. It adds:

* the hooks of its continual methods (:mod:`ewc_rl.methods`: a quadratic anchor such as EWC, and others),
  called at fixed points of every update and segment; loss = Huber TD loss + what the methods add,
  optionally with Double DQN targets;
* :meth:`begin_segment`: switches to a game: its replay memory, its per-game layers (if any), its
  epsilon schedule and warm-up, while the global step counter and the TensorBoard run go on. Epsilon
  either restarts with every segment (``epsilon_per="segment"``: SB3's ``exploration_fraction`` of the
  segment) or follows the game's own step count across visits (``"game"``: 1 during the warm-up, then
  linear to ``exploration_final_eps`` over ``epsilon_decay_steps``, as in the EWC paper). The warm-up
  (``learning_starts`` random steps without updates) is needed only while a game's memory is empty or
  younger than ``learning_starts`` steps;
* task inference (``recognizer``): without labels, the game the trainer names is ignored; a recogniser
  (:mod:`ewc_rl.recognition`) fed by the trainer infers a context from the frames, and :meth:`switch_task` moves
  every per-game part to it (the methods' segment end and start run there). ``game`` is then a context's key
  (``context-<k>``), which is what every per-game part is keyed by in either mode;
* :meth:`estimate_fisher`: the Fisher of the current Q-network over replay states (any estimator of
  :data:`ewc_rl.fisher.ESTIMATORS`);
* :meth:`checkpoint_state` / :meth:`restore_checkpoint`: everything a resume needs, as JSON values,
  tensors and raw arrays (no pickled objects; see :mod:`ewc_rl.checkpoints`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device, polyak_update
from stable_baselines3.common.vec_env import VecEnv

from ewc_rl import envs, networks, optimizers
from ewc_rl import fisher as fisher_lib
from ewc_rl import methods as methods_lib
from ewc_rl.config import Config
from ewc_rl.errors import UsageError
from ewc_rl.methods import Method, SegmentEnd
from ewc_rl.methods.anchor import QuadraticAnchor
from ewc_rl.penalty import Penalty
from ewc_rl.recognition import Recognizer, context_index, context_key
from ewc_rl.replay import FrameReplayBuffer, buffer_state, load_buffer_state, sample_transitions


class NonFiniteLossError(FloatingPointError):
    """The TD loss or the penalty became NaN/inf."""


class ContinualDQN(DQN):
    """SB3 DQN + continual methods + Double DQN + per-game epsilon, warm-up and replay.

    ``methods`` run their hooks in the order given; ``penalty`` is a shorthand for one quadratic anchor
    (``methods=[QuadraticAnchor(penalty=penalty)]``), as SB3 users write ``DQN("MlpPolicy", env, ...)``.
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        *,
        methods: list[Method] | None = None,
        penalty: Penalty | None = None,
        double_dqn: bool = False,
        per_game_replay: bool = True,
        skip_nonfinite: bool = False,
        games: list[str] | None = None,
        epsilon_per: str = "segment",
        epsilon_decay_steps: int = 1_000_000,
        recognizer: Recognizer | None = None,
        **kwargs: Any,
    ) -> None:
        if methods is not None and penalty is not None:
            raise ValueError("give methods or penalty, not both")
        self.methods: list[Method] = methods if methods is not None else [QuadraticAnchor(penalty=penalty)]
        self.double_dqn = double_dqn
        self.per_game_replay = per_game_replay
        self.skip_nonfinite = skip_nonfinite
        self.games = list(games or [])
        self.epsilon_per = epsilon_per
        self.epsilon_decay_steps = epsilon_decay_steps
        self.skipped_updates = 0
        self.recognizer = recognizer
        self._entered = False  # whether this process has entered a game (context) yet
        self.task_start = 0  # global step at which the current game (or inferred context) was entered
        self.segment_start = 0
        self.segment_steps = 0
        self.game = ""  # the key of the current per-game parts: the game's name, or its inferred context's
        self.game_steps: dict[str, int] = {}  # agent steps trained on each game (context) before it was last entered
        self.base_learning_starts = int(kwargs.get("learning_starts", 100))
        self.kept_replays: dict[str, ReplayBuffer] = {}
        super().__init__(policy, env, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "kept_replays"]

    def _setup_model(self) -> None:
        super()._setup_model()
        networks.lay_out(self.policy, self.device)
        # SB3 switches every module's train/eval mode on each predict and each train() call; that is pure cost
        # (about 5% of MinAtar training) unless some layer behaves differently in the two modes.
        self.mode_matters = any(
            isinstance(m, (th.nn.Dropout, th.nn.modules.batchnorm._BatchNorm)) for m in self.policy.modules()
        )
        for method in self.methods:
            method.setup(self)

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        super().set_parameters(*args, **kwargs)
        optimizers.match_layouts(self.policy.optimizer)  # a zip saved with other strides (SB3's load path)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        if not self._custom_logger and self.verbose < 1 and self.tensorboard_log is None:
            # SB3 would make an empty SB3-<time> folder in the temp directory for a logger that writes nothing.
            self.set_logger(Logger(folder=None, output_formats=[]))
        return super()._setup_learn(*args, **kwargs)

    def _set_training_mode(self, mode: bool) -> None:
        if self.mode_matters:
            self.policy.set_training_mode(mode)

    def _greedy(self, observation: np.ndarray) -> np.ndarray:
        """SB3's ``policy.predict`` of a batch of array observations: the same forward and argmax, without its
        per-call mode switch and generic observation handling, which cost as much as a small network's forward."""
        self._set_training_mode(False)
        with th.no_grad():
            shape = self.observation_space.shape or ()
            obs = th.as_tensor(observation.reshape((-1, *shape)), device=self.device)
            return self.q_net(obs).argmax(dim=1).cpu().numpy()

    @property
    def penalty(self) -> Penalty:
        """The first quadratic anchor's penalty (a penalty of kind ``none`` without one)."""
        anchor = next((m for m in self.methods if isinstance(m, QuadraticAnchor)), None)
        return anchor.penalty if anchor is not None else Penalty("none")

    # -- phases --------------------------------------------------------------------------------------

    def begin_segment(self, env: VecEnv, game: str, steps: int, start: int | None = None) -> None:
        """Train on ``game`` for ``steps`` agent steps counted from global step ``start`` (default: now).

        A ``start`` in the past resumes a segment: epsilon continues where it was, and the warm-up
        re-collects ``learning_starts`` transitions unless the game's replay memory was restored.
        """
        if env is not self.env:
            self.set_env(env)
        self.segment_start = self.num_timesteps if start is None else start
        self.segment_steps = steps
        if self.recognizer is None:
            self.enter_task(game, self.segment_start)
        elif not self._entered:
            # Inferred tasks: the label is the trainer's; the agent goes on with the context it is in (the run's
            # first context at its start, the checkpoint's on a resume) until the recogniser says otherwise.
            self.enter_task(self.game or context_key(self.recognizer.current), self.task_start)

    def enter_task(self, task: str, start: int) -> None:
        """Make ``task`` (a game, or an inferred context's key) current since global step ``start``: its per-game
        layers, replay memory, warm-up and epsilon; then the methods' segment start."""
        self.game = task
        self.task_start = start
        self._entered = True
        self.select_game(task)
        if self.per_game_replay:
            memory = self.kept_replays.pop(task, None)
            if memory is None or memory.size() == 0:
                self.replay_buffer = self._new_replay_buffer()
                self.learning_starts = self.num_timesteps + self.base_learning_starts
            else:  # a kept or restored memory: only what is left of the game's first warm-up
                self.replay_buffer = memory
                self.learning_starts = start + max(0, self.base_learning_starts - self.game_steps.get(task, 0))
        elif self.replay_buffer is not None and self.replay_buffer.size() == 0:  # new, or resumed without it
            self.learning_starts = self.num_timesteps + self.base_learning_starts
        else:
            trained = sum(self.game_steps.values()) + self.num_timesteps - start
            self.learning_starts = self.num_timesteps + max(0, self.base_learning_starts - trained)
        self.exploration_rate = self._epsilon()
        for method in self.methods:
            method.on_segment_start(self, task)

    def switch_task(self, task: str, end: SegmentEnd, keep_replay: bool) -> None:
        """An inferred switch: the methods' segment end for the current context (its replay still in place), its
        memory kept or freed, then ``task`` entered now."""
        for method in self.methods:
            method.on_segment_end(self, end)
        self.end_segment(self.game, keep_replay)
        self.enter_task(task, self.num_timesteps)

    def task_index(self, game: str) -> int:
        """The per-game layers' slot of ``game`` (a game's name, or with inferred tasks a context's key)."""
        return context_index(game) if self.recognizer is not None else self.games.index(game)

    def select_game(self, game: str) -> None:
        """Use ``game``'s biases and gains in the online and target networks (no-op without per-game layers)."""
        known = game.startswith("context-") if self.recognizer is not None else game in self.games
        if known and isinstance(self.policy, networks.PerGameCnnPolicy):
            self.policy.set_game(self.task_index(game))  # the online and the target network

    def steps_on(self, game: str) -> int:
        """Agent steps trained on ``game`` so far, the current segment included."""
        return self.game_steps.get(game, 0) + (self.num_timesteps - self.task_start if game == self.game else 0)

    def _epsilon(self) -> float:
        if self.epsilon_per == "game":
            t = self.steps_on(self.game)
            if t < self.base_learning_starts:
                return 1.0
            fraction = min(1.0, (t - self.base_learning_starts) / self.epsilon_decay_steps)
            return self.exploration_initial_eps + fraction * (self.exploration_final_eps - self.exploration_initial_eps)
        if not self.segment_steps:
            return self.exploration_schedule(self._current_progress_remaining)
        return self.exploration_schedule(max(1.0 - (self.num_timesteps - self.task_start) / self.segment_steps, 0))

    def end_segment(self, game: str, keep_replay: bool) -> None:
        """Count the game's steps; keep its memory for a revisit, or free it."""
        self.game_steps[game] = self.steps_on(game)
        if self.per_game_replay:
            if keep_replay and self.replay_buffer is not None:
                self.kept_replays[game] = self.replay_buffer
            self.replay_buffer = None

    def _new_replay_buffer(self) -> ReplayBuffer:
        assert self.replay_buffer_class is not None
        return self.replay_buffer_class(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            optimize_memory_usage=self.optimize_memory_usage,
            **self.replay_buffer_kwargs,
        )

    def _on_step(self) -> None:
        # SB3's version, with epsilon following the current segment or game rather than the whole run.
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
            polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
        self.exploration_rate = self._epsilon()

    def predict(
        self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Epsilon-greedy with one coin per environment.

        SB3's ``DQN.predict`` flips one coin for the whole batch, so with ``n_envs > 1`` all environments would
        explore or exploit together. With one environment this draws the same random numbers as SB3's.
        """
        if deterministic or not self._is_batch(observation):
            return super().predict(observation, state, episode_start, deterministic)
        n = len(observation)
        explore = np.random.rand(n) < self.exploration_rate
        if n == 1:  # the usual case, without numpy's reductions below (same draws)
            return (np.array([self.action_space.sample()]) if explore[0] else self._greedy(observation)), state
        if explore.all():
            return np.array([self.action_space.sample() for _ in range(n)]), state
        action = self._greedy(observation)
        for i in np.flatnonzero(explore):
            action[i] = self.action_space.sample()
        return action, state

    def _is_batch(self, observation: Any) -> bool:
        """SB3's ``is_vectorized_observation``, answered from the shape alone for an array batch of the space's
        (channel-first) observations: SB3 re-inspects the space on every call, a tenth of MinAtar's acting time."""
        shape = self.observation_space.shape
        if isinstance(observation, np.ndarray) and shape is not None and observation.shape[1:] == shape:
            return True
        return not isinstance(observation, dict) and self.policy.is_vectorized_observation(observation)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's, without its deep copy of every step's observations: both replay buffers copy what they store, so
        only a batch in which an episode's terminal observation replaces a row needs a copy of its own."""
        if self._vec_normalize_env is not None or not isinstance(new_obs, np.ndarray):
            return super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        next_obs = new_obs
        for i in np.flatnonzero(dones):
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:
                next_obs = new_obs.copy() if next_obs is new_obs else next_obs
                next_obs[i] = terminal
        self._last_original_obs = self._last_obs
        replay_buffer.add(self._last_obs, next_obs, buffer_action, reward, dones, infos)  # type: ignore[arg-type]  # set by SB3's learn
        self._last_obs = new_obs

    # -- learning ------------------------------------------------------------------------------------

    def td_targets(self, data: ReplayBufferSamples) -> th.Tensor:
        """r + gamma^n (1 - done) Q_target(s', a'), a' = argmax of the target (DQN) or online (Double DQN) net."""
        discounts = data.discounts if data.discounts is not None else self.gamma
        with th.no_grad():
            next_q = self.q_net_target(data.next_observations)
            if self.double_dqn:
                next_actions = self.q_net(data.next_observations).argmax(dim=1, keepdim=True)
                next_q = next_q.gather(1, next_actions)
            else:
                next_q = next_q.max(dim=1, keepdim=True).values
            return data.rewards + (1 - data.dones) * discounts * next_q

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self._set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        params = self.shared_parameters()
        for _ in range(gradient_steps):
            # Methods may supply part of the batch themselves (rehearsal: earlier games' transitions); the
            # current game's share of the mean over the whole batch is then its mean times its fraction.
            own = batch_size - sum(method.batch_share(self, batch_size) for method in self.methods)
            data = self.replay_buffer.sample(own, env=self._vec_normalize_env)  # type: ignore[union-attr]  # set in a segment
            target = self.td_targets(data)
            # States the methods need Q-values of go through the same forward (see Method.inputs).
            joined = [method.inputs(self, data) for method in self.methods]
            extra_rows = [x for x in joined if x is not None]
            q_all = self.q_net(th.cat([data.observations, *extra_rows]) if extra_rows else data.observations)
            q = q_all[:own].gather(1, data.actions.long())
            td_loss = F.smooth_l1_loss(q, target)
            loss = td_loss if own == batch_size else td_loss * (own / batch_size)
            start = own
            for method, rows in zip(self.methods, joined, strict=True):
                if rows is None:
                    extra = method.loss(self, data)
                else:
                    extra = method.joined_loss(self, data, q_all[start : start + len(rows)])
                    start += len(rows)
                if extra is not None:
                    loss = loss + extra
            self.policy.optimizer.zero_grad()
            loss.backward()
            # Methods may add their gradients directly (the penalty: lambda A (theta - mu), no graph); values that
            # cost a pass of their own are computed on every 8th update only, where they are also logged.
            log = self._n_updates % 8 == 0
            values = {"td_loss": td_loss.item()}
            for method in self.methods:
                values |= method.on_gradients(self, params, log)
            self._n_updates += 1
            if not all(np.isfinite(v) for v in values.values()):
                if self.skip_nonfinite:
                    self.skipped_updates += 1
                    self.logger.record("train/skipped_updates", self.skipped_updates)
                    continue
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                raise NonFiniteLossError(f"non-finite loss at step {self.num_timesteps}: {shown}")
            # The online network's parameters are those of the policy that have gradients (the target's never do),
            # in the same order; SB3 passes the policy's, twice as many to filter on every update.
            th.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            for method in self.methods:
                method.after_step(self)
            for key, value in values.items():
                self.logger.record_mean(f"train/{key}", value)

    # -- consolidation -------------------------------------------------------------------------------

    def shared_parameters(self) -> dict[str, th.nn.Parameter]:
        """The Q-network's parameters that every game uses: those the penalty and the Fisher cover."""
        return {n: p for n, p in self.q_net.named_parameters() if not networks.is_per_game(n)}

    def estimate_fisher(
        self, estimator: str, n_states: int, tau: float = 1.0, chunk_size: int = 32, seed: int = 0
    ) -> dict[str, th.Tensor]:
        """The diagonal Fisher of the current Q-network over ``n_states`` states of the current replay."""
        assert self.replay_buffer is not None, "no replay memory to take Fisher states from"
        data = sample_transitions(self.replay_buffer, n_states, np.random.default_rng(seed))
        was_training = self.policy.training
        self.policy.set_training_mode(False)
        fisher = fisher_lib.estimate(
            estimator, self.q_net, data, self.td_targets, tau=tau, chunk_size=chunk_size, seed=seed
        )
        self.policy.set_training_mode(was_training)
        return {n: f for n, f in fisher.items() if not networks.is_per_game(n)}

    def consolidate(self, game: str, fisher: dict[str, th.Tensor] | None) -> None:
        """Anchor every quadratic anchor's penalty for ``game`` at the current parameters."""
        for method in self.methods:
            if isinstance(method, QuadraticAnchor):
                method.consolidate(self, game, fisher)

    # -- checkpoints ---------------------------------------------------------------------------------

    _COUNTERS = (
        "num_timesteps",
        "_n_calls",
        "_n_updates",
        "_episode_num",
        "learning_starts",
        "segment_start",
        "segment_steps",
        "skipped_updates",
        "task_start",
    )

    def checkpoint_state(
        self, with_replay: bool
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, np.ndarray]]]:
        """(JSON values, tensors, replay arrays) describing the learner completely.

        The tensors are the live ones, as torch's ``state_dict`` gives them: write or copy them before training on
        (restoring an agent in the same process from them would share, e.g., Adam's step counters).
        """
        meta: dict[str, Any] = {k: int(getattr(self, k)) for k in self._COUNTERS}
        meta["game_steps"] = dict(self.game_steps)
        meta["task"] = self.game
        meta["action_space_rng"] = self.action_space.np_random.bit_generator.state
        tensors = {
            "policy": self.policy.state_dict(),
            "optimizer": self.policy.optimizer.state_dict(),
            "methods": {m.name: m.state_dict() for m in self.methods},
        }
        if self.recognizer is not None:
            state = self.recognizer.state_dict()
            tensors["recognition"] = {k: th.from_numpy(v) for k, v in state.items() if isinstance(v, np.ndarray)}
            meta["recognition"] = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        replays: dict[str, dict[str, np.ndarray]] = {}
        if with_replay:
            if self.replay_buffer is not None:
                replays["current"] = buffer_state(self.replay_buffer)
            for game, buffer in self.kept_replays.items():
                replays[f"kept/{game}"] = buffer_state(buffer)
        return meta, tensors, replays

    def replay_sizes(self) -> dict[str, int]:
        """Transitions in each replay memory, by the key a checkpoint stores it under (``current``, ``kept/<game>``)."""
        memories = {"current": self.replay_buffer} | {f"kept/{g}": b for g, b in self.kept_replays.items()}
        return {key: b.size() * b.n_envs for key, b in memories.items() if b is not None}

    def restore_checkpoint(
        self,
        meta: dict[str, Any],
        tensors: dict[str, Any],
        replays: dict[str, dict[str, np.ndarray]],
        current_game: str | None,
    ) -> None:
        """Inverse of :meth:`checkpoint_state`; ``current_game`` receives the ``current`` replay memory."""
        for k in self._COUNTERS:
            setattr(self, k, meta[k] if k != "task_start" else meta.get(k, meta["segment_start"]))
        self.game = str(meta.get("task", self.game))
        if self.recognizer is not None:
            self.recognizer.load_state_dict(
                {**meta["recognition"], **{k: v.numpy() for k, v in tensors["recognition"].items()}}
            )
            current_game = self.game  # its replay stays in place across the trainer's segment boundaries
        self.game_steps = {str(g): int(n) for g, n in meta["game_steps"].items()}
        self.action_space.np_random.bit_generator.state = meta["action_space_rng"]
        self.policy.load_state_dict(tensors["policy"])
        # A state dict carries the fused/foreach flags it was saved with; this machine's choice wins.
        optimizer = self.policy.optimizer
        flags = {k: optimizer.defaults[k] for k in ("fused", "foreach") if k in optimizer.defaults}
        saved = tensors["optimizer"]
        optimizer.load_state_dict({**saved, "param_groups": [g | flags for g in saved["param_groups"]]})
        optimizers.match_layouts(optimizer)
        if sorted(tensors["methods"]) != sorted(m.name for m in self.methods):
            raise ValueError(
                f"the checkpoint holds the methods {sorted(tensors['methods'])}, this agent runs "
                f"{sorted(m.name for m in self.methods)}"
            )
        for method in self.methods:
            method.load_state_dict(tensors["methods"][method.name], self.device)
        self.kept_replays = {}
        for key, arrays in replays.items():
            buffer = self._new_replay_buffer()
            load_buffer_state(buffer, arrays)
            if key == "current" and not self.per_game_replay:
                self.replay_buffer = buffer  # the one shared memory, whatever the game
            elif key == "current" and current_game is not None:
                self.kept_replays[current_game] = buffer
            elif key.startswith("kept/"):
                self.kept_replays[key.removeprefix("kept/")] = buffer


def replay_class(cfg: Config, game: str) -> type[BaseBuffer] | None:
    """The replay buffer ``agent.replay`` asks for: frames (stacked Atari frames stored once) or SB3's."""
    stacked = envs.suite(game) == "atari" and cfg.env.frame_stack > 1 and cfg.dqn.n_steps == 1
    kind = cfg.agent.replay if cfg.agent.replay != "auto" else ("frames" if stacked else "sb3")
    if kind == "frames" and not stacked:
        raise UsageError(
            "agent.replay = 'frames' needs stacked Atari frames (env.frame_stack > 1) and "
            "dqn.n_steps = 1; use 'auto' or 'sb3'"
        )
    return FrameReplayBuffer if kind == "frames" else None


def make_agent(cfg: Config, env: VecEnv, games: list[str], *, seed: int, device: str) -> ContinualDQN:
    """The learner an agent file describes, for ``games`` (the columns: per-game layers are indexed by them).

    ``dqn.train_freq`` counts agent steps per update whatever ``agent.n_envs`` is: with n parallel
    environments SB3 steps n agents at once, so its own ``train_freq`` (in vector steps) and
    ``gradient_steps`` are scaled to keep the same number of updates per agent step.
    """
    c = cfg
    network = networks.resolve(c.agent.network, envs.suite(games[0]))
    recognizer = None
    if c.agent.task_inference == "inferred":
        try:
            recognizer = Recognizer(tuple(env.observation_space.shape or ()), c.recognition)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    slots = c.recognition.max_contexts if recognizer is not None else len(games)  # per-game layers' slots
    policy, policy_kwargs = networks.policy(
        network,
        slots if c.agent.per_game_layers else 0,
        heads=slots if c.agent.per_game_head else 0,
        activation=c.agent.activation,
        layer_norm=c.agent.layer_norm,
    )
    policy_kwargs |= optimizers.policy_kwargs(c.agent, get_device(device))
    dqn = vars(c.dqn) | {
        "train_freq": max(c.dqn.train_freq // env.num_envs, 1),
        "gradient_steps": c.dqn.gradient_steps * max(env.num_envs // c.dqn.train_freq, 1),
    }
    return ContinualDQN(
        policy,
        env,
        methods=methods_lib.build(c),
        policy_kwargs=policy_kwargs,
        games=games,
        double_dqn=c.agent.double_dqn,
        per_game_replay=c.agent.per_game_replay,
        epsilon_per=c.agent.epsilon_per,
        epsilon_decay_steps=c.agent.epsilon_decay_steps,
        recognizer=recognizer,
        skip_nonfinite=c.agent.on_nonfinite == "skip",
        replay_buffer_class=replay_class(c, games[0]),
        replay_buffer_kwargs={"handle_timeout_termination": not c.dqn.optimize_memory_usage},
        seed=seed,
        device=device,
        **dqn,
    )
