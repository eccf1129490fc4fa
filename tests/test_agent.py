"""The SB3 DQN subclass: per-game epsilon and warm-up, per-game replay, Double DQN, penalty in the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from ewc_rl.agent import ContinualDQN, NonFiniteLossError
from ewc_rl.penalty import Penalty
from tests.conftest import TinyImageEnv, silent


def _env(offset=0):
    return DummyVecEnv([lambda: TinyImageEnv(length=15, seed_offset=offset)])


def _agent(env=None, **kw):
    args = dict(
        learning_starts=30,
        buffer_size=500,
        exploration_fraction=0.5,
        exploration_final_eps=0.1,
        target_update_interval=20,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    args.update(kw)
    return silent(ContinualDQN("MlpPolicy", env or _env(), **args))


def test_epsilon_and_warmup_restart_for_each_game():
    agent = _agent()
    eps_log = []

    def run(env, game, steps):
        agent.begin_segment(env, game, steps)
        assert agent.exploration_rate == 1.0
        assert agent.learning_starts == agent.num_timesteps + 30
        agent.learn(
            steps,
            reset_num_timesteps=False,
            log_interval=None,
            callback=lambda *_: eps_log.append((agent.num_timesteps, agent.exploration_rate)) or True,
        )

    run(agent.env, "A", 100)
    mid_a = dict(eps_log)
    run(_env(1), "B", 100)
    eps = dict(eps_log)
    assert agent.num_timesteps == 200  # the global counter goes on
    # the same position within each game gives the same epsilon: the schedule restarted
    for s in (10, 40, 60, 90):
        assert eps[100 + s] == pytest.approx(mid_a[s])
    assert agent.exploration_rate == pytest.approx(0.1)
    assert eps[120] > 0.5  # early in game B, exploring again


def test_per_game_replay_switches_and_is_freed_or_kept():
    agent = _agent()
    agent.begin_segment(agent.env, "A", 60)
    agent.learn(60, reset_num_timesteps=False, log_interval=None)
    buf_a = agent.replay_buffer
    assert buf_a.size() == 60
    agent.end_segment("A", keep_replay=True)
    agent.begin_segment(_env(1), "B", 40)
    assert agent.replay_buffer is not buf_a and agent.replay_buffer.size() == 0
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    agent.end_segment("B", keep_replay=False)
    assert "B" not in agent.kept_replays and agent.replay_buffer is None
    agent.begin_segment(_env(), "A", 10)
    assert agent.replay_buffer is buf_a  # the revisit finds its memory


def test_shared_replay_when_asked():
    agent = _agent(per_game_replay=False)
    agent.begin_segment(agent.env, "A", 40)
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    buf = agent.replay_buffer
    agent.end_segment("A", keep_replay=False)
    agent.begin_segment(_env(1), "B", 40)
    assert agent.replay_buffer is buf


@pytest.mark.parametrize(
    ("per_game", "current_game", "then"),
    [(False, None, "B"), (False, "A", "A"), (True, "A", "A")],  # shared at a boundary and in mid-game; per game
)
def test_a_restored_replay_memory_is_the_one_that_trains(per_game, current_game, then):
    agent = _agent(per_game_replay=per_game)
    agent.begin_segment(agent.env, "A", 80)
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    meta, tensors, replays = agent.checkpoint_state(with_replay=True)
    assert agent.replay_sizes() == {"current": 40}
    resumed = _agent(per_game_replay=per_game)
    resumed.restore_checkpoint(meta, tensors, replays, current_game=current_game)
    resumed.begin_segment(resumed.env, then, 80, start=0 if then == "A" else None)
    assert resumed.replay_buffer.size() == 40 and not resumed.kept_replays
    np.testing.assert_array_equal(resumed.replay_buffer.observations[:40], agent.replay_buffer.observations[:40])


@pytest.mark.parametrize("with_replay", [False, True])
def test_a_shared_memory_resumed_empty_warms_up_again(with_replay):
    agent = _agent(per_game_replay=False)
    agent.begin_segment(agent.env, "A", 80)
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    resumed = _agent(per_game_replay=False)
    resumed.restore_checkpoint(*agent.checkpoint_state(with_replay=with_replay), current_game="A")
    resumed.begin_segment(resumed.env, "A", 80, start=0)
    # 40 steps of the 30-step warm-up are behind it, but without its memory they left nothing to learn from
    assert resumed.learning_starts == 40 + (0 if with_replay else 30)


def test_double_dqn_target_uses_online_argmax():
    agent = _agent(double_dqn=True, gamma=0.5)
    agent.begin_segment(agent.env, "A", 50)
    agent.learn(50, reset_num_timesteps=False, log_interval=None)
    data = agent.replay_buffer.sample(8)
    with th.no_grad():  # make online and target nets differ
        for p in agent.q_net_target.parameters():
            p.add_(th.randn_like(p))
        a_online = agent.q_net(data.next_observations).argmax(1, keepdim=True)
        q_target = agent.q_net_target(data.next_observations)
    want = data.rewards + (1 - data.dones) * 0.5 * q_target.gather(1, a_online)
    th.testing.assert_close(agent.td_targets(data), want)
    agent.double_dqn = False
    want_max = data.rewards + (1 - data.dones) * 0.5 * q_target.max(1, keepdim=True).values
    th.testing.assert_close(agent.td_targets(data), want_max)


def test_penalty_pulls_parameters_towards_the_anchor():
    """With a huge lambda, training on game B barely moves the parameters away from game A's anchor."""
    moved = {}
    for lam in (0.0, 1e4):
        agent = _agent(penalty=Penalty("l2", lam), learning_rate=1e-2)
        agent.begin_segment(agent.env, "A", 60)
        agent.learn(60, reset_num_timesteps=False, log_interval=None)
        agent.consolidate("A", None)
        anchor = [p.detach().clone() for p in agent.q_net.parameters()]
        agent.end_segment("A", keep_replay=False)
        agent.begin_segment(_env(7), "B", 120)
        agent.learn(120, reset_num_timesteps=False, log_interval=None)
        moved[lam] = sum((p.detach() - a).norm().item() for p, a in zip(agent.q_net.parameters(), anchor, strict=True))
    assert moved[1e4] < 0.1 * moved[0.0]


