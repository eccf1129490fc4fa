"""Game names and the ALE vector environment as an SB3 VecEnv."""

from __future__ import annotations

import numpy as np
import pytest

from ewc_rl.config import EnvConfig
from ewc_rl.envs import UnknownGameError, canonical_game, make_env, parse_games


def test_names_are_forgiving_about_case_and_underscores():
    assert canonical_game("Pong") == "Pong"
    assert canonical_game("spaceinvaders") == "SpaceInvaders"
    assert canonical_game("space_invaders") == "SpaceInvaders"
    assert parse_games(" Pong, Breakout ") == ["Pong", "Breakout"]


def test_unknown_game_lists_the_closest_names():
    with pytest.raises(UnknownGameError) as err:
        canonical_game("SpaceInvader")
    assert "unknown game 'SpaceInvader'; closest: SpaceInvaders" in str(err.value)
    with pytest.raises(UnknownGameError):
        parse_games("Pong,Pongg")


def _random_play(env, steps, seed=0):
    rng = np.random.default_rng(seed)
    env.reset()
    out = []
    for _ in range(steps):
        obs, reward, done, info = env.step(rng.integers(0, env.action_space.n, size=env.num_envs))
        out.append((obs, reward, done, info))
    return out


def test_every_game_has_one_interface():
    for game in ("Pong", "Breakout"):
        env = make_env(game, EnvConfig(), training=True, seed=0)
        assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
        assert env.action_space.n == 18
        obs = env.reset()
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8
        env.close()


def test_training_clips_rewards_and_ends_learner_episodes_at_life_loss():
    train = make_env("Breakout", EnvConfig(), training=True, seed=1)
    steps = _random_play(train, 1500)
    rewards = np.concatenate([r for _, r, _, _ in steps])
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    dones = [i for i, (_, _, d, _) in enumerate(steps) if d[0]]
    games = [i for i in dones if "episode" in steps[i][3][0]]
    assert len(dones) >= 4 * len(games) > 0  # 5 lives: several learner episodes per game
    for i in dones:
        assert "terminal_observation" in steps[i][3][0]
    train.close()


def test_evaluation_env_keeps_raw_scores_and_full_games():
    env = make_env("Breakout", EnvConfig(), training=False, seed=1, max_episode_steps=3000)
    steps = _random_play(env, 1500)
    dones = [i for i, (_, _, d, _) in enumerate(steps) if d[0]]
    assert dones and all("episode" in steps[i][3][0] for i in dones)  # only real game overs
    first = dones[0]
    raw = sum(float(r[0]) for _, r, _, _ in steps[: first + 1])
    assert steps[first][3][0]["episode"]["r"] == raw
    env.close()


def test_episode_cap_truncates():
    env = make_env("Pong", EnvConfig(), training=False, seed=0, max_episode_steps=50)
    steps = _random_play(env, 60)
    done_at = next(i for i, (_, _, d, _) in enumerate(steps) if d[0])
    assert done_at == 49
    assert steps[done_at][3][0]["TimeLimit.truncated"] is True
    env.close()


def test_minatar_names_and_suites():
    from ewc_rl.envs import suite

    assert parse_games("minatar/breakout, MinAtar/space_invaders") == ["MinAtar/Breakout", "MinAtar/SpaceInvaders"]
    assert suite("MinAtar/Breakout") == "minatar" and suite("Pong") == "atari"
    with pytest.raises(UnknownGameError, match="closest: MinAtar/Breakout"):
        canonical_game("MinAtar/Breakou")


def test_mixing_suites_is_refused():
    from ewc_rl.errors import UsageError

    with pytest.raises(UsageError, match="mixes ALE and MinAtar games"):
        parse_games("MinAtar/Breakout,Pong")


def test_minatar_games_share_one_padded_interface():
    for game, channels in (("MinAtar/Breakout", 4), ("MinAtar/Seaquest", 10)):
        env = make_env(game, EnvConfig(), training=False, seed=0, n_envs=2)
        assert env.observation_space.shape == (10, 10, 10) and env.action_space.n == 6
        obs = env.reset()
        assert obs.shape == (2, 10, 10, 10) and obs.dtype == np.uint8 and obs.max() <= 1
        assert not obs[:, channels:].any()  # padding planes stay empty
        steps = _random_play(env, 300)
        assert any(d.any() for _, _, d, _ in steps)
        env.close()


