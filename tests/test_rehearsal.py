"""Rehearsal: the batch's share of earlier games, their data and layers, the bounded memory, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl.cli import main
from ewc_rl.methods.rehearsal import Rehearsal, RehearsalSettings
from tests.conftest import game_of, sequence_agent, train_game

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(tmp_path, memory=40, fraction=0.25):
    method = Rehearsal(RehearsalSettings(memory=memory, fraction=fraction))
    agent = sequence_agent([method], tmp_path)
    train_game(agent, "A")
    train_game(agent, "B")
    return agent, method


def test_batches_hold_the_requested_share_of_earlier_games_with_their_own_data(tmp_path):
    agent, method = _trained(tmp_path)
    assert [method.store.size(g) for g in "AB"] == [40, 40]  # at most M per finished game
    for game in "AB":  # each memory holds that game's transitions only, consistent with its replay
        rows = method.samples(game, th.arange(40))
        assert {game_of(o) for o in rows.observations} == {game}
        assert {game_of(o) for o in rows.next_observations} == {game}
    sizes, drawn = [], []
    sample = None

    def spy(batch_size, env=None):
        sizes.append(batch_size)
        return sample(batch_size, env)

    def spy_loss(agent_, batch):
        out = Rehearsal.loss(method, agent_, batch)
        drawn.append([(g, i.clone()) for g, i in method._last])
        return out

    train_game(agent, "C", steps=20, end=False)  # C's replay exists (warm-up not over: no update yet)
    sample = agent.replay_buffer.sample
    agent.replay_buffer.sample = spy
    method.loss = spy_loss
    agent.learning_starts = 0
    agent.learn(40, reset_num_timesteps=False, log_interval=None)
    assert sizes and set(sizes) == {12}  # 16 - round(0.25 * 16) from C's replay
    assert all(sum(len(i) for _, i in d) == 4 for d in drawn)  # the other 4 from the memories
    games = [g for d in drawn for g, _ in d]
    assert set(games) == {"A", "B"}  # never C's own
    for d in drawn:
        for game, index in d:
            assert {game_of(o) for o in method.samples(game, index).observations} == {game}
    share = np.mean([sum(len(i) for g, i in d if g == "A") / 4 for d in drawn])
    assert 0.3 < share < 0.7  # uniform over the union of two equal memories


def test_the_loss_is_the_per_sample_td_loss_with_each_games_own_layers(tmp_path):
    agent, method = _trained(tmp_path)
    train_game(agent, "C", steps=30, end=False)
    with th.no_grad():  # every game's layers clearly different
        for name, p in agent.q_net.named_parameters():
            if "game_" in name:
                p.add_(0.3 * th.randn_like(p))
        agent.q_net_target.load_state_dict(agent.q_net.state_dict())
    np.random.seed(5)
    value = method.loss(agent, None)
    want, n = 0.0, 0
    for game, index in method._last:
        data = method.samples(game, index)
        for i in range(len(index)):
            agent.select_game(game)
            one = type(data)(*(None if x is None else x[i : i + 1] for x in data))
            q = agent.q_net(one.observations)[0, one.actions[0, 0]]
            want += F.smooth_l1_loss(q, agent.td_targets(one)[0, 0]).item()
            n += 1
    agent.select_game("C")
    assert n == 4
    assert abs(value.item() - want / agent.batch_size) < 1e-5
    with th.no_grad():  # with C's layers instead of each game's own, the value is another
        plain = sum(
            float(
                F.smooth_l1_loss(
                    agent.q_net(method.samples(g, i).observations).gather(1, method.samples(g, i).actions),
                    agent.td_targets(method.samples(g, i)),
                    reduction="sum",
                )
            )
            for g, i in method._last
        )
    assert abs(plain / agent.batch_size - value.item()) > 1e-4


def test_a_revisit_merges_into_a_memory_of_at_most_m(tmp_path):
    agent, method = _trained(tmp_path, memory=30)
    method.store.games["A"]["rewards"].fill_(7.0)  # marks the first visit's rows (rewards are 0 or 1)
    train_game(agent, "A")
    after = method.store.games["A"]
    assert len(after["observations"]) == 30 and method.seen["A"] == 120  # both visits' 60 + 60 transitions
    kept = int((after["rewards"] == 7.0).sum())
    assert 5 <= kept <= 25  # hypergeometric: 15 expected of a uniform sample of the union


def test_rehearsal_refuses_a_shared_replay_in_one_line(tmp_path, capsys):
    agent = tmp_path / "a.toml"
    agent.write_text('[agent]\nmethods = ["rehearsal"]\nper_game_replay = false\n')
    code = main(
        [
            "train",
            "--agent",
            str(agent),
            "--games",
            "MinAtar/Breakout,MinAtar/Freeway",
            "--logdir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "agent.per_game_replay" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
