"""``ewc-rl bench``: throughput, replay memory and Fisher cost, measured side by side on real ALE.

Every learner here uses the Nature CNN with a linear Q head, batch 32, one update per 4 agent steps, the
full 18 actions and the same ale-py vector environment (so preprocessing is identical):

* ``ewc_rl``: the agent ``make_agent`` builds from an agent file (its ``agent.n_envs`` environments, the
  frame replay, the fastest optimiser implementation: :mod:`ewc_rl.optimizers`), with Double DQN off so
  that its updates are the same as stock DQN's;
* ``ewc_rl + EWC``: the same with an EWC penalty holding 10 anchors;
* ``ewc_rl`` again, as a second learner (an A/A control: its ratio to the first would be 1 on a steady machine, so
  its distance from 1 is a lower bound on the noise of this run's ratios);
* ``sb3``: stock stable-baselines3 ``DQN`` on one environment, exactly as it ships (torch's default Adam);
* ``limit``: a bare torch loop doing only the same work: batched greedy actions, environment steps, and
  the same update (with the fastest optimiser implementation) on minibatches from a plain tensor ring;
* one learner per continual method of :data:`METHODS` at its default settings, which are active only once a game
  has ended: after the warm-up, the methods' segment end runs as if the warm-up's replay were an earlier game's.

Steps per second are measured after the warm-up (``learning_starts``) and a few hundred further steps (the
first updates allocate optimiser state and create kernels), when every learner trains, in interleaved
rounds (see :func:`_throughput`): on a shared machine the speed drifts by tens of percent over minutes, and
learners timed one after the other measured that drift more than their own differences.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import NatureCNN
from tqdm import tqdm

from ewc_rl import fisher as fisher_lib
from ewc_rl import networks
from ewc_rl.agent import make_agent
from ewc_rl.config import Config, load_config
from ewc_rl.envs import make_env
from ewc_rl.evaluation import evaluate
from ewc_rl.methods import SegmentEnd
from ewc_rl.optimizers import fast_optimizer_kwargs
from ewc_rl.replay import FrameReplayBuffer, sample_transitions

TARGETS = {
    "throughput_ratio_ewc_vs_plain": (">=", 0.97),
    "throughput_ratio_plain_vs_sb3": (">=", 1.3),
    "throughput_ratio_plain_vs_limit": (">=", 0.85),
    "replay_bytes_per_transition": ("<=", 7200),
    "fisher_ratio_vs_batched_backward": (">=", 0.4),
    "eval_share": ("<=", 0.15),
    "throughput_ratio_rehearsal_vs_plain": (">=", 0.9),
    "throughput_ratio_functional_vs_plain": (">=", 0.9),
    "throughput_ratio_si_vs_plain": (">=", 0.97),
    "throughput_ratio_mas_vs_plain": (">=", 0.97),
}
# Figures without a target, combined over repeats like the keys: the A/A control (see the module's docstring).
CONTROLS = ("throughput_ratio_plain_vs_plain",)
# The agent-file settings that turn each continual method on (its key: throughput_ratio_<name>_vs_plain); the
# agent file's penalty stays (kind "none": it costs nothing).
METHODS = {
    "rehearsal": ['agent.methods=["penalty", "rehearsal"]'],
    "functional": ['agent.methods=["penalty", "functional"]'],
    "si": ["penalty.kind='ewc'", "penalty.fisher='si'"],
    "mas": ["penalty.kind='ewc'", "penalty.fisher='mas'"],
}


@dataclass
class BenchSizes:
    """How long each measurement runs."""

    warmup: int  # agent steps before updates start (learning_starts)
    settle: int  # agent steps of updates before the clock starts (first updates allocate and compile kernels)
    steps: int  # agent steps timed
    sb3_steps: int
    replay: int  # transitions filled into the frame replay that is measured
    fisher_states: int
    eval_episodes: int
    rounds: int  # the timed steps of each learner are split into this many interleaved chunks

    @classmethod
    def of(cls, mode: str) -> BenchSizes:
        return {
            "tiny": cls(100, 20, 64, 64, 300, 32, 1, 2),
            # Two (full: four) rotations of the nine learners' order; a learner's chunk takes about a second (full:
            # two), so that a drift of the machine's speed falls on all of them alike: three rounds of 1,000 steps
            # left ratios of one quick bench ±0.05–0.1 apart from repeat to repeat on a drifting machine.
            "quick": cls(1_000, 200, 3_000, 1_500, 10_000, 640, 4, 18),
            "full": cls(5_000, 400, 12_000, 6_000, 50_000, 3_200, 10, 36),
        }[mode]


def _bench_config(agent: str, sizes: BenchSizes, overrides: list[str]) -> Config:
    return load_config(
        agent,
        [
            f"dqn.learning_starts={sizes.warmup}",
            f"dqn.buffer_size={sizes.replay}",
            "dqn.target_update_interval=1000",
            "dqn.train_freq=4",
            "dqn.batch_size=32",
            "agent.double_dqn=false",
            "agent.network='nature'",
            "agent.per_game_layers=false",
            *overrides,
        ],
    )


class _Learner:
    """One learner of the throughput comparison, brought past its warm-up, then timed in chunks."""

    def advance(self, steps: int) -> int:
        """Run at least ``steps`` agent steps (whole vector steps and train_freq chunks); return how many."""
        raise NotImplementedError

    def timed(self, steps: int) -> tuple[int, float]:
        """Agent steps run and the seconds they took."""
        t0 = time.perf_counter()
        done = self.advance(steps)
        return done, time.perf_counter() - t0

    def close(self) -> None:
        raise NotImplementedError


class _SB3Learner(_Learner):
    """ewc_rl's agent or stock SB3 DQN: both continue with ``learn(..., reset_num_timesteps=False)``."""

    def __init__(self, model: Any, env: Any) -> None:
        self.model, self.env = model, env
        # a logger that writes nothing: without one, every learn() makes an SB3-<time> folder in /tmp
        model.set_logger(Logger(folder=None, output_formats=[]))

    def advance(self, steps: int) -> int:
        before = self.model.num_timesteps
        self.model.learn(steps, reset_num_timesteps=False, log_interval=None)
        return self.model.num_timesteps - before

    def close(self) -> None:
        self.env.close()


