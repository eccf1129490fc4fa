"""The fast optimiser paths: chosen per optimiser and device, numerically the reference update, used by the agents."""

from __future__ import annotations

import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl.agent import make_agent
from ewc_rl.config import load_config
from ewc_rl.envs import make_env
from ewc_rl.optimizers import fast_optimizer_kwargs
from tests.conftest import tiny_qnet


class _NoFlags(th.optim.SGD):
    """An optimiser whose constructor takes neither ``fused`` nor ``foreach`` (like a hand-written one)."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, lr=lr)


def test_fused_for_adam_foreach_for_rmsprop_nothing_for_an_optimiser_without_flags():
    assert fast_optimizer_kwargs(th.optim.Adam, "cpu") == {"fused": True}
    assert fast_optimizer_kwargs(th.optim.RMSprop, "cpu") == {"foreach": True}
    assert fast_optimizer_kwargs(_NoFlags, "cpu") == {}


def test_falls_back_to_foreach_where_the_device_has_no_fused_kernel():
    assert fast_optimizer_kwargs(th.optim.Adam, "meta") == {"foreach": True}  # no fused kernel on 'meta'


@pytest.mark.parametrize(("optimizer_class", "kwargs"), [
    (th.optim.Adam, {"lr": 1e-3}),
    (th.optim.RMSprop, {"lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "centered": True}),  # kirkpatrick2017's
])
def test_fast_update_matches_the_single_tensor_reference(optimizer_class, kwargs):
    """Three DQN-shaped updates (Huber loss, gradient clipping) from the same weights and batches."""
    gen = th.Generator().manual_seed(1)
    batches = [(th.rand(16, 2, 6, 6, generator=gen), th.randint(0, 5, (16, 1), generator=gen),
                th.randn(16, 1, generator=gen)) for _ in range(3)]
    nets = {}
    for name, flags in (("reference", {"foreach": False}), ("fast", fast_optimizer_kwargs(optimizer_class, "cpu"))):
        net = tiny_qnet()
        optimizer = optimizer_class(net.parameters(), **kwargs, **flags)
        for x, a, y in batches:
            optimizer.zero_grad()
            F.smooth_l1_loss(net(x).gather(1, a), y).backward()
            th.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimizer.step()
        nets[name] = net
    moved = False
    for (name, ref), fast in zip(nets["reference"].named_parameters(), nets["fast"].parameters(), strict=True):
        th.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-7, msg=name)
        moved |= not th.equal(ref, tiny_qnet().state_dict()[name])
    assert moved


@pytest.mark.parametrize(("overrides", "flag"), [([], "fused"), (["agent.optimizer='rmsprop'"], "foreach")])
def test_make_agent_sets_the_fast_flag_and_a_resume_keeps_it(overrides, flag):
    cfg = load_config("minatar-dqn", overrides)
    env = make_env("MinAtar/Breakout", cfg.env, training=True, seed=0)
    agent = make_agent(cfg, env, ["MinAtar/Breakout"], seed=0, device="cpu")
    optimizer = agent.policy.optimizer
    assert isinstance(optimizer, th.optim.RMSprop if overrides else th.optim.Adam)
    assert optimizer.param_groups[0][flag] is True
    meta, tensors, replays = agent.checkpoint_state(with_replay=False)
    for group in tensors["optimizer"]["param_groups"]:  # as saved by a version without the fast path
        group["fused"], group["foreach"] = None, None
    agent.restore_checkpoint(meta, tensors, replays, current_game=None)
    assert agent.policy.optimizer.param_groups[0][flag] is True
    env.close()
