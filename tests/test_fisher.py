"""The Fisher estimators against an explicit per-sample loop of ordinary autograd calls."""

from __future__ import annotations

import pytest
import torch as th
import torch.nn.functional as F

from ewc_rl import fisher
from tests.conftest import tiny_qnet

TAU = 0.7


def _loop_sq_grads(net, losses_fn, n, magnitude=th.square):
    """mean_i (d loss_i)^2 (or another magnitude), one autograd.grad call per sample (the slow, obviously right way)."""
    params = list(net.parameters())
    total = [th.zeros_like(p) for p in params]
    for i in range(n):
        grads = th.autograd.grad(losses_fn(i), params, allow_unused=True)  # unused: another game's b and g
        for t, g in zip(total, grads, strict=True):
            if g is not None:
                t += magnitude(g)
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


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_sampled_matches_per_sample_loop(setup, method):
    net, obs = setup
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(3))
    got = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=5, method=method)
    want = _loop_sq_grads(net, lambda i: F.log_softmax(net(obs[i : i + 1]) / TAU, -1)[0, actions[i]], len(obs))
    _assert_close(got, want)


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_exact_matches_per_sample_loop(setup, method):
    net, obs = setup
    got = fisher.exact_fisher(net, obs, TAU, chunk_size=4, method=method)
    params = list(net.parameters())
    total = [th.zeros_like(p) for p in params]
    for i in range(len(obs)):
        logp = F.log_softmax(net(obs[i : i + 1]) / TAU, -1)[0]
        for a in range(5):
            grads = th.autograd.grad(logp[a], params, retain_graph=True)
            for t, g in zip(total, grads, strict=True):
                t += logp[a].exp().detach() * g**2
    want = {n: t / len(obs) for (n, _), t in zip(net.named_parameters(), total, strict=True)}
    _assert_close(got, want)


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_empirical_matches_per_sample_loop(setup, method):
    net, obs = setup
    actions = th.randint(0, 5, (len(obs),), generator=th.Generator().manual_seed(4))
    targets = th.randn(len(obs), generator=th.Generator().manual_seed(5)) * 3  # some beyond Huber's kink
    got = fisher.empirical_fisher(net, obs, actions, targets, chunk_size=6, method=method)
    want = _loop_sq_grads(net, lambda i: F.smooth_l1_loss(net(obs[i : i + 1])[0, actions[i]], targets[i]), len(obs))
    _assert_close(got, want)


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_mas_matches_per_sample_loop(setup, method):
    """MAS: the mean over states of the absolute gradient of ||Q(s)||^2, not of its square nor of a batch mean."""
    net, obs = setup
    got = fisher.mas_importance(net, obs, chunk_size=5, method=method)
    want = _loop_sq_grads(net, lambda i: net(obs[i : i + 1]).pow(2).sum(), len(obs), magnitude=th.abs)
    _assert_close(got, want)


def test_si_is_not_computed_from_replay_states():
    assert not fisher.from_replay("si") and all(fisher.from_replay(k) for k in fisher.ESTIMATORS if k != "si")
    with pytest.raises(ValueError, match="not an importance computed from replay states"):
        fisher.estimate("si", tiny_qnet(), None, lambda d: d)


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


def _per_game_net():
    """The MinAtar network with per-game biases and gains, game 1 active, all of them away from 0 and 1."""
    import gymnasium as gym
    import numpy as np

    from ewc_rl.networks import MinAtarCNN, set_game

    th.manual_seed(2)
    body = MinAtarCNN(gym.spaces.Box(0, 1, (3, 5, 5), np.uint8), features_dim=6, n_games=2)
    with th.no_grad():
        for name, p in body.named_parameters():
            if "game_" in name:
                p.add_(0.3 * th.randn_like(p))
    set_game(body, 1)
    return th.nn.Sequential(body, th.nn.Linear(6, 4))


