"""The functional anchor: its value against an explicit computation, and zero (with zero gradient) at the stored
network, with each game's own per-game layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from ewc_rl.methods.functional import FunctionalAnchor, FunctionalSettings
from tests.conftest import game_of, sequence_agent, train_game

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb_game_layers(agent, game_index):
    with th.no_grad():
        for name, p in agent.q_net.named_parameters():
            if f"game_bias.{game_index}" in name or f"game_gain.{game_index}" in name:
                p.add_(0.5 * th.randn_like(p))


@pytest.mark.parametrize("target", ["policy", "q"])
def test_zero_value_and_gradient_while_the_network_equals_the_stored_one(tmp_path, target):
    method = FunctionalAnchor(FunctionalSettings(lam=2.0, target=target, states=30, batch_size=16))
    agent = sequence_agent([method], tmp_path)
    train_game(agent, "A")
    train_game(agent, "B", steps=15, end=False)  # B's warm-up only: no update has moved the shared weights
    _perturb_game_layers(agent, 1)  # B's own layers differ from A's: A's states must still use A's
    assert {game_of(o) for o in method.store.games["A"]["observations"]} == {"A"}
    value = method.loss(agent, None)
    assert value is not None and abs(value.item()) < 1e-6
    grads = th.autograd.grad(value, list(agent.q_net.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) < 1e-6 for g in grads)
    agent.learn(20, reset_num_timesteps=False, log_interval=None)  # now the network moves away from A's
    assert method.loss(agent, None).item() > 1e-6


@pytest.mark.parametrize(("target", "normalize"), [("policy", False), ("q", False), ("q", True)])
def test_value_matches_an_explicit_per_state_computation(tmp_path, target, normalize):
    tau = 0.5
    method = FunctionalAnchor(
        FunctionalSettings(lam=3.0, target=target, tau=tau, normalize=normalize, states=30, batch_size=16)
    )
    agent = sequence_agent([method], tmp_path)
    train_game(agent, "A")
    train_game(agent, "B")
    train_game(agent, "C", steps=30, end=False)
    with th.no_grad():  # well away from the stored outputs, so that float32 rounding is small beside the value
        for p in agent.q_net.parameters():
            p.add_(0.05 * th.randn_like(p))
    np.random.seed(3)
    value = method.loss(agent, None).item()
    total, n = 0.0, 0
    with th.no_grad():
        for game, index in method._last:
            stored = method.store.games[game]
            for i in index.tolist():
                agent.select_game(game)
                q = agent.q_net(stored["observations"][i : i + 1])[0].double()
                old = stored["q_values"][i].double()
                if target == "policy":
                    log_old, log_p = th.log_softmax(old / tau, 0), th.log_softmax(q / tau, 0)
                    total += float((log_old.exp() * (log_old - log_p)).sum())
                else:
                    scale = float(stored["q_values"].double().var()) if normalize else 1.0
                    total += float(((q - old) ** 2).mean()) / scale
                n += 1
    agent.select_game("C")
    assert n == 16 and {g for g, _ in method._last} <= {"A", "B"}
    assert value == pytest.approx(3.0 * total / n, rel=1e-4)
