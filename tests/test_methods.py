"""Conformance of every continual method in the registry, as stable-baselines3 parametrises its tests over algorithms.

Each method gets, for free: its gradient against autograd of its objective, an exact resume from the code-free
checkpoint at a game boundary, the dry-run plan, and one-line errors for bad settings. The last test adds a toy
method from a module outside the package (one module plus registration, no other file edited) and runs it
through the same checks, ``train``, ``compare`` and ``--dry-run``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from ewc_rl import methods, trainer
from ewc_rl.agent import ContinualDQN
from ewc_rl.cli import main
from ewc_rl.config import ConfigError, from_dict, load_config
from ewc_rl.methods import Method, SegmentEnd
from tests.conftest import TinyImageEnv, sequence_agent, train_game
from tests.helpers import budget

GAMES = "MinAtar/Breakout,MinAtar/SpaceInvaders"
TINY = budget(300, "dqn.target_update_interval=50", "eval.max_episode_steps=50", every=300)


def _agent_file(tmp_path: Path, name: str, settings: dict[str, Any]) -> Path:
    """An agent file that runs ``name`` (with ``settings``) on the MinAtar DQN's other settings."""
    lines = ["[agent]", 'network = "minatar"', f'methods = ["{name}"]', f"[{name}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"with-{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _method(name: str) -> Method:
    cls = methods.registry()[name]
    cfg = from_dict({"agent": {"methods": [name]}, name: dict(cls.example)})
    return cls(cfg.section(name))


def check_gradient(name: str, tmp_path: Path) -> None:
    """What the method adds to the update's gradients equals autograd of :meth:`Method.objective` (nothing, for a
    method that overrides neither ``loss`` nor ``on_gradients``)."""
    th.manual_seed(0)
    method = _method(name)
    env = DummyVecEnv([lambda: TinyImageEnv(length=15)])
    agent = ContinualDQN(
        "MlpPolicy",
        env,
        methods=[method],
        learning_starts=20,
        buffer_size=500,
        batch_size=8,
        train_freq=1,
        learning_rate=1e-2,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )
    agent.set_logger(configure(str(tmp_path / "log"), []))
    agent.begin_segment(env, "A", 60)
    agent.learn(60, reset_num_timesteps=False, log_interval=None)
    method.on_segment_end(agent, SegmentEnd("A", 0, last=False, seed=0))
    agent.end_segment("A", keep_replay=False)
    other = DummyVecEnv([lambda: TinyImageEnv(length=15, seed_offset=7)])
    agent.begin_segment(other, "B", 60)
    agent.learn(60, reset_num_timesteps=False, log_interval=None)

    data = agent.replay_buffer.sample(16)
    named = dict(agent.q_net.named_parameters())
    for p in agent.policy.parameters():
        p.grad = th.zeros_like(p)
    extra = method.loss(agent, data)
    if extra is not None:
        extra.backward()
    values = method.on_gradients(agent, agent.shared_parameters(), log=True)
    got = {n: p.grad.clone() for n, p in named.items()}
    if type(method).loss is Method.loss and type(method).on_gradients is Method.on_gradients:
        # A method that acts on weights or state (a reset, ReDo) rather than on the loss must add nothing;
        # its own tests check what it does.
        assert all(not g.any() for g in got.values()), f"{name}: adds gradients without a loss or on_gradients"
        return

    objective = method.objective(agent, data)
    assert objective is not None, f"{name}: objective() must give the value whose gradient the method adds"
    want = th.autograd.grad(objective, list(named.values()), allow_unused=True)
    for (n, g), w in zip(got.items(), want, strict=True):
        th.testing.assert_close(g, th.zeros_like(g) if w is None else w, rtol=1e-4, atol=1e-6, msg=f"{name}: {n}")
    assert any(g.abs().sum() > 0 for g in got.values()), f"{name}: inactive at its example settings"
    assert all(isinstance(v, float) and v == v for v in values.values())


def check_exact_resume(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]) -> None:
    """Stopped at the game boundary and resumed from the code-free checkpoint, a run ends bit-identical."""
    agent_file = str(_agent_file(tmp_path, name, settings))
    args = ["train", "--agent", agent_file, "--games", GAMES, *TINY, "--seed", "3", "--threads", "1"]
    assert main([*args, "--logdir", str(tmp_path / "straight")]) == 0

    checkpoint = trainer.Trainer.checkpoint

    def stop_after_first_game(self: trainer.Trainer, agent: ContinualDQN, segment: int, done: int) -> None:
        checkpoint(self, agent, segment, done)
        if (segment, done) == (1, 0):
            self.stop.signum = signal.SIGTERM  # as a SIGTERM would: the run stops after this checkpoint

    monkeypatch.setattr(trainer.Trainer, "checkpoint", stop_after_first_game)
    assert main([*args, "--logdir", str(tmp_path / "resumed")]) == 128 + signal.SIGTERM
    monkeypatch.setattr(trainer.Trainer, "checkpoint", checkpoint)
    assert main([*args, "--logdir", str(tmp_path / "resumed"), "--resume"]) == 0

    runs = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("straight", "resumed")]
    assert runs[0]["score_matrix"] == runs[1]["score_matrix"]
    assert [e["returns"] for e in runs[0]["eval_history"]] == [e["returns"] for e in runs[1]["eval_history"]]
    states = [
        th.load(next((tmp_path / d / "checkpoints").glob("ckpt-*")) / "state.pt", weights_only=True)
        for d in ("straight", "resumed")
    ]
    for key, value in states[0]["policy"].items():
        assert th.equal(value, states[1]["policy"][key]), key
    assert set(states[0]["methods"]) == {name}


