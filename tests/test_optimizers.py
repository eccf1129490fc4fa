"""RMSpropDQN against an explicit per-parameter loop written from DeepMind's formula, and the agent files' choice."""

from __future__ import annotations

import pytest
import torch as th

from ewc_rl import optimizers
from ewc_rl.config import load_config
from ewc_rl.optimizers import RMSpropDQN


def _reference(params: list[th.Tensor], grads: list[list[th.Tensor | None]], lr: float, alpha: float, eps: float,
               centered: bool) -> list[th.Tensor]:
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
    assert optimizers.policy_kwargs(load_config("dqn").agent) == {}
    assert optimizers.policy_kwargs(load_config("dqn", ["agent.optimizer='rmsprop'"]).agent)["optimizer_class"] \
        is th.optim.RMSprop
