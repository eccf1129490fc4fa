"""The switch-time resets do exactly what they claim, on a tiny network, checked against a network built fresh from
the same seed (the closed form of each reset) and against the optimiser's and the penalty's state."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch as th
from torch import nn

from ewc_rl.methods.anchor import QuadraticAnchor
from ewc_rl.methods.resets import ResetAll, ResetHead, ResetOptimizer, ShrinkPerturb, reset_seed
from ewc_rl.penalty import Penalty


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


class TinyAgent:
    """What the resets touch of a ContinualDQN: networks, optimiser, counters, methods."""

    def __init__(self, methods: list[Any] | None = None) -> None:
        th.manual_seed(0)
        self.q_net = tiny_net()
        self.q_net_target = copy.deepcopy(self.q_net)
        self.policy = SimpleNamespace(optimizer=th.optim.Adam(self.q_net.parameters(), lr=1e-2))
        self.methods = methods or []
        self.seed, self.game_steps, self.num_timesteps, self.segment_start = 5, {}, 0, 0
        for _ in range(3):  # moments in every parameter
            self.policy.optimizer.zero_grad()
            self.q_net(th.randn(8, 4)).pow(2).sum().backward()
            self.policy.optimizer.step()

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.q_net.named_parameters())

    def switch(self, method: Any) -> None:
        """End a first game of 100 steps and start the next one."""
        self.game_steps, self.num_timesteps, self.segment_start = {"A": 100}, 100, 100
        method.on_segment_start(self, "B")

    def params(self) -> dict[str, th.Tensor]:
        return {n: p.detach().clone() for n, p in self.q_net.named_parameters()}


def fresh_like(agent: TinyAgent, salt: int) -> dict[str, th.Tensor]:
    """The network a reset draws: the same architecture built anew under the reset's seed."""
    th.manual_seed(reset_seed(agent, salt))
    return dict(tiny_net().named_parameters())


@pytest.mark.parametrize("cls", [ResetOptimizer, ShrinkPerturb, ResetHead, ResetAll])
def test_no_reset_on_the_first_segment_nor_on_a_resume_in_mid_segment(cls):
    agent = TinyAgent()
    before, moments = agent.params(), len(agent.policy.optimizer.state)
    cls().on_segment_start(agent, "A")  # the first segment
    agent.game_steps, agent.num_timesteps, agent.segment_start = {"A": 100}, 150, 100  # resumed inside "B"
    cls().on_segment_start(agent, "B")
    assert all(th.equal(p, before[n]) for n, p in agent.params().items())
    assert len(agent.policy.optimizer.state) == moments == 6


def test_reset_optimizer_empties_the_optimiser_state_and_leaves_the_weights():
    agent = TinyAgent()
    before = agent.params()
    agent.switch(ResetOptimizer())
    assert len(agent.policy.optimizer.state) == 0
    assert all(th.equal(p, before[n]) for n, p in agent.params().items())


def test_shrink_perturb_is_alpha_theta_plus_sigma_fresh():
    agent = TinyAgent()
    before = agent.params()
    method = ShrinkPerturb(ShrinkPerturb.Settings(alpha=0.7, sigma=0.3))
    agent.switch(method)
    fresh = fresh_like(agent, 1)
    for n, p in agent.params().items():
        th.testing.assert_close(p, 0.7 * before[n] + 0.3 * fresh[n], rtol=0, atol=1e-7)
        assert th.equal(agent.q_net_target.state_dict()[n], p)  # the target follows
    assert len(agent.policy.optimizer.state) == 6  # Ash & Adams keep the optimiser


def test_reset_head_reinitialises_only_the_last_layer_and_its_optimiser_state():
    agent = TinyAgent()
    before = agent.params()
    head = list(agent.q_net[4].parameters())
    agent.switch(ResetHead())
    fresh = fresh_like(agent, 2)
    for n, p in agent.params().items():
        assert th.equal(p, fresh[n] if n.startswith("4.") else before[n]), n
    state = agent.policy.optimizer.state
    assert all(p not in state for p in head) and len(state) == 4


def test_reset_all_gives_a_fresh_network_and_optimiser():
    agent = TinyAgent()
    agent.switch(ResetAll())
    fresh = fresh_like(agent, 3)
    assert all(th.equal(p, fresh[n]) for n, p in agent.params().items())
    assert len(agent.policy.optimizer.state) == 0
    assert all(th.equal(agent.q_net_target.state_dict()[n], p) for n, p in agent.params().items())


@pytest.mark.parametrize("choice", ["keep", "release", "drop"])
def test_the_anchor_choice_decides_what_the_penalty_does_about_reset_weights(choice):
    anchor = QuadraticAnchor(penalty=Penalty("ewc", 1.0))
    agent = TinyAgent([anchor])
    fisher = {n: th.rand_like(p) + 0.5 for n, p in agent.q_net.named_parameters()}
    anchor.penalty.consolidate("A", agent.shared_parameters(), fisher)
    a_before = {n: a.clone() for n, a in anchor.penalty.A.items()}
    agent.switch(ResetHead(ResetHead.Settings(anchor=choice)))
    A = anchor.penalty.A
    if choice == "keep":
        assert all(th.equal(A[n], a) for n, a in a_before.items())
    elif choice == "release":
        for n, a in a_before.items():
            assert th.equal(A[n], th.zeros_like(a) if n.startswith("4.") else a), n
    else:
        assert not anchor.penalty.active and not anchor.penalty.anchors