def test_fisher_from_replay_for_each_estimator():
    agent = _agent()
    agent.begin_segment(agent.env, "A", 60)
    agent.learn(60, reset_num_timesteps=False, log_interval=None)
    names = {n for n, _ in agent.q_net.named_parameters()}
    for estimator in ("sampled", "exact", "empirical", "mas"):
        f = agent.estimate_fisher(estimator, n_states=20, chunk_size=7)
        assert set(f) == names
        assert all(th.isfinite(v).all() and (v >= 0).all() for v in f.values())
        assert sum(v.sum() for v in f.values()) > 0


def test_non_finite_loss_stops_with_the_step():
    agent = _agent(penalty=Penalty("l2", 1.0))
    agent.begin_segment(agent.env, "A", 40)
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    agent.consolidate("A", None)
    agent.penalty.c = float("nan")
    agent.begin_segment(agent.env, "A", 40)
    agent.learning_starts = 0
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step"):
        agent.learn(40, reset_num_timesteps=False, log_interval=None)


def test_save_and_load_keep_working(tmp_path):
    agent = _agent(penalty=Penalty("l2", 2.0), double_dqn=True)
    agent.begin_segment(agent.env, "A", 40)
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    agent.consolidate("A", None)
    agent.save(tmp_path / "m.zip")
    loaded = ContinualDQN.load(tmp_path / "m.zip", device="cpu")
    assert loaded.double_dqn and loaded.penalty.kind == "l2" and loaded.penalty.active
    obs = np.zeros((1, 4, 8, 8), dtype=np.uint8)
    assert loaded.predict(obs, deterministic=True)[0] == agent.predict(obs, deterministic=True)[0]


def test_epsilon_greedy_flips_one_coin_per_environment():
    """With several environments some explore while others act greedily (SB3's predict flips one coin)."""
    agent = _agent(env=DummyVecEnv([lambda i=i: TinyImageEnv(length=15, seed_offset=i) for i in range(8)]))
    agent.exploration_rate = 0.5
    obs = np.stack([agent.env.observation_space.sample() for _ in range(8)])
    greedy = agent.predict(obs, deterministic=True)[0]
    n_actions = agent.action_space.n
    differs = np.array([agent.predict(obs)[0] != greedy for _ in range(400)])
    mixed = (differs.any(axis=1) & ~differs.all(axis=1)).mean()
    assert mixed > 0.9  # one coin per batch would make this 0
    assert differs.mean() == pytest.approx(0.5 * (1 - 1 / n_actions), abs=0.04)


