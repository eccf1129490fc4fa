"""``ewc-rl inspect-fisher``: what the policy Fisher of a trained agent looks like, layer by layer.

It rebuilds the agent from a run's latest checkpoint (which must hold the game's replay memory: train
with ``--checkpoint-replay`` and ``--set agent.keep_replay=true``), draws states from that memory, and
reports, for each temperature tau of pi = softmax(Q / tau): the policy's entropy, and the Fisher's mean
per parameter tensor and its share of the total. It also reports how far apart the Q-values of the best
and second-best actions are, the scale that tau has to be compared with: when the gaps are much smaller
than tau the policy is nearly uniform, and the Fisher then measures mostly the Q head's direct effect on
the softmax, not what decides the greedy action.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from ewc_rl import checkpoints
from ewc_rl.agent import ContinualDQN, make_agent
from ewc_rl.config import Config, from_dict
from ewc_rl.envs import make_env
from ewc_rl.errors import UsageError
from ewc_rl.fisher import estimate, policy_log_probs
from ewc_rl.replay import sample_transitions


def _config(identity: dict[str, Any]) -> Config:
    raw: dict[str, dict[str, Any]] = {}
    for key, value in identity.items():
        section, _, name = key.partition(".")
        if section != "run":
            raw.setdefault(section, {})[name] = value
    return from_dict(raw, name="checkpoint", source="checkpoint")


def run_config(run_dir: Path) -> tuple[Config, list[str]]:
    """The agent settings and the games (first-visit order) of the run in ``run_dir``, from its latest checkpoint."""
    path = checkpoints.latest_path(run_dir)
    if path is None:
        raise UsageError(f"{run_dir} holds no checkpoint (is it a run directory of ewc-rl train?)")
    identity = json.loads((path / "meta.json").read_text())["identity"]
    return _config(identity), list(dict.fromkeys(identity["run.games"]))


def load_agent(run_dir: Path) -> tuple[ContinualDQN, list[str]]:
    """The agent of a run's latest checkpoint, its replay memories restored; and the games trained so far."""
    ckpt = checkpoints.load(run_dir)
    identity = ckpt.meta["identity"]
    cfg = _config(identity)
    columns = list(dict.fromkeys(identity["run.games"]))
    env = make_env(columns[0], cfg.env, training=True, seed=0, n_envs=cfg.agent.n_envs)
    agent = make_agent(cfg, env, columns, seed=0, device="cpu")
    segment, done = int(ckpt.meta["segment"]), int(ckpt.meta["done_in_segment"])
    current = identity["run.games"][segment] if done and segment < len(identity["run.games"]) else None
    try:
        agent.restore_checkpoint(ckpt.meta["agent"], ckpt.state, ckpt.replays, current)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise checkpoints.CheckpointError(
            f"checkpoint {ckpt.path} does not fit this ewc_rl: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}"
        ) from None
    env.close()
    trained = [g for g in columns if g in agent.kept_replays]
    return agent, trained


def inspect(run_dir: Path, game: str | None, taus: list[float], n_states: int, estimator: str, seed: int = 0) -> str:
    """The report as text."""
    agent, with_memory = load_agent(run_dir)
    if not with_memory:
        raise UsageError(
            f"the checkpoint of {run_dir} holds no replay memory to draw states from; train with "
            "--checkpoint-replay --set agent.keep_replay=true"
        )
    game = game or with_memory[-1]
    if game not in with_memory:
        raise UsageError(f"no replay memory of {game} in the checkpoint; it has: {', '.join(with_memory)}")
    agent.select_game(game)
    data = sample_transitions(agent.kept_replays[game], n_states, np.random.default_rng(seed))
    net, obs = agent.q_net, data.observations
    net.eval()
    with th.no_grad():
        q = net(obs)
    top2 = q.topk(2, dim=1).values
    gaps = (top2[:, 0] - top2[:, 1]).numpy()
    n_actions = q.shape[1]
    lines = [
        f"{run_dir}: {game}, {len(obs)} replay states, {estimator} Fisher of pi = softmax(Q / tau)",
        f"Q-values: mean {float(q.mean()):.3f}, spread across actions (std per state, mean) "
        f"{float(q.std(dim=1).mean()):.4f}",
        "gap between the best and second-best action's Q: "
        + ", ".join(
            f"{label} {np.quantile(gaps, p):.4f}" for label, p in (("10%", 0.1), ("median", 0.5), ("90%", 0.9))
        ),
        "",
    ]
    shared = agent.shared_parameters()
    names = list(shared)
    header = f"{'tau':>7} {'entropy':>8} {'mean F':>10} " + " ".join(f"{_short(n):>14}" for n in names)
    lines += [
        f"policy entropy: at most log {n_actions} = {math.log(n_actions):.3f}; per tensor: mean F (share of the total)",
        header,
    ]
    for tau in taus:
        with th.no_grad():
            logp = policy_log_probs(q, tau)
            entropy = float(-(logp.exp() * logp).sum(1).mean())
        fisher = estimate(estimator, net, data, agent.td_targets, tau=tau, seed=seed)  # empirical: tau plays no part
        total = sum(float(fisher[n].sum()) for n in names)
        count = sum(fisher[n].numel() for n in names)
        cells = " ".join(f"{float(fisher[n].mean()):>8.1e} ({float(fisher[n].sum()) / total:>3.0%})" for n in names)
        lines.append(f"{tau:>7g} {entropy:>8.3f} {total / count:>10.2e} {cells}")
    return "\n".join(lines)


def _short(name: str) -> str:
    return name.replace("features_extractor.", "").replace("q_net.", "head.")[-14:]