def _ours(cfg: Config, game: str, sizes: BenchSizes, anchors: int) -> _SB3Learner:
    env = make_env(game, cfg.env, training=True, seed=0, n_envs=cfg.agent.n_envs)
    agent = make_agent(cfg, env, [game], seed=0, device="cpu")
    if anchors:
        rng = th.Generator().manual_seed(0)
        params = agent.shared_parameters()
        for k in range(anchors):  # anchors near the current weights, Fisher of the measured magnitudes
            theta = {n: p.detach() + 0.01 * th.randn(p.shape, generator=rng) for n, p in params.items()}
            fisher = {n: th.rand(p.shape, generator=rng) * 1e-2 for n, p in params.items()}
            agent.penalty.consolidate(f"anchor{k}", theta, fisher)
    agent.begin_segment(env, game, sizes.warmup + sizes.settle + sizes.steps)
    return _SB3Learner(agent, env)


class _AfterAGame(_SB3Learner):
    """ewc_rl with methods that act once a game has ended: after the warm-up, their segment end runs as if the
    warm-up's replay were an earlier game's (memories, stored outputs, an anchor), and training goes on."""

    def __init__(self, learner: _SB3Learner, warmup: int) -> None:
        super().__init__(learner.model, learner.env)
        self.warmup, self.ended = warmup, False

    def advance(self, steps: int) -> int:
        done = 0
        if not self.ended:
            done = super().advance(self.warmup)
            for method in self.model.methods:
                method.on_segment_end(self.model, SegmentEnd("an earlier game", 0, last=False, seed=0))
            self.ended = True
        return done + (super().advance(steps - done) if steps > done else 0)


