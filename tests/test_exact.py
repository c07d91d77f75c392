"""The exact world model (the task's own equations) and J_true on Pendulum."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from lit_itpo.ascent import TrueObjective
from lit_itpo.errors import ConfigError
from lit_itpo.itpo import ITPOConfig, ITPOEngine
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.world_models.exact import PendulumWorldModel, has_exact_model, make_exact_model

SPEC = gym.spec("Pendulum-v1").to_json()


class UserPendulum(PendulumWorldModel):
    """A user's own differentiable simulator: the pendulum with another gravity, built with no
    argument (no ``from_env``), as the README's recipe says."""

    from_env = None

    def __init__(self):
        super().__init__(g=9.81)


def _states(n: int, rng: np.random.Generator) -> np.ndarray:
    """Angles anywhere, velocities up to the limit, so that the speed clip binds often."""
    th = rng.uniform(-np.pi, np.pi, n)
    thdot = rng.uniform(-8.0, 8.0, n)
    thdot[: n // 4] = rng.choice([-1.0, 1.0], n // 4) * rng.uniform(7.5, 8.0, n // 4)
    return np.stack([th, thdot], axis=1)


def test_pendulum_model_equals_the_gymnasium_env_step():
    """Next observation and reward within 1e-5 of ``Pendulum-v1.step`` over random states and
    torques, including torques beyond the +-2 clip and speeds at the +-8 clip."""
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    model = PendulumWorldModel.from_env(env)
    rng = np.random.default_rng(0)
    states = _states(400, rng)
    actions = rng.uniform(-5.0, 5.0, (400, 1)).astype(np.float32)  # 60% outside [-2, 2]
    want_obs, want_r, obs = [], [], []
    for s, a in zip(states, actions, strict=True):
        env.state = s.copy()
        obs.append(env._get_obs())
        o, r, *_ = env.step(a)
        want_obs.append(o)
        want_r.append(r)
    obs_t, act_t = torch.tensor(np.array(obs)), torch.tensor(actions)
    got_obs = model.next(obs_t, act_t, torch.zeros(400, 0))
    got_r = model.reward(obs_t, act_t)[:, 0]
    torch.testing.assert_close(got_obs, torch.tensor(np.array(want_obs)), rtol=0, atol=1e-5)
    torch.testing.assert_close(got_r, torch.tensor(want_r, dtype=torch.float32), rtol=0, atol=1e-5)
    assert (np.abs(np.array(want_obs)[:, 2]) == 8.0).sum() > 20  # the speed clip was exercised


def test_pendulum_model_gradients_match_finite_differences():
    """d(next, reward)/d(obs, action) by autograd equal central differences (float64), away
    from the clips (where the simulator's derivative is zero on one side)."""
    model = PendulumWorldModel().double()
    rng = np.random.default_rng(1)
    th, thdot = rng.uniform(-3, 3, 8), rng.uniform(-3, 3, 8)
    obs = torch.tensor(np.stack([np.cos(th), np.sin(th), thdot], 1), requires_grad=True)
    act = torch.tensor(rng.uniform(-1.5, 1.5, (8, 1)), requires_grad=True)

    def f(o, a):
        return torch.cat([model.next(o, a, torch.zeros(8, 0)), model.reward(o, a)], -1).sum(0)

    jac = torch.autograd.functional.jacobian(f, (obs, act))
    h = 1e-6
    for i, x in enumerate((obs, act)):
        for j in range(x.shape[1]):
            d = torch.zeros_like(x)
            d[:, j] = h
            args_p = [obs.detach(), act.detach()]
            args_m = [obs.detach(), act.detach()]
            args_p[i], args_m[i] = x.detach() + d, x.detach() - d
            fd = (f(*args_p) - f(*args_m)) / (2 * h)
            torch.testing.assert_close(jac[i][:, :, j].sum(1), fd, rtol=1e-6, atol=1e-6)


def test_exact_model_is_found_by_env_and_a_user_model_plugs_in():
    assert has_exact_model(SPEC) and not has_exact_model(gym.spec("Hopper-v5").to_json())
    auto = make_exact_model("auto", SPEC)
    assert isinstance(auto, PendulumWorldModel) and auto.noise_shape(2, 3, 4) == (2, 3, 4, 0)
    user = make_exact_model("tests.test_exact.UserPendulum", SPEC)
    assert isinstance(user, UserPendulum) and float(user.consts[0]) == pytest.approx(9.81)
    with pytest.raises(ConfigError, match="no built-in exact model for env 'Hopper-v5'"):
        make_exact_model("auto", gym.spec("Hopper-v5").to_json())
    with pytest.raises(ConfigError, match="not an importable WorldModel subclass"):
        make_exact_model("tests.test_exact.nothing_here", SPEC)
    # the user's model drives an ITPO step like any world model
    actor = TanhActor(3, 1, [-2.0], [2.0], [32, 32])
    critic = TwinCritic(3, 1, [32, 32])
    engine = ITPOEngine(actor, critic, user, ITPOConfig(horizon=3, particles=1, lr=1e-3))
    obs = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]])
    before = engine.start_params(2)
    engine.step(obs, user.sample_noise(2, 1, 3))
    assert any(not torch.equal(before[k], engine.params[k]) for k in before)