def check_plan_and_bad_settings(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--dry-run`` names the method; each bad setting is one line naming ``<method>.<key>``, exit 2."""
    cls = methods.registry()[name]
    agent_file = str(_agent_file(tmp_path, name, cls.example))
    assert main(["train", "--agent", agent_file, "--games", GAMES, "--dry-run"]) == 0
    assert f"methods: {name}" in capsys.readouterr().out
    for f in dataclasses.fields(cls.Settings):
        key = f.metadata.get("key") or f.name
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        bad = {"bool": "'yes'", "int": "'many'", "float": "'much'", "str": "7"}[kind]
        logdir = tmp_path / f"bad-{key}"
        code = main(
            ["train", "--agent", agent_file, "--games", GAMES, "--set", f"{name}.{key}={bad}", "--logdir", str(logdir)]
        )
        err = capsys.readouterr().err
        assert code == 2 and f"'{name}.{key}'" in err and len(err.strip().splitlines()) == 1, err
        assert not logdir.exists()
    with pytest.raises(ConfigError, match=f"unknown key '{name}.no_such_key'"):
        load_config(agent_file, [f"{name}.no_such_key=1"])
    with pytest.raises(ConfigError, match=f"configures the method '{name}', which 'agent.methods' does not list"):
        from_dict({"agent": {"methods": []}, name: {}})


BUILT_IN = sorted(methods.registry())


@pytest.mark.parametrize("name", BUILT_IN)
def test_gradient_matches_autograd_of_the_objective(name, tmp_path):
    check_gradient(name, tmp_path)


@pytest.mark.parametrize("name", BUILT_IN)
def test_exact_resume_at_a_game_boundary(name, tmp_path, monkeypatch):
    check_exact_resume(name, tmp_path, monkeypatch, methods.registry()[name].example)


@pytest.mark.parametrize("name", BUILT_IN)
def test_plan_and_bad_settings(name, tmp_path, capsys):
    check_plan_and_bad_settings(name, tmp_path, capsys)


def test_registry_names_are_the_valid_names_everywhere():
    from ewc_rl import fisher
    from ewc_rl.penalty import KINDS

    with pytest.raises(ConfigError, match="'penalty.kind' must be one of " + ", ".join(KINDS)):
        load_config("ewc", ["penalty.kind=nope"])
    with pytest.raises(ConfigError, match="'penalty.fisher' must be one of " + ", ".join(fisher.ESTIMATORS)):
        load_config("ewc", ["penalty.fisher=nope"])
    with pytest.raises(ConfigError, match="unknown method 'nope'; known: " + ", ".join(methods.names())):
        load_config("ewc", ['agent.methods=["nope"]'])
    with pytest.raises(ConfigError, match="lists a method twice"):
        load_config("ewc", ['agent.methods=["penalty", "penalty"]'])


TOY = '''
"""A toy method: weight * mean over the batch of ||Q(s)||^2, a penalty on the size of the Q output."""

from dataclasses import dataclass

from ewc_rl.config import setting
from ewc_rl.methods import Method, register


@dataclass
class QNormSettings:
    weight: float = setting(0.0, min=0)


@register
class QNorm(Method):
    name = "qnorm"
    Settings = QNormSettings
    example = {"weight": 0.1}

    def loss(self, agent, batch):
        return self.settings.weight * agent.q_net(batch.observations).pow(2).sum(1).mean()
'''


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    """The toy method's module, written outside the package and made importable as a plugin."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ewc_toy_qnorm.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", f"{plugins}:{Path.cwd()}")
    monkeypatch.setenv(methods.PLUGINS_ENV, "ewc_toy_qnorm")  # what compare's worker processes import
    importlib.import_module("ewc_toy_qnorm")
    yield "qnorm"
    monkeypatch.delitem(methods._REGISTRY, "qnorm")
    monkeypatch.delitem(sys.modules, "ewc_toy_qnorm")


def test_a_new_method_is_one_module_plus_registration(toy_method, tmp_path, monkeypatch, capsys):
    name = toy_method
    assert name in methods.names()
    check_gradient(name, tmp_path / "gradient")
    check_plan_and_bad_settings(name, tmp_path / "plan", capsys)
    check_exact_resume(name, tmp_path / "resume", monkeypatch, {"weight": 0.1})
    # With penalty too, in a declared order, through compare's worker processes.
    agent_file = tmp_path / "ewc-and-qnorm.toml"
    agent_file.write_text(
        '[agent]\nnetwork = "minatar"\nmethods = ["penalty", "qnorm"]\n'
        '[penalty]\nkind = "ewc"\nlambda = 10.0\nfisher_states = 32\n[qnorm]\nweight = 0.1\n'
    )
    logdir = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--agents",
                str(agent_file),
                "--seeds",
                "0",
                "--games",
                GAMES,
                *TINY,
                "--workers",
                "1",
                "--logdir",
                str(logdir),
            ]
        )
        == 0
    )
    summary = json.loads((logdir / "ewc-and-qnorm" / "seed-0" / "summary.json").read_text())
    assert summary["complete"] and summary["settings"]["qnorm"] == {"weight": 0.1}
    assert summary["settings"]["agent"]["methods"] == ["penalty", "qnorm"]