def _sb3(cfg: Config, game: str, sizes: BenchSizes) -> _SB3Learner:
    env = make_env(game, cfg.env, training=True, seed=0, n_envs=1)
    model = DQN(
        "CnnPolicy",
        env,
        learning_starts=sizes.warmup,
        buffer_size=sizes.replay,
        batch_size=32,
        train_freq=4,
        gradient_steps=1,
        target_update_interval=1000,
        learning_rate=cfg.dqn.learning_rate,
        policy_kwargs={"features_extractor_class": NatureCNN, "net_arch": []},
        seed=0,
        device="cpu",
    )
    return _SB3Learner(model, env)


class _Limit(_Learner):
    """The same work with nothing else: batched greedy acting, env steps, updates from a tensor ring."""

    def __init__(self, cfg: Config, game: str, sizes: BenchSizes) -> None:
        self.n, self.warmup = cfg.agent.n_envs, sizes.warmup
        self.env = make_env(game, cfg.env, training=True, seed=0, n_envs=self.n)
        space = self.env.observation_space
        th.manual_seed(0)
        self.net = th.nn.Sequential(NatureCNN(space), th.nn.Linear(512, 18))
        self.target = th.nn.Sequential(NatureCNN(space), th.nn.Linear(512, 18))
        self.target.load_state_dict(self.net.state_dict())
        for net in (self.net, self.target):  # laid out as the agents' networks are
            networks.lay_out(net, th.device("cpu"))
        self.opt = th.optim.Adam(
            self.net.parameters(), lr=cfg.dqn.learning_rate, eps=1e-5, **fast_optimizer_kwargs(th.optim.Adam, "cpu")
        )  # the fastest update torch has
        # every advance() may overrun by up to one vector step: the warm-up and each round
        capacity = sizes.warmup + sizes.settle + sizes.steps + self.n * (sizes.rounds + 1)
        shape = space.shape or ()
        self.ring_obs = th.zeros((capacity, *shape), dtype=th.uint8)
        self.ring_next = th.zeros((capacity, *shape), dtype=th.uint8)
        self.ring_a, self.ring_r, self.ring_d = (
            th.zeros(capacity, dtype=dt) for dt in (th.int64, th.float32, th.float32)
        )
        self.obs, self.stored, self.since_update = self.env.reset(), 0, 0

    def advance(self, steps: int) -> int:
        n, start, end = self.n, self.stored, self.stored + steps
        while self.stored < end:
            with th.no_grad():
                actions = self.net(th.as_tensor(self.obs).float() / 255).argmax(1).numpy()
            new_obs, reward, done, _ = self.env.step(actions)
            idx = slice(self.stored, self.stored + n)
            self.ring_obs[idx], self.ring_next[idx] = th.as_tensor(self.obs), th.as_tensor(new_obs)
            for ring, x in zip(
                (self.ring_a, self.ring_r, self.ring_d), (actions, reward, done.astype(np.float32)), strict=True
            ):
                ring[idx] = th.as_tensor(x)
            self.obs, self.stored, self.since_update = new_obs, self.stored + n, self.since_update + n
            while self.stored > self.warmup and self.since_update >= 4:
                self.since_update -= 4
                self._update()
        return self.stored - start

    def _update(self) -> None:
        b = th.randint(0, self.stored, (32,))
        with th.no_grad():
            next_q = self.target(self.ring_next[b].float() / 255).max(1).values
            y = self.ring_r[b] + 0.99 * (1 - self.ring_d[b]) * next_q
        q = self.net(self.ring_obs[b].float() / 255).gather(1, self.ring_a[b][:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        self.opt.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.opt.step()

    def close(self) -> None:
        self.env.close()


def _control_apart(learners: dict[str, _Learner]) -> dict[str, _Learner]:
    """The learners in timing order, the A/A control half a round away from the plain learner it copies.

    The rounds rotate one order, so neighbours stay neighbours: beside the plain learner the control would pair the
    closest chunks of all and understate the noise of ratios between learners further apart in the round.
    """
    names = [name for name in learners if name != "plain2"]
    names.insert(names.index("plain") + len(learners) // 2, "plain2")
    return {name: learners[name] for name in names}


def _throughput(
    learners: dict[str, _Learner], steps: dict[str, int], sizes: BenchSizes, bar: Any
) -> dict[str, dict[str, Any]]:
    """Agent steps/s of each learner, timed in interleaved rounds.

    Every learner first runs its warm-up and settling steps untimed. The timed steps are then split into
    ``sizes.rounds`` chunks, and the learners take turns chunk by chunk (the order rotating every round),
    so that a slow spell of a shared machine falls on all of them alike instead of on whichever ran then.
    """
    for name, learner in learners.items():
        bar.set_description(f"warm-up: {name}")
        learner.advance(sizes.warmup + sizes.settle)
    timed: dict[str, list[tuple[int, float]]] = {name: [] for name in learners}
    names = list(learners)
    for r in range(sizes.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            bar.set_description(f"round {r + 1}/{sizes.rounds}: {name}")
            timed[name].append(learners[name].timed(steps[name] // sizes.rounds))
    out = {}
    for name, chunks in timed.items():
        rates = [done / seconds for done, seconds in chunks]
        out[name] = {
            "steps_per_s": sum(done for done, _ in chunks) / sum(seconds for _, seconds in chunks),
            "round_min": min(rates),
            "round_max": max(rates),
        }
    return out


def _replay_bytes(cfg: Config, game: str, sizes: BenchSizes) -> float:
    """Bytes per transition of a frame replay filled to capacity with real transitions (random play)."""
    env = make_env(game, cfg.env, training=True, seed=1, n_envs=1)
    buffer = FrameReplayBuffer(sizes.replay, env.observation_space, env.action_space, device="cpu")
    rng = np.random.default_rng(0)
    obs = cast(np.ndarray, env.reset())
    for _ in range(sizes.replay):
        action = rng.integers(0, 18, 1)
        new_obs, reward, done, infos = env.step(action)
        new_obs = cast(np.ndarray, new_obs)  # Atari: one array, never a dict or tuple
        next_obs = new_obs.copy()
        if done[0]:
            next_obs[0] = infos[0]["terminal_observation"]
        buffer.add(obs, next_obs, action[:, None], reward, done, infos)
        obs = new_obs
    env.close()
    return buffer.nbytes / buffer.buffer_size


def _fisher(agent: Any, sizes: BenchSizes) -> dict[str, float]:
    """States/s of the sampled per-sample Fisher and of one batched forward + backward on the same states."""
    data = sample_transitions(agent.replay_buffer, sizes.fisher_states, np.random.default_rng(0))
    net, obs = agent.q_net, data.observations
    actions = fisher_lib.sample_actions(net, obs, 1.0, th.Generator().manual_seed(0))

    def timed(fn: Any) -> float:
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        return len(obs) / (time.perf_counter() - t0)

    def batched() -> None:
        for start in range(0, len(obs), 32):
            net.zero_grad()
            logp = F.log_softmax(net(obs[start : start + 32]), -1).gather(1, actions[start : start + 32, None])
            logp.sum().backward()

    out = {
        "batched_backward": timed(batched),
        "sampled_hooks": timed(lambda: fisher_lib.sampled_fisher(net, obs, actions, chunk_size=32)),
    }
    few = obs[: max(32, len(obs) // 10)]
    t0 = time.perf_counter()
    fisher_lib.sampled_fisher(net, few, actions[: len(few)], chunk_size=32, method="vmap")
    out["sampled_vmap"] = len(few) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    fisher_lib.exact_fisher(net, few, chunk_size=32)
    out["exact_hooks"] = len(few) / (time.perf_counter() - t0)
    net.zero_grad()
    return out


GAMES_PER_EVALUATION = 2.0  # a 3-game sequence evaluates 1, 2, then 3 games: 2 on average


def _eval_share(cfg: Config, agent: Any, game: str, sizes: BenchSizes, train_rate: float) -> dict[str, float]:
    """Share of wall time the agent file's evaluation schedule takes in a 3-game sequence run.

    A run at the default interval (eval.every = 250k steps) is too long to time here, so the share is
    computed from two measured rates: seconds to evaluate one game (the agent file's episode count, real
    episodes of the briefly trained agent; fewer episodes are scaled up linearly, which overstates the
    cost of the batched evaluator) and training steps per second.
    """
    t0 = time.perf_counter()
    evaluate(
        agent.q_net,
        game,
        cfg.env,
        episodes=sizes.eval_episodes,
        epsilon=cfg.eval.epsilon,
        max_episode_steps=cfg.eval.max_episode_steps,
        seed=0,
    )
    per_game = (time.perf_counter() - t0) * cfg.eval.episodes / sizes.eval_episodes
    train = cfg.eval.every / train_rate
    evaluating = GAMES_PER_EVALUATION * per_game
    return {
        "eval_seconds_per_game": per_game,
        "train_seconds_per_interval": train,
        "eval_share": evaluating / (evaluating + train),
    }


def run(
    agent: str = "dqn",
    game: str = "Breakout",
    mode: str = "quick",
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every measurement; the result holds the keys of :data:`TARGETS` plus the raw figures behind them."""
    sizes = BenchSizes.of(mode)
    cfg = _bench_config(agent, sizes, list(overrides or []))
    ewc = _bench_config(agent, sizes, [*(overrides or []), "penalty.kind='ewc'", "penalty.lambda=400"])
    learners: dict[str, _Learner] = {
        "plain": _ours(cfg, game, sizes, anchors=0),
        "plain2": _ours(cfg, game, sizes, anchors=0),
        "ewc10": _ours(ewc, game, sizes, anchors=10),
        "sb3": _sb3(cfg, game, sizes),
        "limit": _Limit(cfg, game, sizes),
    }
    for name, settings in METHODS.items():
        method_cfg = _bench_config(agent, sizes, [*(overrides or []), *settings])
        learners[name] = _AfterAGame(_ours(method_cfg, game, sizes, anchors=0), sizes.warmup)
    learners = _control_apart(learners)
    steps = dict.fromkeys(learners, sizes.steps) | {"sb3": sizes.sb3_steps}
    bar = tqdm(
        ["throughput", "frame replay", "Fisher", "evaluation"], disable=not progress, unit="part", dynamic_ncols=True
    )
    raw: dict[str, Any] = {}
    for stage in bar:
        bar.set_description(stage)
        if stage == "throughput":
            rates = _throughput(learners, steps, sizes, bar)
            for name, rate in rates.items():
                raw[f"steps_per_s_{name}"] = rate["steps_per_s"]
            raw["steps_per_s_rounds"] = {name: [rate["round_min"], rate["round_max"]] for name, rate in rates.items()}
            for learner in learners.values():
                learner.close()
            trained = learners["plain"].model  # type: ignore[attr-defined]  # the plain learner is an SB3 one
            learners.clear()  # the other learners' replay memories go before the next parts
        elif stage == "frame replay":
            raw["replay_bytes_per_transition"] = _replay_bytes(cfg, game, sizes)
        elif stage == "Fisher":
            raw["fisher_states_per_s"] = _fisher(trained, sizes)
        else:
            raw |= _eval_share(cfg, trained, game, sizes, raw["steps_per_s_plain"])
    result = {
        "throughput_ratio_ewc_vs_plain": raw["steps_per_s_ewc10"] / raw["steps_per_s_plain"],
        "throughput_ratio_plain_vs_sb3": raw["steps_per_s_plain"] / raw["steps_per_s_sb3"],
        "throughput_ratio_plain_vs_limit": raw["steps_per_s_plain"] / raw["steps_per_s_limit"],
        "throughput_ratio_plain_vs_plain": raw["steps_per_s_plain2"] / raw["steps_per_s_plain"],
        "replay_bytes_per_transition": raw["replay_bytes_per_transition"],
        "fisher_ratio_vs_batched_backward": (
            raw["fisher_states_per_s"]["sampled_hooks"] / raw["fisher_states_per_s"]["batched_backward"]
        ),
        "eval_share": raw["eval_share"],
        **{
            f"throughput_ratio_{name}_vs_plain": raw[f"steps_per_s_{name}"] / raw["steps_per_s_plain"]
            for name in METHODS
        },
        "raw": raw,
        "setup": {
            "mode": mode,
            "game": game,
            "agent": agent,
            "n_envs": cfg.agent.n_envs,
            "torch_threads": th.get_num_threads(),
            "env_threads": max(1, min(cfg.agent.n_envs, os.cpu_count() or 1)),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "processor": platform.processor() or "?",
            "python": platform.python_version(),
            "torch": th.__version__,
            "sizes": vars(sizes),
            "eval_every": cfg.eval.every,
            "eval_episodes": cfg.eval.episodes,
        },
    }
    return result


def run_repeated(
    repeat: int,
    agent: str = "dqn",
    game: str = "Breakout",
    mode: str = "quick",
    overrides: list[str] | None = None,
    progress: bool = True,
    on_repeat: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """:func:`run` ``repeat`` times, combined by :func:`combine` (the machine's speed drifts between repeats).

    ``on_repeat`` gets the combination of the repeats so far after each one: a quick bench repeat takes minutes,
    so an interrupted ``--repeat`` keeps what it measured.
    """
    results: list[dict[str, Any]] = []
    for _ in range(repeat):
        results.append(run(agent, game, mode, overrides, progress))
        if on_repeat is not None:
            on_repeat(combine(results))
    return combine(results)


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated ones: every figure its median, each key's min/median/max under ``spread``.

    A single result is returned as it is. The raw figures become medians too (the per-round extremes of
    ``steps_per_s_rounds``: the lowest and highest of all repeats); every repeat's own result is kept
    under ``repeats``.
    """
    if len(results) == 1:
        return results[0]
    spread = {
        key: {
            "min": min(r[key] for r in results),
            "median": statistics.median(r[key] for r in results),
            "max": max(r[key] for r in results),
        }
        for key in (*TARGETS, *(k for k in CONTROLS if all(k in r for r in results)))
    }
    raws = [r["raw"] for r in results]
    raw: dict[str, Any] = {}
    for key, first in raws[0].items():
        if key == "steps_per_s_rounds":
            raw[key] = {
                name: [min(r[key][name][0] for r in raws), max(r[key][name][1] for r in raws)] for name in first
            }
        elif isinstance(first, dict):
            raw[key] = {k: statistics.median(r[key][k] for r in raws) for k in first}
        else:
            raw[key] = statistics.median(r[key] for r in raws)
    return {
        **{key: s["median"] for key, s in spread.items()},
        "spread": spread,
        "raw": raw,
        "setup": {**results[0]["setup"], "repeats": len(results)},
        "repeats": [{k: v for k, v in r.items() if k != "setup"} for r in results],
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The measured table, with each target and whether it was met (by the median, over repeats)."""
    spread = result.get("spread")
    lines = ["| key | measured | target | met |", "|---|---|---|---|"]
    if spread:
        lines[0] = f"| key | median (min–max) of {result['setup']['repeats']} repeats | target | met |"

    def shown(key: str, value: float) -> str:
        return f"{value:,.0f}" if key == "replay_bytes_per_transition" else f"{value:.3f}"

    for key, (op, target) in TARGETS.items():
        value = result[key]
        met = value >= target if op == ">=" else value <= target
        measured, verdict = shown(key, value), "yes" if met else "**no**"
        if spread:
            measured += f" ({shown(key, spread[key]['min'])}–{shown(key, spread[key]['max'])})"
            values = [r[key] for r in result["repeats"]]
            verdict += f" ({sum(v >= target if op == '>=' else v <= target for v in values)}/{len(values)})"
        lines.append(f"| `{key}` | {measured} | {op} {target:g} | {verdict} |")
    raw, setup = result["raw"], result["setup"]
    control = result.get(CONTROLS[0])
    if control is not None:
        shown_control = f"{control:.3f}"
        if spread and CONTROLS[0] in spread:
            shown_control += f" ({spread[CONTROLS[0]]['min']:.3f}–{spread[CONTROLS[0]]['max']:.3f})"
        lines += [
            "",
            f"A/A control: a second, identical ewc_rl learner, timed in the same rounds, ran at {shown_control} "
            "times the first one's speed, half a round later each round. It times the same work, so it is a lower "
            "bound on the other ratios' noise: a ratio closer to its target than this control is to 1 is not decided "
            "by this measurement, and --repeat shows how far the others move.",
        ]
    if spread:
        lines += [
            "",
            f"Every figure below is the median of {setup['repeats']} repeats of the whole measurement; "
            "a round's rates range over all repeats; met (k/N): how many repeats met the target.",
        ]
    fisher = raw["fisher_states_per_s"]
    lines += [
        "",
        f"Agent steps/s after warm-up: ewc_rl {raw['steps_per_s_plain']:.1f}, ewc_rl + EWC (10 anchors) "
        f"{raw['steps_per_s_ewc10']:.1f}, stock SB3 DQN {raw['steps_per_s_sb3']:.1f}, bare torch loop "
        f"{raw['steps_per_s_limit']:.1f}; timed in {setup['sizes']['rounds']} interleaved rounds, whose "
        "rates ranged: "
        + ", ".join(f"{name} {lo:.0f}–{hi:.0f}" for name, (lo, hi) in raw["steps_per_s_rounds"].items())
        + ".",
        "Continual methods at their default settings, agent steps/s: "
        + ", ".join(f"{name} {raw[f'steps_per_s_{name}']:.1f}" for name in METHODS)
        + ".",
        f"Fisher, states/s: batched forward+backward {fisher['batched_backward']:.0f}, sampled per-sample "
        f"(hooks) {fisher['sampled_hooks']:.0f}, sampled per-sample (torch.func vmap) "
        f"{fisher['sampled_vmap']:.0f}, exact per-sample (hooks, 18 actions) {fisher['exact_hooks']:.0f}.",
        f"Evaluation: {raw['eval_seconds_per_game']:.1f} s per game ({setup['eval_episodes']} episodes), "
        f"{raw['train_seconds_per_interval']:.0f} s of training per {setup['eval_every']:,}-step interval; "
        f"eval_share assumes {GAMES_PER_EVALUATION:g} games per evaluation (a 3-game sequence).",
        f"Layout: {setup['n_envs']} training environments on {setup['env_threads']} ALE threads, "
        f"{setup['torch_threads']} torch threads, {setup['cpus']} CPUs ({setup['processor']}, "
        f"{setup['machine']}); torch {setup['torch']}, Python {setup['python']}; mode {setup['mode']} on "
        f"{setup['game']}.",
    ]
    return "\n".join(lines) + "\n"


def finite(result: dict[str, Any]) -> bool:
    return all(math.isfinite(result[k]) and result[k] > 0 for k in (*TARGETS, *CONTROLS) if k in result)