@pytest.mark.parametrize("estimator", ["sampled", "exact", "empirical", "mas"])
def test_per_game_layers_match_per_sample_loop(estimator):
    net = _per_game_net()
    assert fisher.hooks_supported(net)
    obs = th.randint(0, 2, (11, 3, 5, 5), generator=th.Generator().manual_seed(3)).to(th.uint8)
    if estimator == "sampled":
        actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(4))
        got = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=4)
        want = _loop_sq_grads(net, lambda i: F.log_softmax(net(obs[i : i + 1]) / TAU, -1)[0, actions[i]], len(obs))
    elif estimator == "empirical":
        actions = th.randint(0, 4, (len(obs),), generator=th.Generator().manual_seed(5))
        targets = th.randn(len(obs), generator=th.Generator().manual_seed(6))
        got = fisher.empirical_fisher(net, obs, actions, targets, chunk_size=4)
        want = _loop_sq_grads(net, lambda i: F.smooth_l1_loss(net(obs[i : i + 1])[0, actions[i]], targets[i]), len(obs))
    elif estimator == "mas":
        got = fisher.mas_importance(net, obs, chunk_size=4)
        want = _loop_sq_grads(net, lambda i: net(obs[i : i + 1]).pow(2).sum(), len(obs), magnitude=th.abs)
    else:
        got = fisher.exact_fisher(net, obs, TAU, chunk_size=4)
        want = fisher.exact_fisher(net, obs, TAU, chunk_size=4, method="vmap")
    inactive = {n for n in want if n.endswith(".0") and "game_" in n}
    assert all(float(got[n].abs().max()) == 0.0 for n in inactive)  # game 0's b and g get nothing
    _assert_close(
        {n: v for n, v in got.items() if n not in inactive}, {n: v for n, v in want.items() if n not in inactive}
    )


def test_the_shipped_networks_take_the_fast_path():
    import gymnasium as gym
    import numpy as np

    from ewc_rl.networks import AtariCNN, MinAtarCNN

    atari = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert fisher.hooks_supported(AtariCNN(atari)) and fisher.hooks_supported(AtariCNN(atari, 1024, (32, 64, 128), 3))
    assert fisher.hooks_supported(MinAtarCNN(gym.spaces.Box(0, 1, (10, 10, 10), np.uint8), n_games=2))


def test_other_layers_fall_back_to_vmap_and_stay_exact():
    th.manual_seed(0)
    net = th.nn.Sequential(th.nn.Conv2d(2, 4, 3, groups=2), th.nn.Flatten(), th.nn.LayerNorm(64), th.nn.Linear(64, 3))
    assert not fisher.hooks_supported(net)
    obs = th.randn(7, 2, 6, 6, generator=th.Generator().manual_seed(1))
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(2))
    got = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=3)
    want = _loop_sq_grads(net, lambda i: F.log_softmax(net(obs[i : i + 1]) / TAU, -1)[0, actions[i]], len(obs))
    _assert_close(got, want)


@pytest.mark.parametrize("n_games", [0, 2])
def test_layer_norm_and_crelu_networks_take_the_fast_path_and_match_per_sample_loop(n_games):
    import gymnasium as gym
    import numpy as np

    from ewc_rl.networks import MinAtarCNN, set_game

    th.manual_seed(0)
    body = MinAtarCNN(
        gym.spaces.Box(0, 1, (3, 6, 6), np.uint8), features_dim=8, n_games=n_games, activation="crelu", layer_norm=True
    )
    with th.no_grad():  # gains and biases away from 1 and 0, so that their gradients are not special
        for p in body.parameters():
            if p.dim() == 1:
                p.add_(0.3 * th.randn_like(p))
    set_game(body, n_games - 1 if n_games else 0)
    net = th.nn.Sequential(body, th.nn.Linear(16, 4))
    assert fisher.hooks_supported(net)
    obs = th.randint(0, 2, (9, 3, 6, 6), generator=th.Generator().manual_seed(3)).to(th.uint8)
    actions = fisher.sample_actions(net, obs, TAU, th.Generator().manual_seed(4))
    got = fisher.sampled_fisher(net, obs, actions, TAU, chunk_size=4, method="hooks")
    want = _loop_sq_grads(net, lambda i: F.log_softmax(net(obs[i : i + 1]) / TAU, -1)[0, actions[i]], len(obs))
    inactive = {n for n in want if n.endswith(".0") and "game_" in n}
    _assert_close(
        {n: v for n, v in got.items() if n not in inactive}, {n: v for n, v in want.items() if n not in inactive}
    )


