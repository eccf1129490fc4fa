"""The merged penalty against autograd over K separate anchors, revisits, online decay, L2 and none."""

from __future__ import annotations

import pytest
import torch as th

from ewc_rl.penalty import Penalty

LAM = 3.0


def _params(seed, scale=1.0):
    g = th.Generator().manual_seed(seed)
    return {"w": th.randn(4, 3, generator=g) * scale, "b": th.randn(3, generator=g) * scale}


def _fisher(seed):
    g = th.Generator().manual_seed(seed)
    f = {"w": th.rand(4, 3, generator=g), "b": th.rand(3, generator=g)}
    f["w"][0, 0] = 0.0  # a parameter no game cares about
    return f


def _separate(theta, anchors, lam=LAM):
    """lambda/2 sum_k sum_i F_ki (theta_i - theta*_ki)^2, anchor by anchor, in float64."""
    total = th.zeros((), dtype=th.float64)
    for star, f in anchors:
        for n in theta:
            total = total + (f[n].double() * (theta[n].double() - star[n].double()) ** 2).sum()
    return 0.5 * lam * total


def _value_and_grad(fn, theta):
    leaf = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    value = fn(leaf)
    grads = th.autograd.grad(value, list(leaf.values()))
    return value.double().item(), dict(zip(leaf, grads, strict=True))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_merged_equals_separate_anchors(k):
    anchors = [(_params(10 + i), _fisher(20 + i)) for i in range(k)]
    pen = Penalty("ewc", LAM)
    for i, (star, f) in enumerate(anchors):
        pen.consolidate(f"game{i}", star, f)
    theta = _params(99)
    got_v, got_g = _value_and_grad(pen, theta)
    want_v, want_g = _value_and_grad(lambda p: _separate(p, anchors), theta)
    assert got_v == pytest.approx(want_v, rel=1e-5)
    for n in theta:
        th.testing.assert_close(got_g[n].double(), want_g[n].double(), rtol=1e-5, atol=1e-6)


def test_constant_keeps_precision_when_anchors_are_close():
    """Anchors 1e-3 apart around a large offset: the constant c must not drown in float32 rounding."""
    base = _params(1, scale=100.0)
    anchors = [({n: v + 1e-3 * i for n, v in base.items()}, _fisher(30 + i)) for i in range(4)]
    pen = Penalty("ewc", LAM)
    for i, (star, f) in enumerate(anchors):
        pen.consolidate(f"g{i}", star, f)
    theta = {n: v.clone() for n, v in anchors[0][0].items()}
    assert pen(theta).item() == pytest.approx(_separate(theta, anchors).item(), rel=1e-3)


def test_revisit_replaces_the_games_anchor():
    pen = Penalty("ewc", LAM)
    first, second, other = (_params(1), _fisher(2)), (_params(3), _fisher(4)), (_params(5), _fisher(6))
    pen.consolidate("Pong", *first)
    pen.consolidate("Breakout", *other)
    pen.consolidate("Pong", *second)
    assert len(pen.anchors) == 2
    theta = _params(7)
    assert pen(theta).item() == pytest.approx(_separate(theta, [other, second]).item(), rel=1e-5)


def test_online_ewc_decays_and_anchors_at_latest():
    pen = Penalty("online-ewc", LAM, decay=0.5)
    (p1, f1), (p2, f2) = (_params(1), _fisher(2)), (_params(3), _fisher(4))
    pen.consolidate("a", p1, f1)
    pen.consolidate("b", p2, f2)
    running = {n: 0.5 * f1[n] + f2[n] for n in f1}
    theta = _params(5)
    assert pen(theta).item() == pytest.approx(_separate(theta, [(p2, running)]).item(), rel=1e-5)


def test_normalize_divides_each_fisher_by_its_mean():
    pen = Penalty("online-ewc", LAM, decay=1.0, normalize=True)
    p, f = _params(1), _fisher(2)
    pen.consolidate("a", p, {n: 1000 * v for n, v in f.items()})
    mean = th.cat([v.flatten() for v in f.values()]).mean()
    theta = _params(3)
    want = _separate(theta, [(p, {n: v / mean for n, v in f.items()})])
    assert pen(theta).item() == pytest.approx(want.item(), rel=1e-5)


def test_l2_uses_unit_fisher_and_needs_none():
    pen = Penalty("l2", LAM)
    assert not pen.needs_fisher
    p1, p2 = _params(1), _params(2)
    pen.consolidate("a", p1)
    pen.consolidate("b", p2)
    ones = {n: th.ones_like(v) for n, v in p1.items()}
    theta = _params(3)
    assert pen(theta).item() == pytest.approx(_separate(theta, [(p1, ones), (p2, ones)]).item(), rel=1e-5)


