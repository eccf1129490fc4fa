"""The plasticity diagnostics against hand computations on a tiny network."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import nn

from ewc_rl import plasticity
from ewc_rl.probe import measure
from tests.helpers import budget, events, train


def _agent() -> SimpleNamespace:
    th.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4))
    with th.no_grad():
        net[0].bias[2] = -100.0  # unit 2 never fires
    agent = SimpleNamespace(q_net=net, _n_updates=10)
    agent.td_targets = lambda d: d.rewards + 0.9 * net(d.next_observations).max(1, keepdim=True).values.detach()
    return agent


def _data(n: int = 40) -> ReplayBufferSamples:
    g = th.Generator().manual_seed(1)
    return ReplayBufferSamples(
        th.randn(n, 3, generator=g),
        th.randint(0, 4, (n, 1), generator=g),
        th.randn(n, 3, generator=g),
        th.zeros(n, 1),
        th.randn(n, 1, generator=g),
    )


def test_measurements_match_hand_computations():
    agent, data = _agent(), _data()
    net = agent.q_net
    got = measure(agent, data, None)["values"]
    h = th.relu(net[0](data.observations)).detach()
    score = h.mean(0) / h.mean(0).mean()
    assert got["dormant/tau0/0"] == float((score <= 0).float().mean()) == float(th.tensor(1 / 5))
    assert got["dormant/tau0.1/0"] == float((score <= 0.1).float().mean())
    s = th.linalg.svdvals(h.double())
    assert got["srank"] == next(k + 1 for k in range(len(s)) if s[: k + 1].sum() / s.sum() >= 0.99)
    q = net(data.observations).detach()
    assert math.isclose(got["q_abs"], float(q.abs().mean()), rel_tol=1e-6)
    top2 = q.sort(1, descending=True).values[:, :2]
    assert math.isclose(got["action_gap"], float((top2[:, 0] - top2[:, 1]).mean()), rel_tol=1e-6)
    freq = th.tensor([(q.argmax(1) == a).float().mean() for a in range(4)])
    assert math.isclose(got["policy_entropy"], float(-sum(p * p.log() for p in freq if p > 0)), rel_tol=1e-6)
    loss = F.smooth_l1_loss(net(data.observations).gather(1, data.actions), agent.td_targets(data))
    grads = th.autograd.grad(loss, list(net.parameters()))
    assert math.isclose(got["grad_norm"], float(th.cat([g.flatten() for g in grads]).norm()), rel_tol=1e-5)
    assert math.isclose(
        got["param_norm/head"], float(th.cat([net[2].weight.flatten(), net[2].bias]).detach().norm()), rel_tol=1e-6
    )
    assert "policy_churn" not in got and "update_norm/head" not in got


def test_churn_and_update_norm_are_against_the_previous_measurement():
    agent, data = _agent(), _data()
    first = measure(agent, data, None)
    before = agent.q_net[2].weight.detach().clone()
    with th.no_grad():
        agent.q_net[2].weight.mul_(-1.0)  # flips which action is greedy on many states
    agent._n_updates = 14
    second = measure(agent, data, first["state"])["values"]
    greedy = (first["state"]["greedy"], agent.q_net(data.observations).argmax(1))
    assert second["policy_churn"] == float((greedy[0] != greedy[1]).float().mean()) > 0
    assert math.isclose(second["update_norm/head"], float((2 * before).norm()) / 4, rel_tol=1e-6)
    assert second["update_norm/0"] == 0.0


def test_effective_rank_of_known_singular_values():
    u, _ = th.linalg.qr(th.randn(20, 20, dtype=th.float64))
    v, _ = th.linalg.qr(th.randn(6, 6, dtype=th.float64))
    sigma = th.tensor([50.0, 30.0, 19.0, 0.5, 0.3, 0.2], dtype=th.float64)  # 99% of 100 in the first 3 (99/100)
    features = u[:, :6] @ th.diag(sigma) @ v.T
    assert plasticity.effective_rank(features, 0.01) == 3
    assert plasticity.effective_rank(features, 0.001) == 6


def test_a_run_logs_the_diagnostics_at_each_switch_and_evaluation(tmp_path):
    import json

    flags = budget(300, "eval.max_episode_steps=50", "eval.probe_states=32", every=200)
    logdir = train(tmp_path / "run", "minatar-dqn", "MinAtar/Breakout,MinAtar/Freeway", *flags, "--threads", "1")
    summary = json.loads((logdir / "summary.json").read_text())
    points = [(r["segment"], r["when"], r["step"]) for r in summary["plasticity"]]
    assert points == [
        (0, "switch", 100),
        (0, "eval", 200),
        (0, "eval", 300),
        (1, "switch", 400),
        (1, "eval", 600),
    ]  # one measurement per step: the eval at 400 is the switch
    assert "dormant/tau0.1/head" not in summary["plasticity"][0] and "srank" in summary["plasticity"][0]
    tags = events(logdir).Tags()["scalars"]
    assert {"plasticity/srank", "plasticity/dormant/tau0/net.3", "plasticity/cost_share"} <= set(tags)