def test_epsilon_greedy_with_one_environment_draws_what_sb3_draws():
    from stable_baselines3 import DQN

    agent = _agent()
    agent.exploration_rate = 0.3
    obs = agent.env.observation_space.sample()[None]
    runs = []
    for predict in (agent.predict, lambda o: DQN.predict(agent, o)):
        np.random.seed(5)
        agent.action_space.seed(5)
        runs.append([int(predict(obs)[0][0]) for _ in range(200)])
    assert runs[0] == runs[1]


def test_per_game_epsilon_continues_across_visits():
    """epsilon_per = "game": 1 during the game's warm-up, then linear over its own steps, across revisits."""
    agent = _agent(epsilon_per="game", epsilon_decay_steps=100, exploration_final_eps=0.1, games=["A", "B"])
    eps = {}

    def run(env, game, steps):
        agent.begin_segment(env, game, steps)
        eps[(game, "start", agent.num_timesteps)] = agent.exploration_rate
        agent.learn(steps, reset_num_timesteps=False, log_interval=None)
        agent.end_segment(game, keep_replay=True)
        eps[(game, "end", agent.num_timesteps)] = agent.exploration_rate

    run(agent.env, "A", 80)  # warm-up 30 steps, then 50 of 100 decay steps: 1 - 0.9 * 0.5
    run(_env(1), "B", 20)  # B's own schedule: still warming up
    run(_env(), "A", 40)  # A continues from 80 trained steps
    assert eps[("A", "start", 0)] == 1.0
    assert eps[("A", "end", 80)] == pytest.approx(1 - 0.9 * (79 - 30) / 100, abs=0.01)
    assert eps[("B", "start", 80)] == 1.0 and eps[("B", "end", 100)] == 1.0
    assert eps[("A", "start", 100)] == pytest.approx(1 - 0.9 * 50 / 100)
    assert eps[("A", "end", 140)] == pytest.approx(1 - 0.9 * (119 - 30) / 100, abs=0.01)
    assert agent.game_steps == {"A": 120, "B": 20}


def test_revisit_with_kept_memory_needs_no_second_warm_up():
    agent = _agent()
    agent.begin_segment(agent.env, "A", 60)
    agent.learn(60, reset_num_timesteps=False, log_interval=None)
    agent.end_segment("A", keep_replay=True)
    agent.begin_segment(_env(1), "B", 20)
    assert agent.learning_starts == 60 + 30  # a new game, an empty memory: warm up
    agent.learn(20, reset_num_timesteps=False, log_interval=None)
    agent.end_segment("B", keep_replay=False)
    agent.begin_segment(_env(), "A", 20)
    assert agent.learning_starts == 80  # A's memory already holds 60 steps: train at once
    agent.end_segment("A", keep_replay=False)
    agent.begin_segment(_env(1), "B", 20)
    assert agent.learning_starts == 80 + 30  # B's memory was freed: warm up again


def test_storing_transitions_keeps_what_sb3_stores():
    """The store without SB3's deep copy: the same replay contents (terminal observations as the next observations
    of the steps that end episodes), and the step's observations, the next step's first, left untouched."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    def env():
        return DummyVecEnv([lambda i=i: TinyImageEnv(length=3 + i, seed_offset=i) for i in range(2)])

    agents = [_agent(env=env()), _agent(env=env())]
    stores = (ContinualDQN._store_transition, OffPolicyAlgorithm._store_transition)
    for agent, store in zip(agents, stores, strict=True):
        agent._last_obs = agent.env.reset()
        for t in range(12):
            actions = np.array([t % 18, 5 * t % 18])
            new_obs, rewards, dones, infos = agent.env.step(actions)
            before = new_obs.copy()
            store(agent, agent.replay_buffer, actions, new_obs, rewards, dones, infos)
            assert np.array_equal(new_obs, before) and agent._last_obs is new_obs
    ours, sb3 = (agent.replay_buffer for agent in agents)
    assert ours.pos == sb3.pos == 12 and ours.dones[:12].sum() == 7  # episodes of 3 and 4 steps ended
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        assert np.array_equal(getattr(ours, name), getattr(sb3, name)), name


def test_gradient_clipping_covers_the_policy_parameters_with_gradients():
    """train() clips the online network's parameters: exactly the policy's that have gradients, in their order
    (the order of the norms clip_grad_norm_ sums), so the clipped update is SB3's bit for bit."""
    agent = _agent(double_dqn=True)
    agent.learn(total_timesteps=60)
    with_grad = [p for p in agent.policy.parameters() if p.grad is not None]
    assert len(with_grad) == len(list(agent.q_net.parameters())) > 0
    assert all(a is b for a, b in zip(with_grad, agent.q_net.parameters(), strict=True))