def test_none_and_empty_are_zero():
    theta = _params(1)
    assert Penalty("none", LAM)(theta).item() == 0.0
    assert Penalty("ewc", LAM)(theta).item() == 0.0  # no anchor yet
    pen = Penalty("none", LAM)
    pen.consolidate("a", theta, _fisher(1))
    assert not pen.active


def test_ewc_requires_a_fisher():
    with pytest.raises(ValueError, match="needs a Fisher"):
        Penalty("ewc", LAM).consolidate("a", _params(1))


@pytest.mark.parametrize(("kind", "k"), [("ewc", 1), ("ewc", 4), ("online-ewc", 3), ("l2", 2)])
def test_direct_gradient_equals_autograd_of_the_penalty(kind, k):
    """Training adds lambda A (theta - mu) to .grad directly: the same as backpropagating the value."""
    pen = Penalty(kind, LAM, decay=0.7)
    for i in range(k):
        pen.consolidate(f"g{i}", _params(10 + i), None if kind == "l2" else _fisher(20 + i))
    theta = _params(99)
    want_value, want_grad = _value_and_grad(pen, theta)
    leaf = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    for p in leaf.values():
        p.grad = th.full_like(p, 0.25)  # a TD gradient already there: the penalty's is added to it
    got_value = pen.add_gradient(leaf)
    assert got_value == pytest.approx(want_value, rel=1e-5)
    for n in theta:
        th.testing.assert_close(leaf[n].grad, want_grad[n] + 0.25, rtol=1e-5, atol=1e-6)
    assert pen.add_gradient(leaf, value=False) is None


def test_direct_gradient_at_the_anchor_is_zero_not_rounding_noise():
    big = {n: v * 1e3 for n, v in _params(1).items()}
    pen = Penalty("ewc", 1e5)
    pen.consolidate("a", big, {n: th.full_like(v, 100.0) for n, v in big.items()})
    leaf = {n: v.clone().requires_grad_(True) for n, v in big.items()}
    for p in leaf.values():
        p.grad = th.zeros_like(p)
    assert pen.add_gradient(leaf) == pytest.approx(0.0, abs=1e-6)
    assert all(float(p.grad.abs().max()) == 0.0 for p in leaf.values())


def test_non_finite_fisher_is_refused_at_consolidation():
    f = _fisher(1)
    f["w"][1, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite Fisher"):
        Penalty("ewc", LAM).consolidate("a", _params(1), f)


def _check_direct_gradient(pen, theta, value):
    want_value, want_grad = _value_and_grad(pen, theta)
    leaf = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    for p in leaf.values():
        p.grad = th.full_like(p, -0.5)
    got = pen.add_gradient(leaf, value=value)
    assert got is None if not value else got == pytest.approx(want_value, rel=1e-5)
    for n in theta:
        th.testing.assert_close(leaf[n].grad, want_grad[n] - 0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("error")  # a buffer of the wrong shape would be resized by torch with a warning
def test_direct_gradient_stays_right_as_the_anchors_change():
    """add_gradient reuses its (theta - mu) buffers across updates; a replaced anchor, a release, a clear followed
    by anchors of other shapes under the same names, and a reload must each give autograd's gradient again."""
    pen = Penalty("ewc", LAM)
    pen.consolidate("a", _params(1), _fisher(2))
    theta = _params(3)
    for value in (True, False, True, False):  # the value squares the buffer in place: the next call refills it
        _check_direct_gradient(pen, theta, value)
    pen.consolidate("a", _params(4), _fisher(5))  # a revisit replaces the anchor
    _check_direct_gradient(pen, theta, False)
    pen.release({"w": th.rand(4, 3, generator=th.Generator().manual_seed(6)) < 0.5})
    _check_direct_gradient(pen, theta, True)
    pen.clear()
    g = th.Generator().manual_seed(7)
    wide = {"w": th.randn(2, 5, generator=g), "b": th.randn(5, generator=g)}
    pen.consolidate("a", wide, {n: th.rand(v.shape, generator=g) for n, v in wide.items()})
    other_theta = {n: v + th.randn(v.shape, generator=g) for n, v in wide.items()}
    _check_direct_gradient(pen, other_theta, False)
    source = Penalty("ewc", LAM)
    source.consolidate("b", _params(8), _fisher(9))
    pen.load_state_dict(source.state_dict(), "cpu")
    _check_direct_gradient(pen, theta, True)