def test_si_through_the_anchor_hooks_matches_the_closed_form_on_a_quadratic():
    """Gradient descent on L = h/2 (theta - c)^2 per coordinate, with an EWC anchor already active, driven through
    the anchor's hooks as ContinualDQN.train drives them. With H = h + lambda A and m the minimum of L + penalty,
    theta_t - m = r^t d (r = 1 - eta H, d = theta_0 - m); SI's path integral of the task loss's gradient is

        omega = sum_t -h (theta_t - c) (theta_{t+1} - theta_t) = eta H h (d^2 S2 + (m - c) d S1),
        S1 = sum_t r^t, S2 = sum_t r^2t,  and  Omega = omega / ((theta_T - theta_0)^2 + xi).

    Recording the gradient after the penalty's was added (or not at all) gives a different omega."""
    from types import SimpleNamespace

    from ewc_rl.methods.anchor import AnchorSettings, QuadraticAnchor

    eta, steps, xi, lam = 0.05, 40, 1e-3, 2.0
    h = th.tensor([1.0, 3.0, 0.5], dtype=th.float64)
    c = th.tensor([2.0, -1.0, 0.5], dtype=th.float64)
    fisher_a, mu = th.tensor([0.5, 0.0, 2.0], dtype=th.float64), th.tensor([0.0, 1.0, -1.0], dtype=th.float64)
    theta = th.nn.Parameter(th.tensor([0.0, 0.0, 3.0], dtype=th.float64))
    params = {"w": theta}
    anchor = QuadraticAnchor(AnchorSettings(kind="ewc", lam=lam, fisher="si", si_damping=xi))
    anchor.penalty.consolidate("earlier", {"w": mu}, {"w": fisher_a})
    anchor.penalty.A["w"], anchor.penalty.mu["w"] = fisher_a, mu  # keep float64 for the comparison
    anchor.penalty._lam_a["w"] = lam * fisher_a
    agent = SimpleNamespace(num_timesteps=0, segment_start=0, shared_parameters=lambda: params)
    optimizer = th.optim.SGD([theta], lr=eta)
    anchor.on_segment_start(agent, "B")  # type: ignore[arg-type]
    start = theta.detach().clone()
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * h * (theta - c) ** 2).sum().backward()  # the task loss; the anchor adds its penalty's gradient
        anchor.on_gradients(agent, params, log=False)  # type: ignore[arg-type]
        optimizer.step()
        anchor.after_step(agent)  # type: ignore[arg-type]
    H = h + lam * fisher_a
    m = (h * c + lam * fisher_a * mu) / H
    r, d = 1 - eta * H, start - m
    s1, s2 = (1 - r**steps) / (1 - r), (1 - r ** (2 * steps)) / (1 - r**2)
    omega = eta * H * h * (d**2 * s2 + (m - c) * d * s1)
    end = m + r**steps * d
    th.testing.assert_close(theta.detach(), end)
    want = omega.clamp_min(0) / ((end - start) ** 2 + xi)
    th.testing.assert_close(anchor.path.importance(params)["w"], want, rtol=1e-9, atol=1e-12)
    assert (want > 0).all()


def test_si_path_integral_survives_a_checkpoint_inside_a_segment():
    """A segment resumed from a checkpoint keeps its restored path integral; a new segment starts a new one."""
    from types import SimpleNamespace

    from ewc_rl.methods.anchor import AnchorSettings, QuadraticAnchor

    theta = th.nn.Parameter(th.tensor([1.0, 2.0]))
    params = {"w": theta}
    settings = AnchorSettings(kind="ewc", fisher="si")
    anchor = QuadraticAnchor(settings)
    agent = SimpleNamespace(num_timesteps=100, segment_start=100, shared_parameters=lambda: params)
    anchor.on_segment_start(agent, "A")  # type: ignore[arg-type]
    theta.grad = th.tensor([1.0, -1.0])
    anchor.on_gradients(agent, params, log=False)  # type: ignore[arg-type]
    with th.no_grad():
        theta -= 0.1 * theta.grad
    anchor.after_step(agent)  # type: ignore[arg-type]
    saved = anchor.state_dict()
    resumed = QuadraticAnchor(settings)
    resumed.load_state_dict(saved, "cpu")
    agent.num_timesteps = 150  # inside the segment that began at step 100
    resumed.on_segment_start(agent, "A")  # type: ignore[arg-type]
    th.testing.assert_close(resumed.path.omega[0], th.tensor([0.1, 0.1]))
    th.testing.assert_close(resumed.path.importance(params)["w"], anchor.path.importance(params)["w"])
    agent.segment_start = 150  # the next segment
    resumed.on_segment_start(agent, "B")  # type: ignore[arg-type]
    assert float(resumed.path.omega[0].abs().sum()) == 0.0
