"""The optimisers: RMSpropDQN against a per-parameter loop of DeepMind's formula; the fast paths chosen per
optimiser and device, numerically the reference update, used by the agents."""

from __future__ import annotations

import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl import optimizers
from ewc_rl.agent import make_agent
from ewc_rl.config import load_config
from ewc_rl.envs import make_env
from ewc_rl.optimizers import RMSpropDQN, fast_optimizer_kwargs
from tests.conftest import atari_agent, tiny_qnet


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


@pytest.mark.parametrize(
    ("optimizer_class", "kwargs"),
    [
        (th.optim.Adam, {"lr": 1e-3}),
        (th.optim.RMSprop, {"lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "centered": True}),  # kirkpatrick2017's
    ],
)
def test_fast_update_matches_the_single_tensor_reference(optimizer_class, kwargs):
    """Three DQN-shaped updates (Huber loss, gradient clipping) from the same weights and batches."""
    gen = th.Generator().manual_seed(1)
    batches = [
        (th.rand(16, 2, 6, 6, generator=gen), th.randint(0, 5, (16, 1), generator=gen), th.randn(16, 1, generator=gen))
        for _ in range(3)
    ]
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


def _reference(
    params: list[th.Tensor], grads: list[list[th.Tensor | None]], lr: float, alpha: float, eps: float, centered: bool
) -> list[th.Tensor]:
    """theta -= lr g / sqrt(E[g^2] - E[g]^2 + eps), element by element, one parameter at a time."""
    params = [p.clone() for p in params]
    g2 = [th.zeros_like(p) for p in params]
    g1 = [th.zeros_like(p) for p in params]
    for step in grads:
        for i, g in enumerate(step):
            if g is None:
                continue
            flat_p, flat_g, flat_g2, flat_g1 = params[i].view(-1), g.reshape(-1), g2[i].view(-1), g1[i].view(-1)
            for j in range(flat_p.numel()):
                flat_g2[j] = alpha * flat_g2[j] + (1 - alpha) * flat_g[j] ** 2
                flat_g1[j] = alpha * flat_g1[j] + (1 - alpha) * flat_g[j]
                variance = flat_g2[j] - flat_g1[j] ** 2 if centered else flat_g2[j]
                flat_p[j] -= lr * flat_g[j] / (variance + eps).sqrt()
    return params


@pytest.mark.parametrize("centered", [True, False])
def test_matches_the_formula_parameter_by_parameter(centered):
    gen = th.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    start = [th.randn(s, generator=gen, dtype=th.float64) for s in shapes]
    # Gradients of 1e-1 to 1e-3, where eps inside and outside the root differ most; parameter 1 has no gradient
    # in step 2 (another game's per-game layer): it must not move, nor its averages.
    grads = [[th.randn(s, generator=gen, dtype=th.float64) * 10.0 ** -(k % 3 + 1) for s in shapes] for k in range(6)]
    grads[2][1] = None
    params = [p.clone().requires_grad_(True) for p in start]
    opt = RMSpropDQN(params, lr=2.5e-4, alpha=0.95, eps=0.01, centered=centered)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g
        opt.step()
    want = _reference(start, grads, 2.5e-4, 0.95, 0.01, centered)
    for got, expected in zip(params, want, strict=True):
        assert th.allclose(got.detach(), expected, rtol=1e-12, atol=1e-15)
    # ... and it is not torch's RMSprop (eps outside the root), whose steps are several times larger here.
    torch_params = [p.clone().requires_grad_(True) for p in start]
    torch_opt = th.optim.RMSprop(torch_params, lr=2.5e-4, alpha=0.95, eps=0.01, centered=centered)
    for step in grads:
        for p, g in zip(torch_params, step, strict=True):
            p.grad = g
        torch_opt.step()
    assert not th.allclose(torch_params[0].detach(), want[0], rtol=1e-3)


def test_state_round_trips_through_a_tensors_only_checkpoint(tmp_path):
    w = th.nn.Parameter(th.ones(4))
    opt = RMSpropDQN([w], lr=0.1)
    w.grad = th.full((4,), 0.5)
    opt.step()
    th.save(opt.state_dict(), tmp_path / "opt.pt")
    w2 = th.nn.Parameter(w.detach().clone())
    opt2 = RMSpropDQN([w2], lr=0.1)
    opt2.load_state_dict(th.load(tmp_path / "opt.pt", weights_only=True))
    for p in (w, w2):
        p.grad = th.full((4,), -0.25)
    opt.step()
    opt2.step()
    assert th.equal(w, w2)


def test_the_paper_agent_uses_deepminds_rmsprop():
    cfg = load_config("kirkpatrick2017")
    assert cfg.agent.optimizer == "rmsprop-dqn"
    kwargs = optimizers.policy_kwargs(cfg.agent)
    assert kwargs == {"optimizer_class": RMSpropDQN, "optimizer_kwargs": {"alpha": 0.95, "eps": 0.01, "centered": True}}
    adam = optimizers.policy_kwargs(load_config("dqn").agent)  # SB3's default optimiser, in its fastest form
    assert adam == {"optimizer_class": th.optim.Adam, "optimizer_kwargs": fast_optimizer_kwargs(th.optim.Adam)}
    assert (
        optimizers.policy_kwargs(load_config("dqn", ["agent.optimizer='rmsprop'"]).agent)["optimizer_class"]
        is th.optim.RMSprop
    )


def test_optimiser_state_saved_in_another_layout_resumes_to_the_same_update():
    """Adam's moments saved in torch's default layout (by a version before channels-last, or on another device) are
    laid out as the channels-last parameters on restore: fused Adam on CPU would step with wrong values otherwise."""
    import copy

    import numpy as np

    agent, resumed = atari_agent(), atari_agent()
    np.random.seed(0)
    agent.learn(24, log_interval=None)
    meta, tensors, replays = copy.deepcopy(agent.checkpoint_state(with_replay=False))  # not the live tensors
    saved = tensors["optimizer"]
    saved["state"] = {i: {k: v.contiguous() for k, v in s.items()} for i, s in saved["state"].items()}  # new dicts
    assert any(not v.is_contiguous(memory_format=th.channels_last) for s in saved["state"].values() for v in s.values())
    resumed.restore_checkpoint(meta, tensors, replays, current_game=None)
    for learner in (agent, resumed):
        for p in learner.q_net.parameters():
            p.grad = th.sin(p.detach() * 1e3)  # the same gradient for both, different per element
        learner.policy.optimizer.step()
    for (name, p), q in zip(agent.q_net.named_parameters(), resumed.q_net.parameters(), strict=True):
        assert th.equal(p, q), name