@pytest.mark.parametrize(("game", "bound"), [("MinAtar/Asterix", 2**32), ("Breakout", 2**31 - 2)])
def test_seeds_beyond_what_the_emulators_take_are_folded_into_their_range(game, bound):
    """A run resumed late seeds its environment with a number that grows with the step (past ALE's int32 at about
    271,000 steps, past MinAtar's uint32 at 542,000); the emulators refused it and the resume crashed."""
    plays = []
    for seed in (7, bound + 7):
        env = make_env(game, EnvConfig(), training=True, seed=seed, n_envs=2)
        plays.append(_random_play(env, 100))
        env.close()
    for (o1, r1, d1, _), (o2, r2, d2, _) in zip(*plays, strict=True):
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)


def test_minatar_training_rewards_clipped_evaluation_raw():
    env = make_env("MinAtar/SpaceInvaders", EnvConfig(), training=False, seed=0, max_episode_steps=2000)
    steps = _random_play(env, 600)
    ends = [i for i, (_, _, d, _) in enumerate(steps) if d[0]]
    assert ends and steps[ends[0]][3][0]["episode"]["r"] == sum(float(r[0]) for _, r, _, _ in steps[: ends[0] + 1])


def test_minatar_vec_env_steps_as_sb3s_dummy_vec_env():
    """MinAtar's vector env skips DummyVecEnv's deep copies: same steps, and no returned array changes later."""
    import functools

    from stable_baselines3.common.vec_env import DummyVecEnv

    from ewc_rl.envs import MinAtarVecEnv, _minatar_env

    def fns():
        game, cfg = "MinAtar/Breakout", EnvConfig()
        return [functools.partial(_minatar_env, game, cfg, training=True, seed=s, max_episode_steps=40) for s in (0, 1)]

    ours, sb3 = MinAtarVecEnv(fns()), DummyVecEnv(fns())
    ours.seed(3)
    sb3.seed(3)
    assert np.array_equal(ours.reset(), sb3.reset())
    rng, returned, ends = np.random.default_rng(0), [], 0
    for _ in range(300):
        actions = rng.integers(0, 6, size=2)
        (o1, r1, d1, i1), (o2, r2, d2, i2) = ours.step(actions), sb3.step(actions)
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert sorted(a) == sorted(b) and a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
            if "terminal_observation" in a:
                assert np.array_equal(a["terminal_observation"], b["terminal_observation"])
                assert (a["episode"]["r"], a["episode"]["l"]) == (b["episode"]["r"], b["episode"]["l"])
                ends += 1
        returned.append((o1, o1.copy(), i1, [dict(i) for i in i1]))
    assert ends > 4
    assert all(np.array_equal(o, copy) and infos == copies for o, copy, infos, copies in returned)


def test_minatar_leaves_seaborn_importable():
    """minatar's import of seaborn is blocked while it loads (start-up time), and unblocked afterwards."""
    import sys

    make_env("MinAtar/Breakout", EnvConfig(), training=False, seed=0).close()
    assert sys.modules.get("seaborn", "absent") is not None


@pytest.mark.parametrize(
    "name, game",
    [
        ("ALE/Pong-v5", "Pong"),
        ("PongNoFrameskip-v4", "Pong"),
        ("Pong-v4", "Pong"),
        ("BreakoutDeterministic-v4", "Breakout"),
        ("ALE/SpaceInvaders-v5", "SpaceInvaders"),
        ("ALE/Pong", "Pong"),
        ("MinAtar/Breakout-v1", "MinAtar/Breakout"),
        ("minatar/space_invaders-v0", "MinAtar/SpaceInvaders"),
    ],
)
def test_gymnasium_ids_are_aliases(name, game):
    assert canonical_game(name) == game


def test_gymnasium_ids_of_unknown_games_are_refused():
    with pytest.raises(UnknownGameError, match="closest: Pong"):
        canonical_game("ALE/Pongg-v5")
