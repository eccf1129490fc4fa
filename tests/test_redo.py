"""ReDo: exactly the dormant units are recycled (fresh incoming weights, zero outgoing weights, zero moments), every
other entry bit for bit unchanged, the network's output unchanged; and the scores it uses match a hand computation."""

from __future__ import annotations

import torch as th
from torch import nn

from ewc_rl import plasticity
from ewc_rl.methods.redo import recycle
from ewc_rl.networks import CReLU


def _trained(net: nn.Module, obs: th.Tensor) -> th.optim.Adam:
    opt = th.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        net(obs).pow(2).sum().backward()
        opt.step()
    return opt


def _snapshot(net: nn.Module, opt: th.optim.Optimizer) -> tuple[dict[str, th.Tensor], dict[str, dict[str, th.Tensor]]]:
    names = {id(p): n for n, p in net.named_parameters()}
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    moments = {names[id(p)]: {k: v.clone() for k, v in s.items() if k != "step"} for p, s in opt.state.items()}
    return params, moments


def test_scores_are_mean_abs_activation_over_the_layer_mean():
    th.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    obs = th.randn(50, 4)
    (score,), features = plasticity.activation_scores(net, obs)
    h = th.relu(net[0](obs)).detach()
    want = h.abs().mean(0) / h.abs().mean(0).mean()
    th.testing.assert_close(score, want)
    th.testing.assert_close(features, h)


def test_recycle_reinitialises_exactly_the_dormant_units():
    th.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    obs = th.randn(64, 4)
    with th.no_grad():  # units 1 and 3 of the first layer, unit 0 of the second, never fire; the others always do
        net[0].bias.copy_(th.tensor([50.0, -100.0, 50.0, -100.0, 50.0, 50.0]))
        net[2].bias.copy_(th.tensor([-100.0, 50.0, 50.0, 50.0, 50.0]))
    opt = _trained(net, obs)
    params, moments = _snapshot(net, opt)
    out = net(obs).detach()
    seed = 11
    th.manual_seed(seed)
    fresh = dict(
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).named_parameters()
    )
    changed, n = recycle(net, opt, obs, tau=0.0, seed=seed)
    assert n == 3
    rows = {"0.weight": [1, 3], "0.bias": [1, 3], "2.weight": [0], "2.bias": [0]}
    cols = {"2.weight": [1, 3], "4.weight": [0]}
    names = {id(p): name for name, p in net.named_parameters()}
    for name, p in net.named_parameters():
        want = params[name].clone()
        expected_mask = th.zeros_like(p, dtype=th.bool)
        for r in rows.get(name, []):
            want[r] = fresh[name][r]
            expected_mask[r] = True
        for c in cols.get(name, []):
            want[:, c] = 0.0
            expected_mask[:, c] = True
        assert th.equal(p.detach(), want), name
        assert th.equal(changed.get(name, th.zeros_like(p, dtype=th.bool)), expected_mask), name
        for key, value in opt.state[p].items():
            if key != "step":
                assert th.equal(value, moments[names[id(p)]][key].masked_fill(expected_mask, 0.0)), (name, key)
    assert th.equal(net(obs), out)  # the recycled units' outputs are multiplied by zero weights


def test_recycle_maps_a_flattened_convolution_channel_and_crelu_to_their_columns():
    th.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), CReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 3))
    obs = th.randn(16, 1, 4, 4)
    with th.no_grad():  # channel 1 constant zero before the activation: both CReLU halves silent
        net[0].weight[1] = 0.0
        net[0].bias[1] = 0.0
    opt = _trained(net, obs)
    w_before = net[3].weight.detach().clone()
    _, n = recycle(net, opt, obs, tau=0.0, seed=3)
    assert n == 1
    # inputs are channel-major: CReLU channels (0, 1, 2, 3) = (relu unit 0, relu unit 1, -unit 0, -unit 1), 4 each
    zeroed = [*range(4, 8), *range(12, 16)]
    kept = [*range(0, 4), *range(8, 12)]
    assert not net[3].weight[:, zeroed].any()
    assert th.equal(net[3].weight[:, kept], w_before[:, kept])
