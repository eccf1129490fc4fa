"""Q-network bodies, and per-game biases and gains: switching, gradients, and what the penalty covers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from ewc_rl.agent import ContinualDQN
from ewc_rl.errors import UsageError
from ewc_rl.networks import AtariCNN, CReLU, GameHeads, GameLayer, MinAtarCNN, is_per_game, policy, resolve, set_game
from ewc_rl.penalty import Penalty
from tests.conftest import ATARI, TinyImageEnv, atari_agent, silent

MINATAR = gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)


def test_auto_picks_by_suite_and_mismatches_are_errors():
    assert resolve("auto", "atari") == "nature" and resolve("auto", "minatar") == "minatar"
    assert resolve("wide", "atari") == "wide"
    with pytest.raises(UsageError, match="agent.network = 'nature' is built for 84x84 Atari frames"):
        resolve("nature", "minatar")
    with pytest.raises(UsageError, match="is built for 10x10 MinAtar planes"):
        resolve("minatar", "atari")


def test_minatar_cnn_shapes_and_no_image_scaling():
    net = MinAtarCNN(MINATAR)
    assert net(th.ones(3, 10, 10, 10, dtype=th.uint8)).shape == (3, 128)
    assert policy("minatar")[1]["normalize_images"] is False
    assert sum(p.numel() for p in net.parameters()) == 10 * 16 * 9 + 16 + 16 * 8 * 8 * 128 + 128


def test_wide_network_is_the_papers():
    net = AtariCNN(ATARI, features_dim=1024, filters=(32, 64, 128))
    convs = [m for m in net.modules() if isinstance(m, th.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)),
        (64, (4, 4), (2, 2)),
        (128, (3, 3), (1, 1)),
    ]
    assert net(th.zeros(2, 4, 84, 84)).shape == (2, 1024)


def test_per_game_layers_start_neutral_and_switch_with_the_game():
    th.manual_seed(0)
    net = MinAtarCNN(MINATAR, n_games=3)
    plain = MinAtarCNN(MINATAR)
    layers = [m for m in net.modules() if isinstance(m, GameLayer)]
    assert len(layers) == 2 and all(len(m.game_bias) == 3 for m in layers)
    # b = 0, g = 1: every game computes the same function at first, with the shared weights only
    x = th.randint(0, 2, (5, 10, 10, 10), dtype=th.uint8)
    outs = []
    for game in range(3):
        set_game(net, game)
        outs.append(net(x))
    assert all(th.equal(outs[0], o) for o in outs)
    with th.no_grad():
        layers[1].game_gain["2"].mul_(2.0)
    set_game(net, 2)
    th.testing.assert_close(net(x), 2.0 * outs[0])
    set_game(net, 0)
    th.testing.assert_close(net(x), outs[0])
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters()) - 16 - 128 + 3 * 2 * (
        16 + 128
    )


def test_only_the_active_games_layers_get_gradients_and_move():
    th.manual_seed(0)
    net = MinAtarCNN(MINATAR, n_games=2)
    opt = th.optim.Adam(net.parameters(), lr=0.01)
    x = th.randint(0, 2, (8, 10, 10, 10), dtype=th.uint8)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for game in (0, 1, 1, 1):  # Adam keeps moments for game 0 after its step: they must not move it later
        set_game(net, game)
        opt.zero_grad()
        (net(x) - 1.0).pow(2).mean().backward()  # a target above 0 keeps the ReLUs alive
        if game == 1:
            assert all(p.grad is None for n, p in net.named_parameters() if n.endswith(".0"))
        opt.step()
        if game == 0:
            after_game_0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    for name, p in net.named_parameters():
        if name.endswith(".1"):  # game 1's b and g trained
            assert not th.equal(p, before[name]), name
        elif name.endswith(".0"):  # game 0's b and g untouched while game 1 trained
            assert th.equal(p, after_game_0[name]), name


def test_penalty_and_fisher_cover_shared_parameters_only():
    names = [n for n, _ in MinAtarCNN(MINATAR, n_games=2).named_parameters()]
    assert {n for n in names if is_per_game(n)} == {
        f"net.{i}.game_{k}.{g}" for i in (0, 3) for k in ("bias", "gain") for g in (0, 1)
    }

    pol, kwargs = policy("nature", n_games=2)
    env = DummyVecEnv([lambda: _AtariShaped()])
    agent = silent(
        ContinualDQN(
            pol,
            env,
            policy_kwargs=kwargs,
            games=["A", "B"],
            penalty=Penalty("ewc", 1.0),
            learning_starts=10,
            buffer_size=100,
            device="cpu",
            seed=0,
        )
    )
    head = agent.q_net.q_net[-1]
    assert isinstance(head, GameLayer) and len(head.game_gain) == 2  # the Q head has per-game b and g too
    agent.begin_segment(agent.env, "A", 20)
    agent.learn(20, reset_num_timesteps=False, log_interval=None)
    fisher = agent.estimate_fisher("sampled", n_states=8)
    assert set(fisher) == set(agent.shared_parameters()) and not any(is_per_game(n) for n in fisher)
    assert any(is_per_game(n) for n, _ in agent.q_net.named_parameters())
    agent.consolidate("A", fisher)
    assert set(agent.penalty.A) == set(agent.shared_parameters())
    agent.select_game("B")
    assert {m.game for m in agent.q_net_target.modules() if isinstance(m, GameLayer)} == {1}


class _AtariShaped(TinyImageEnv):
    """The tiny environment with Atari-shaped frames, for the convolutional Atari networks."""

    def __init__(self) -> None:
        super().__init__(length=10)
        self.observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)

    def _obs(self) -> np.ndarray:
        return np.full((4, 84, 84), self.t * 13 % 256, dtype=np.uint8)


@pytest.mark.parametrize("activation", ["relu", "crelu"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_crelu_and_layer_norm_options(activation, layer_norm):
    k = 2 if activation == "crelu" else 1
    net = MinAtarCNN(MINATAR, activation=activation, layer_norm=layer_norm)
    assert net.features_dim == 128 * k and net(th.ones(3, 10, 10, 10, dtype=th.uint8)).shape == (3, 128 * k)
    fc = [m for m in net.modules() if isinstance(m, th.nn.Linear)][0]
    assert fc.in_features == k * 16 * 8 * 8  # CReLU doubles what the next layer reads
    norms = [m for m in net.modules() if isinstance(m, (th.nn.LayerNorm, th.nn.GroupNorm))]
    assert len(norms) == (2 if layer_norm else 0)
    atari = AtariCNN(ATARI, activation=activation, layer_norm=layer_norm)
    assert atari(th.zeros(2, 4, 84, 84)).shape == (2, 512 * k)
    if activation == "crelu":  # cat(relu(x), relu(-x)): exactly one half of each pair is x's magnitude
        x = th.randn(5, 3)
        th.testing.assert_close(CReLU()(x), th.cat([x.clamp_min(0), (-x).clamp_min(0)], 1))


def test_a_q_head_per_game_is_excluded_from_the_penalty_and_used_for_its_game():
    pol, kwargs = policy("minatar", heads=2)
    env = DummyVecEnv([lambda: _MinAtarShaped()])
    agent = ContinualDQN(
        pol,
        env,
        policy_kwargs=kwargs,
        games=["A", "B"],
        penalty=Penalty("ewc", 1.0),
        learning_starts=5,
        buffer_size=100,
        train_freq=1,
        device="cpu",
        seed=0,
    )
    heads = agent.q_net.q_net[-1]
    assert isinstance(heads, GameHeads) and set(heads.game_heads) == {"0", "1"}
    b_before = {n: p.detach().clone() for n, p in heads.game_heads["1"].named_parameters()}
    agent.begin_segment(agent.env, "A", 20)
    agent.learn(20, reset_num_timesteps=False, log_interval=None)
    assert all(th.equal(p, b_before[n]) for n, p in heads.game_heads["1"].named_parameters())  # B's head untouched
    assert all(is_per_game(n) for n, _ in agent.q_net.named_parameters() if "game_heads" in n)
    assert not any("game_heads" in n for n in agent.shared_parameters())
    obs = th.ones(2, 10, 10, 10)
    agent.select_game("B")
    th.testing.assert_close(
        agent.q_net(obs), heads.game_heads["1"](agent.q_net.extract_features(obs, agent.q_net.features_extractor))
    )
    assert heads.game == 1 and agent.q_net_target.q_net[-1].game == 1


class _MinAtarShaped(TinyImageEnv):
    def __init__(self) -> None:
        super().__init__(length=10)
        self.observation_space = gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)

    def _obs(self) -> np.ndarray:
        return np.full((10, 10, 10), self.t % 2, dtype=np.uint8)


def test_atari_bodies_on_cpu_get_channels_last_weights_minatar_and_other_devices_do_not():
    from ewc_rl.networks import lay_out

    for body, space, device, laid_out in (
        (AtariCNN, ATARI, "cpu", True),
        (MinAtarCNN, MINATAR, "cpu", False),
        (AtariCNN, ATARI, "cuda", False),  # not measured there: left as torch makes it (no CUDA needed to check)
    ):
        net = body(space)
        weights = [p for p in net.parameters() if p.dim() == 4]
        lay_out(net, th.device(device))
        assert weights == [p for p in net.parameters() if p.dim() == 4]  # the same objects
        assert all(w.is_contiguous(memory_format=th.channels_last) == laid_out for w in weights), body
        assert all(w.is_contiguous() != laid_out for w in weights)


def test_an_atari_agent_trains_channels_last_to_the_numbers_of_the_default_layout():
    """make_agent lays the Nature CNN out channels-last, its optimiser still holds the policy's parameters, and
    a few updates (same weights, same batches) give the numbers of the same agent in torch's default layout."""
    agents = [atari_agent(), atari_agent()]
    reference = agents[1].policy
    reference.to(memory_format=th.contiguous_format)
    convs = [p for p in agents[0].policy.parameters() if p.dim() == 4]
    assert len(convs) == 6 and all(p.is_contiguous(memory_format=th.channels_last) for p in convs)  # online, target
    assert all(not p.is_contiguous(memory_format=th.channels_last) for p in reference.parameters() if p.dim() == 4)
    assert [id(p) for g in agents[0].policy.optimizer.param_groups for p in g["params"]] == [
        id(p) for p in agents[0].q_net.parameters()
    ]
    start = {n: p.detach().clone() for n, p in agents[0].q_net.named_parameters()}
    for agent in agents:
        np.random.seed(0)  # SB3's buffer samples with numpy's global generator
        agent.learn(24, log_interval=None)
    moved = False
    for (name, fast), ref in zip(agents[0].q_net.named_parameters(), agents[1].q_net.parameters(), strict=True):
        th.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5, msg=name)  # moves are ~8e-4
        moved |= not th.equal(fast, start[name])
    assert moved