def test_true_objective_on_pendulum_equals_the_exact_model_and_its_step_ascends():
    """J_true (the gymnasium simulator set from the observation, float64) equals the exact
    model's imagined objective, and an ITPO step through the exact model raises J_true: the
    ascent rate of the exact arm is 100% (its gradient is J_true's own)."""
    torch.manual_seed(0)
    actor = TanhActor(3, 1, [-2.0], [2.0], [32, 32])
    critic = TwinCritic(3, 1, [32, 32])
    cfg = ITPOConfig(horizon=5, particles=1, lr=1e-4, gamma=0.99)
    assert TrueObjective.settable(SPEC)
    truth = TrueObjective(SPEC, actor, critic, cfg.horizon, cfg.gamma)
    model = make_exact_model("auto", SPEC)
    engine = ITPOEngine(actor, critic, model, cfg)
    rng = np.random.default_rng(2)
    th, thdot = rng.uniform(-np.pi, np.pi, 16), rng.uniform(-6, 6, 16)
    obs = torch.tensor(np.stack([np.cos(th), np.sin(th), thdot], 1), dtype=torch.float32)
    noise = model.sample_noise(16, 1, cfg.horizon)
    params = {k: v.detach().double() for k, v in actor.named_parameters()}
    before = engine.start_params(16)
    j_model = engine.objective(obs, noise)
    for i in range(4):
        j_true = truth(params, obs[i].double().numpy())
        assert float(j_model[i]) == pytest.approx(j_true, rel=1e-4, abs=1e-3)
    engine.step(obs, noise)
    slopes = truth.step_slopes(before, engine.params, obs)
    assert not torch.isnan(slopes).any() and (slopes > 0).all()


def test_pendulum_true_slope_equals_float64_autograd_near_the_upright_equilibrium():
    """The ascent rate's slope of J_true (central differences at Pendulum's step, 1e-5) equals
    the float64 autograd directional derivative of the same objective, near the upright
    position where ReBRAC's policy spends most of an episode. (With the MuJoCo step, 1e-3, a
    trained policy's curvature error there flipped the sign of 12% of exact-gradient steps,
    whose gradient was small: docs/notes/2026-12-07-pendulum-mechanism-check.md.)"""
    assert TrueObjective(SPEC, TanhActor(3, 1, [-2.0], [2.0], [8]), None, 1, 1.0).h == 1e-5
    import copy

    from torch.func import functional_call

    torch.manual_seed(3)
    actor = TanhActor(3, 1, [-2.0], [2.0], [64, 64])
    critic = TwinCritic(3, 1, [64, 64])
    truth = TrueObjective(SPEC, actor, critic, 5, 0.99)
    model = PendulumWorldModel().double()
    actor64, critic64 = copy.deepcopy(actor).double(), copy.deepcopy(critic).double()
    buffers = dict(actor64.named_buffers())

    def j(params, obs):
        s, total = torch.tensor(obs)[None], 0.0
        for step in range(5):
            a = functional_call(actor64, {**params, **buffers}, (s,))
            total = total + 0.99**step * model.reward(s, a)[0, 0]
            s = model.next(s, a, torch.zeros(1, 0))
        a = functional_call(actor64, {**params, **buffers}, (s,))
        return total + 0.99**5 * critic64(s, a).min(0).values.squeeze()

    rng = np.random.default_rng(4)
    for _ in range(5):
        th, thdot = rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.05)
        obs = np.array([np.cos(th), np.sin(th), thdot])
        params = {k: v.detach().double().requires_grad_(True) for k, v in actor.named_parameters()}
        d = {k: torch.randn_like(v) for k, v in params.items()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in d.values()))
        d = {k: v / norm for k, v in d.items()}
        grads = torch.autograd.grad(j(params, obs), list(params.values()))
        want = float(sum((g * d[k]).sum() for g, k in zip(grads, params, strict=True)))
        p = {k: v.detach() for k, v in params.items()}
        assert truth.slope(p, d, obs) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_carried_over_psi_drifts_with_the_episode_while_reset_moves_one_step():
    """Why the paper's rule collapsed on Pendulum where the reset rule gained (at the same
    alpha, exact dynamics; benchmarks/studies/pendulum_exact.py): with psi carried over, the adapted
    actor is the sum of every earlier step's ascent, so its distance from the pretrained one
    grows with the episode (up to the sum of the earlier steps' ascents), so one alpha takes
    ever larger steps; reset every step, each real step moves psi by that step's ascent only."""
    torch.manual_seed(0)
    actor = TanhActor(3, 1, [-2.0], [2.0], [32, 32])
    critic = TwinCritic(3, 1, [32, 32])
    model = PendulumWorldModel()
    obs0 = torch.tensor([[-1.0, 0.0, 0.5]])  # hanging down: where a swing-up starts

    def drift(reset: bool, steps: int = 40) -> list[float]:
        cfg = ITPOConfig(horizon=5, particles=1, lr=1e-3, reset_every_step=reset)
        engine, obs, out = ITPOEngine(actor, critic, model, cfg), obs0, []
        for _ in range(steps):
            action = engine.step(obs, model.sample_noise(1, 1, 5))
            dist = sum((engine.params[k][0] - engine.base[k]).pow(2).sum() for k in engine.base)
            out.append(float(dist.sqrt()))
            obs = model.next(obs, action, torch.zeros(1, 0)).detach()
        return out

    carried, reset = drift(False), drift(True)
    assert carried[0] == pytest.approx(reset[0])  # the first step is the same step
    # the carried-over actor sums the earlier steps' ascents: several times one step's move
    assert np.median(carried) > 4 * np.median(reset) and max(carried) > 5 * max(reset)