@pytest.mark.parametrize("importance", ["si", "mas"])
def test_the_anchor_with_si_or_mas_importances_resumes_exactly(importance, tmp_path, monkeypatch):
    check_exact_resume(
        "penalty",
        tmp_path,
        monkeypatch,
        {"kind": "ewc", "lambda": 10.0, "fisher": importance, "fisher_states": 16, "fisher_batch_size": 8},
    )


@pytest.mark.parametrize("name", ["rehearsal", "functional"])
def test_a_methods_states_join_the_updates_forward_and_change_nothing(name, tmp_path):
    """Without per-game layers, rehearsal's and the functional anchor's states go through the update's own forward
    (Method.inputs): the update must equal the one in which their loss() runs a forward of its own."""
    method = _method(name)
    agent = sequence_agent([method], tmp_path, per_game_layers=False)
    train_game(agent, "A")
    train_game(agent, "B")
    train_game(agent, "C", steps=30, end=False)
    start = (
        {k: v.clone() for k, v in agent.q_net.state_dict().items()},
        copy.deepcopy(agent.policy.optimizer.state_dict()),
    )
    rng = np.random.get_state()
    joined = []
    joined_loss = method.joined_loss
    method.joined_loss = lambda *args: joined.append(len(args[2])) or joined_loss(*args)  # type: ignore[method-assign]

    def update() -> dict[str, th.Tensor]:
        """One update from the same start; its (clipped) gradients, which stay in .grad until the next update."""
        agent.q_net.load_state_dict(start[0])
        agent.policy.optimizer.load_state_dict(copy.deepcopy(start[1]))
        np.random.set_state(rng)
        agent.train(1, agent.batch_size)
        return {k: p.grad.clone() for k, p in agent.q_net.named_parameters()}

    got = update()
    assert joined == [method.batch_share(agent, 16) or method.settings.batch_size]  # it did join
    method.inputs = lambda agent, batch: None  # type: ignore[method-assign]  # each its own forward, as before
    want = update()
    assert len(joined) == 1
    for k, v in want.items():
        th.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert any(bool(v.any()) for v in want.values())
