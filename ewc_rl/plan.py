"""What a run will cost, before it starts: ``ewc-rl train --dry-run``.

Replay sizes follow the buffer's layout: for stacked Atari frames (:class:`ewc_rl.replay.FrameReplayBuffer`)
one frame and five references per transition, plus a frame per episode start (not counted); for SB3's
``ReplayBuffer`` the uint8 observation, the next observation (unless ``optimize_memory_usage``), an int64
action and float32 reward, done and timeout flags. Evaluation cost is an upper bound: every episode is
counted at its step cap.
"""

from __future__ import annotations

import math

from ewc_rl.config import Config
from ewc_rl.envs import observation_shape
from ewc_rl.methods import Method, registry
from ewc_rl.schedule import Segment, unique_games


def replay_bytes_per_transition(cfg: Config, game: str) -> int:
    """Bytes one stored transition takes in the replay buffer the agent uses for ``game``'s observations."""
    from ewc_rl.agent import replay_class

    shape = observation_shape(game, cfg.env)
    if replay_class(cfg, game) is not None:  # FrameReplayBuffer: one frame, five int64 references, 7 bytes
        return math.prod(shape[1:]) + 5 * 8 + 1 + 4 + 1 + 1
    return math.prod(shape) * (1 if cfg.dqn.optimize_memory_usage else 2) + 8 + 4 + 4 + 4


def peak_replay_bytes(cfg: Config, schedule: list[Segment]) -> tuple[int, int]:
    """(bytes of one full memory, how many memories can be alive at once)."""
    per_memory = cfg.dqn.buffer_size * replay_bytes_per_transition(cfg, schedule[0].game)
    alive = len(unique_games(schedule)) if cfg.agent.per_game_replay and cfg.agent.keep_replay else 1
    return per_memory, alive


def evaluation_bound(cfg: Config, schedule: list[Segment], eval_all_games: bool) -> tuple[int, int]:
    """(number of evaluation rounds, at most how many agent steps they play)."""
    every, rounds, steps, start = cfg.eval.every, 0, 0, 0
    columns = unique_games(schedule)
    for seg in schedule:
        end = start + seg.steps
        n_rounds = (end - 1) // every - start // every + 1  # periodic points inside the segment, then its end
        n_games = len(columns) if eval_all_games else len(unique_games(schedule[: seg.index + 1]))
        rounds += n_rounds
        steps += n_rounds * n_games * cfg.eval.episodes * cfg.eval.max_episode_steps
        start = end
    return rounds, steps


def describe(cfg: Config, schedule: list[Segment], *, seed: int, pool: str | None, eval_all_games: bool) -> str:
    """The plan as text: games, visiting order, steps, evaluation cost and replay memory."""
    columns = unique_games(schedule)
    train = sum(s.steps for s in schedule)
    lines = [f"plan: agent '{cfg.name}', seed {seed} (--dry-run: nothing is trained or written)"]
    if pool:
        lines.append(f"games: {len(columns)} drawn from pool '{pool}': {', '.join(columns)}")
    else:
        lines.append(f"games: {', '.join(columns)}")
    cycles = max(s.cycle for s in schedule) + 1
    for c in range(cycles):
        order = [s.game for s in schedule if s.cycle == c]
        lines.append(f"  visiting order{f' (cycle {c + 1})' if cycles > 1 else ''}: {' -> '.join(order)}")
    lengths = sorted({s.steps for s in schedule})
    each = (
        f"x {lengths[0]:,} agent steps"
        if len(lengths) == 1
        else f"of {lengths[0]:,} to {lengths[-1]:,} agent steps (per game)"
    )
    lines.append(
        f"training: {len(schedule)} segments {each} = {train:,} agent steps ({train * cfg.env.frame_skip:,} frames)"
    )
    rounds, eval_steps = evaluation_bound(cfg, schedule, eval_all_games)
    lines.append(
        f"evaluation: {rounds} rounds (every {cfg.eval.every:,} steps and at each segment's end), "
        f"{cfg.eval.episodes} episodes per game, at most {eval_steps:,} agent steps "
        f"({eval_steps / train:.0%} of training steps; episodes capped at {cfg.eval.max_episode_steps:,})"
    )
    per_memory, alive = peak_replay_bytes(cfg, schedule)
    per_transition = replay_bytes_per_transition(cfg, schedule[0].game)
    kept = (
        f"{alive} kept at once (agent.keep_replay, one per game)"
        if alive > 1
        else "one alive at a time (a finished game's memory is freed)"
    )
    lines.append(
        f"replay memory: {cfg.dqn.buffer_size:,} transitions x {per_transition:,} bytes = "
        f"{per_memory / 1e9:.2f} GB per memory, {kept}: peak {alive * per_memory / 1e9:.2f} GB"
    )
    a = cfg.agent
    options = [
        *(["per-game biases and gains"] if a.per_game_layers else []),
        *(["one Q head per game"] if a.per_game_head else []),
        *(["CReLU"] if a.activation == "crelu" else []),
        *(["LayerNorm"] if a.layer_norm else []),
    ]
    if options:
        lines.append(f"network: {', '.join(options)}")
    if a.task_inference == "inferred":
        r = cfg.recognition
        lines.append(
            f"tasks: inferred from the frames (window {r.window}, threshold {r.threshold:g} nats, alpha {r.alpha:g}, "
            f"at most {r.max_contexts} contexts); per-game parts follow the inferred context, labels only score it"
        )
    lines.append(f"methods: {' -> '.join(cfg.agent.methods) or 'none'}")
    for name, method in _active(cfg):
        lines += method.describe(cfg.section(name), cfg, schedule)
    lines += [f"warning: {w}" for w in warnings(cfg, schedule)]
    return "\n".join(lines)


def warnings(cfg: Config, schedule: list[Segment]) -> list[str]:
    """Settings that make a run pointless, worth saying before it starts (each method judges its own)."""
    return [w for name, method in _active(cfg) for w in method.warnings(cfg.section(name), cfg, schedule)]


def _active(cfg: Config) -> list[tuple[str, type[Method]]]:
    methods = registry()
    return [(name, methods[name]) for name in cfg.agent.methods]
