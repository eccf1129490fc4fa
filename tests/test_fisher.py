"""The Fisher estimators against an explicit per-sample loop of ordinary autograd calls."""

from __future__ import annotations

import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl import fisher
from tests.conftest import tiny_qnet

TAU = 0.7


def _loop_sq_grads(net, losses_fn, n):
    """sum_i (d loss_i)^2, one autograd.grad call per sample (the slow, obviously right way)."""
    params = list(net.parameters())
    total = [th.zeros_like(p) for p in params]
    for i in range(n):
        grads = th.autograd.grad(losses_fn(i), params)
        for t, g in zip(total, grads, strict=True):
            t += g**2
    return {name: t / n for (name, _), t in zip(net.named_parameters(), total, strict=True)}


def _assert_close(got, want, rtol=1e-5):
    assert got.keys() == want.keys()
    for k in want:
        err = (got[k] - want[k]).norm() / want[k].norm()
        assert err <= rtol, f"{k}: relative error {err:.2e}"


@pytest.fixture
def setup():
    net = tiny_qnet(n_actions=5, channels=2)
    obs = th.randn(23, 2, 6, 6, generator=th.Generator().manual_seed(1))  # 23: not a multiple of chunks
    return net, obs


def test_sampled_matches_per_sample_loop(setup):
    net, obs = setup
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(3))
    got = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=5)
    want = _loop_sq_grads(net, lambda i: F.log_softmax(net(obs[i:i + 1]) / TAU, -1)[0, actions[i]], len(obs))
    _assert_close(got, want)


def test_exact_matches_per_sample_loop(setup):
    net, obs = setup
    got = fisher.exact_fisher(net, obs, TAU, chunk_size=4)
    params = list(net.parameters())
    total = [th.zeros_like(p) for p in params]
    for i in range(len(obs)):
        logp = F.log_softmax(net(obs[i:i + 1]) / TAU, -1)[0]
        for a in range(5):
            grads = th.autograd.grad(logp[a], params, retain_graph=True)
            for t, g in zip(total, grads, strict=True):
                t += logp[a].exp().detach() * g**2
    want = {n: t / len(obs) for (n, _), t in zip(net.named_parameters(), total, strict=True)}
    _assert_close(got, want)


def test_empirical_matches_per_sample_loop(setup):
    net, obs = setup
    actions = th.randint(0, 5, (len(obs),), generator=th.Generator().manual_seed(4))
    targets = th.randn(len(obs), generator=th.Generator().manual_seed(5)) * 3  # some beyond Huber's kink
    got = fisher.empirical_fisher(net, obs, actions, targets, chunk_size=6)
    want = _loop_sq_grads(net, lambda i: F.smooth_l1_loss(net(obs[i:i + 1])[0, actions[i]], targets[i]), len(obs))
    _assert_close(got, want)


def test_sampled_is_unbiased_for_exact(setup):
    """Averaged over many action draws, the sampled estimator approaches the exact one."""
    net, obs = setup
    obs = obs[:4].repeat(400, 1, 1, 1)
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(7))
    sampled = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=400)
    exact = fisher.exact_fisher(net, obs[:4], TAU)
    for k in exact:
        assert (sampled[k] - exact[k]).norm() / exact[k].norm() < 0.15, k


def test_not_the_square_of_the_mean_gradient(setup):
    """The per-sample estimator differs from squaring a minibatch-mean gradient (the classic mistake)."""
    net, obs = setup
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(3))
    per_sample = fisher.sampled_fisher(net, obs, actions, TAU)
    logp = F.log_softmax(net(obs) / TAU, -1).gather(1, actions[:, None]).mean()
    mean_sq = [g**2 for g in th.autograd.grad(logp, list(net.parameters()))]
    total_ps = sum(v.sum() for v in per_sample.values())
    total_ms = sum(v.sum() for v in mean_sq)
    assert total_ps > 3 * total_ms
