"""Does an ITPO step point uphill in the real world? J_true and the ascent rate (no Lightning).

ITPO climbs J_wm(psi), the imagined H-step objective (rewards through the world model, then the
critic's min(Q1, Q2) at s_H). What matters is J_true(psi): the same objective with the MuJoCo
simulator set to the real state in place of the world model. HalfCheetah, Hopper and Walker2d
are deterministic and their state is set from the observation (``qpos = (0, obs[:nq-1])``,
``qvel = obs[nq-1:]``; the x position does not enter the objective); so is Pendulum
(``th = atan2(sin th, cos th)``, ``th_dot``; its observations are read back from the float64
state, not the env's float32 ones). An imagined episode that terminates inside the horizon stops
there, with no terminal value.

The directional derivative of J_true along a step direction (central differences in float64,
so the simulator adds no noise) says whether that step raised the real objective: the
*ascent rate* of ITPO is the share of real states where it did (chance: 50%).
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from lit_itpo.envs import make_gym_env


class TrueObjective:
    """J_true(psi) at real states: the simulator set to each, H steps of pi_psi, float64.

    Args:
        env_spec: the dataset's env spec (JSON) or id; see :meth:`settable`.
        actor, critic: the policy's deterministic actor and twin critic (or None); float64
            copies are made, the originals are untouched.
        horizon, gamma, reward_scale, reward_bias: as ITPO's objective.
    """

    def __init__(
        self,
        env_spec: str,
        actor: nn.Module,
        critic: nn.Module | None,
        horizon: int,
        gamma: float,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ):
        self.env = make_gym_env(env_spec)
        self.env.reset(seed=0)
        self.sim = self.env.unwrapped
        self.pendulum = _is_pendulum(self.sim)
        # central-difference step in parameter space: 1e-3 on MuJoCo (contacts make J_true
        # rough below it); Pendulum's J_true is smooth and float64, and near the upright
        # equilibrium, where its gradient is small, 1e-3's curvature error flipped the sign of
        # exact-gradient steps (measured: 12% of them); 1e-5 matches float64 autograd to 1e-9
        self.h = 1e-5 if self.pendulum else 1e-3
        self.nq = None if self.pendulum else self.sim.model.nq
        self.actor = copy.deepcopy(actor).double().requires_grad_(False)
        self.critic = (
            None if critic is None else copy.deepcopy(critic).double().requires_grad_(False)
        )
        self.buffers = dict(self.actor.named_buffers())
        self.horizon, self.gamma = horizon, gamma
        self.reward_scale, self.reward_bias = reward_scale, reward_bias
        self.low, self.high = self.sim.action_space.low, self.sim.action_space.high

    @staticmethod
    def settable(env_spec: str | None) -> bool:
        """True for MuJoCo envs whose observation is ``(qpos[1:], qvel)`` (HalfCheetah, Hopper,
        Walker2d, Swimmer with default arguments) and for Pendulum: the state can be set from
        the observation."""
        if env_spec is None:
            return False
        try:
            env = make_gym_env(env_spec)
        except Exception:  # not makeable here: nothing to measure against
            return False
        try:
            sim = env.unwrapped
            if _is_pendulum(sim):
                return True
            model = getattr(sim, "model", None)
            if model is None or not hasattr(sim, "set_state"):
                return False
            return env.observation_space.shape == (model.nq - 1 + model.nv,)
        finally:
            env.close()

    def set_state(self, obs: np.ndarray) -> float:
        """Set the simulator from ``obs``; returns how far its own observation then is from it
        (0 unless a clipped velocity made the observation lossy: Hopper, Walker2d clip at 10)."""
        if self.pendulum:
            self.sim.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]], dtype=np.float64)
            return float(np.abs(self._obs() - obs).max())
        qpos = np.concatenate([[0.0], obs[: self.nq - 1]])
        # a fresh mjData first: the solver warm-starts from the last step's accelerations,
        # which would make J_true depend (in the last bits) on what was simulated before
        mujoco.mj_resetData(self.sim.model, self.sim.data)
        self.sim.set_state(qpos, obs[self.nq - 1 :])
        return float(np.abs(self.sim._get_obs() - obs).max())

    @torch.no_grad()
    def __call__(self, params: dict, obs: np.ndarray) -> float:
        """J_true of the actor with ``params`` (float64) from the real state ``obs``."""
        self.set_state(obs)
        s, total = obs, 0.0
        for j in range(self.horizon):
            a = self._act(params, s)[0].numpy()
            s, r, terminated = self._step(np.clip(a, self.low, self.high))
            total += self.gamma**j * (r * self.reward_scale + self.reward_bias)
            if terminated:
                return total
        if self.critic is None:
            return total
        o = torch.as_tensor(s, dtype=torch.float64)[None]
        q = self.critic(o, self._act(params, s)).min(0).values
        return total + self.gamma**self.horizon * float(q)

    def _obs(self) -> np.ndarray:
        """The simulator's observation in float64 (Pendulum's own is float32)."""
        if self.pendulum:
            th, thdot = self.sim.state
            return np.array([np.cos(th), np.sin(th), thdot], dtype=np.float64)
        return self.sim._get_obs()

    def _step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """One simulator step: (float64 observation, reward, terminated)."""
        _, r, terminated, _, _ = self.sim.step(action)
        return self._obs(), float(r), terminated

    def _act(self, params: dict, s: np.ndarray) -> torch.Tensor:
        o = torch.as_tensor(s, dtype=torch.float64)[None]
        return functional_call(self.actor, {**params, **self.buffers}, (o,))

    def slope(
        self, params: dict, direction: dict, obs: np.ndarray, h: float | None = None
    ) -> float:
        """The directional derivative of J_true at ``params`` along the unit ``direction``
        (same keys; central differences with step ``h`` in parameter space, default
        ``self.h``)."""
        h = self.h if h is None else h
        plus = {k: v + h * direction[k] for k, v in params.items()}
        minus = {k: v - h * direction[k] for k, v in params.items()}
        return (self(plus, obs) - self(minus, obs)) / (2 * h)

    def step_jacobian(
        self, obs: np.ndarray, action: np.ndarray, h: float = 1e-4
    ) -> tuple[np.ndarray, np.ndarray]:
        """The simulator's one-step derivatives with respect to ``x = (obs, action)`` at a real
        state and action: ``(d next_obs / d x [obs_dim, obs_dim + act_dim], d reward / d x
        [obs_dim + act_dim])`` in raw units, by central differences with step ``h`` (the
        action is first moved ``h`` inside its bounds)."""
        a = np.clip(np.asarray(action, dtype=np.float64), self.low + h, self.high - h)
        x0 = np.concatenate([np.asarray(obs, dtype=np.float64), a])
        n_obs = x0.shape[0] - a.shape[0]
        cols, rcols = [], []
        for i in range(x0.shape[0]):
            out = []
            for sign in (1.0, -1.0):
                x = x0.copy()
                x[i] += sign * h
                self.set_state(x[:n_obs])
                s, r, _ = self._step(x[n_obs:])
                out.append((s, r))  # raw reward units, as a world model's reward
            cols.append((out[0][0] - out[1][0]) / (2 * h))
            rcols.append((out[0][1] - out[1][1]) / (2 * h))
        return np.stack(cols, axis=1), np.asarray(rcols)

    def step_slopes(
        self,
        before: dict,
        after: dict,
        obs: torch.Tensor,
        h: float | None = None,
        tol: float = 1e-6,
    ) -> torch.Tensor:
        """For a batch of ITPO steps (per-episode parameters ``[N, ...]`` before and after, at
        real states ``obs [N, o]``): the true slope along each step's direction ``[N]``; NaN
        where the step is zero or the state cannot be set exactly from its observation."""
        out = torch.full((obs.shape[0],), float("nan"), dtype=torch.float64)
        for i in range(obs.shape[0]):
            d = {k: (after[k][i] - before[k][i]).detach().cpu().double() for k in before}
            norm = torch.sqrt(sum(v.pow(2).sum() for v in d.values()))
            s = obs[i].detach().cpu().double().numpy()
            if not norm > 0 or self.set_state(s) > tol:
                continue
            p = {k: v[i].detach().cpu().double() for k, v in before.items()}
            out[i] = self.slope(p, {k: v / norm for k, v in d.items()}, s, h)
        return out


def _is_pendulum(sim) -> bool:
    """gymnasium's classic-control Pendulum (state ``[th, th_dot]`` in ``sim.state``)."""
    return type(sim).__name__ == "PendulumEnv"
