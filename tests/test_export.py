"""models/*.zip: stock stable-baselines3 loads them in a fresh process and plays as the suite's evaluator does."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch as th

from ewc_rl.export import safe_name
from tests.helpers import budget, train

GAMES = ["MinAtar/Breakout", "MinAtar/SpaceInvaders"]

# A fresh interpreter that imports nothing of ewc_rl's learner: stock DQN.load, then greedy predict.
LOAD = """
import sys, json, numpy as np
from stable_baselines3 import DQN
model = DQN.load(sys.argv[1], device="cpu")
obs = np.load(sys.argv[2])
actions, _ = model.predict(obs, deterministic=True)
print(json.dumps({"actions": actions.tolist(), "class": type(model).__name__,
                  "learner_loaded": "ewc_rl.agent" in sys.modules, "methods": hasattr(model, "methods")}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny two-game MinAtar EWC run with per-game layers, through the CLI."""
    sets = ("penalty.fisher_states=64", "agent.per_game_layers=true", "eval.max_episode_steps=100")
    return train(
        tmp_path_factory.mktemp("export") / "run", "minatar-ewc", ",".join(GAMES), *budget(300, *sets, every=300)
    )


def _suite_actions(run, game: str, obs: np.ndarray) -> np.ndarray:
    """The greedy actions of the suite's evaluator (argmax of the checkpointed learner's Q-network)."""
    from ewc_rl.diagnose import load_agent

    agent, _ = load_agent(run)
    agent.select_game(game)
    agent.q_net.eval()
    with th.no_grad():
        return agent.q_net(th.as_tensor(obs)).argmax(dim=1).numpy()


def _load_in_fresh_process(path, obs_path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), str(obs_path)], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _observations(game: str, n: int = 64) -> np.ndarray:
    from ewc_rl.config import load_config
    from ewc_rl.envs import make_env

    env = make_env(game, load_config("minatar-ewc").env, training=False, n_envs=1, seed=3)
    obs, frames = env.reset(), []
    rng = np.random.default_rng(0)
    for _ in range(n):
        frames.append(obs[0])
        obs, *_ = env.step(rng.integers(0, env.action_space.n, size=1))
    env.close()
    return np.stack(frames)


def test_model_files_after_every_game_and_at_the_end(run):
    names = sorted(p.name for p in (run / "models").iterdir())
    assert names == sorted(["final.zip", *(f"after-{safe_name(g)}.zip" for g in GAMES)])
    with zipfile.ZipFile(run / "models" / "final.zip") as z:
        data = json.loads(z.read("data"))
    assert "methods" not in data and "kept_replays" not in data  # a plain DQN view: no anchors pickled
    assert data["policy_kwargs"][":serialized:"]


@pytest.mark.parametrize("file, game", [("final.zip", GAMES[-1]), (f"after-{safe_name(GAMES[0])}.zip", GAMES[0])])
def test_stock_dqn_load_plays_as_the_suite_does(run, tmp_path, file, game):
    obs = _observations(game)
    np.save(tmp_path / "obs.npy", obs)
    loaded = _load_in_fresh_process(run / "models" / file, tmp_path / "obs.npy")
    assert loaded["class"] == "DQN" and not loaded["learner_loaded"] and not loaded["methods"]
    if file == "final.zip":  # the checkpoint holds the final weights; after-<first game> had earlier weights
        expected = _suite_actions(run, game, obs)
        assert loaded["actions"] == expected.tolist()
        # Per-game layers matter: the other game's layers would choose differently on some states.
        other = _suite_actions(run, GAMES[0], obs)
        assert len(set(expected.tolist())) > 1 or other.tolist() != expected.tolist()
    else:
        assert len(loaded["actions"]) == len(obs)


def test_after_game_model_selects_its_game(run):
    from stable_baselines3 import DQN

    first = DQN.load(run / "models" / f"after-{safe_name(GAMES[0])}.zip", device="cpu")
    final = DQN.load(run / "models" / "final.zip", device="cpu")
    assert first.policy.game == 0 and final.policy.game == 1
    final.policy.set_game(0)
    assert all(m.game == 0 for m in final.policy.modules() if hasattr(m, "game_bias"))


def test_safe_names():
    assert safe_name("MinAtar/Breakout") == "MinAtar-Breakout"
    assert safe_name("Pong") == "Pong"
    assert safe_name("../x y") == "x-y"
