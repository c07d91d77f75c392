"""Exact world models: a task's own equations behind the :class:`WorldModel` interface.

ITPO (arXiv 2603.22430) differentiates the imagined return through a *learned* world model.
With the task's true dynamics and reward in its place (the setting of POLO, Lowrey et al. 2019:
H steps through a known model, a learned terminal value) the same engine measures what ITPO can
gain when the model is perfect: the control for every learned world model. Such a model ignores
the noise (its :meth:`noise_shape` has an empty last axis) and holds its constants as buffers.

Bringing one's own differentiable simulator: subclass :class:`WorldModel`, define
``noise_shape``, ``next`` and ``reward`` in torch on raw observations and actions, and name the
class to ITPO (``ITPOCallback(exact_model="my_pkg.sim.MySim")``; ``--pipeline.exact_model``).
It is built with no argument, or by a ``from_env(env)`` classmethod when it has one (``env``:
the dataset's gymnasium evaluation env, to read constants such as gravity from).
"""

from __future__ import annotations

import importlib
import json

import gymnasium as gym
import torch

from lit_itpo.errors import ConfigError
from lit_itpo.world_models.base import WorldModel


class PendulumWorldModel(WorldModel):
    """gymnasium's ``Pendulum-v1`` (classic control) in torch, float32, differentiable.

    Observation ``(cos th, sin th, th_dot)``, torque ``u`` clipped to ``[-max_torque,
    max_torque]``; one step of length ``dt``::

        th_dot' = clip(th_dot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, -max_speed, max_speed)
        th'     = th + th_dot' dt
        r       = -(normalize(th)^2 + 0.1 th_dot^2 + 0.001 u^2)

    with ``th = atan2(sin th, cos th)`` (already in ``[-pi, pi]``, so ``normalize`` is the
    identity). The clips have zero derivative where they bind, as the simulator has.
    """

    nfe_per_step = 0  # no network: the equations

    def __init__(
        self,
        g: float = 10.0,
        m: float = 1.0,
        length: float = 1.0,
        dt: float = 0.05,
        max_speed: float = 8.0,
        max_torque: float = 2.0,
    ):
        super().__init__(reward_model=None)
        consts = torch.tensor([g, m, length, dt, max_speed, max_torque], dtype=torch.float32)
        self.register_buffer("consts", consts)

    @classmethod
    def from_env(cls, env: gym.Env) -> PendulumWorldModel:
        """The constants of a made ``Pendulum-v1`` env (its ``g`` is a make() argument)."""
        u = env.unwrapped
        return cls(u.g, u.m, u.l, u.dt, u.max_speed, u.max_torque)

    def noise_shape(self, batch: int, particles: int, horizon: int) -> tuple[int, ...]:
        return (batch, particles, horizon, 0)

    def _split(self, obs: torch.Tensor, action: torch.Tensor):
        g, m, length, dt, max_speed, max_torque = self.consts.to(obs.dtype)
        th = torch.atan2(obs[..., 1], obs[..., 0])
        u = action[..., 0].clamp(-max_torque, max_torque)
        return th, obs[..., 2], u, (g, m, length, dt, max_speed)

    def next(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        th, thdot, u, (g, m, length, dt, max_speed) = self._split(obs, action)
        acc = 3 * g / (2 * length) * torch.sin(th) + 3.0 / (m * length**2) * u
        new_thdot = (thdot + acc * dt).clamp(-max_speed, max_speed)
        new_th = th + new_thdot * dt
        return torch.stack([torch.cos(new_th), torch.sin(new_th), new_thdot], dim=-1)

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        th, thdot, u, _ = self._split(obs, action)
        cost = th**2 + 0.1 * thdot**2 + 0.001 * u**2
        return -cost.unsqueeze(-1)


# gymnasium env ids (without version) -> their built-in exact model
EXACT_MODELS: dict[str, type[WorldModel]] = {"Pendulum": PendulumWorldModel}


def _env_id(env_spec: str | None) -> str:
    if not env_spec:
        return ""
    if env_spec.lstrip().startswith("{"):
        return json.loads(env_spec).get("id", "")
    return env_spec


def has_exact_model(env_spec: str | None) -> bool:
    """True where a built-in exact model exists for the dataset's env (``exact_model="auto"``)."""
    return _env_id(env_spec).split("-v")[0] in EXACT_MODELS


def make_exact_model(name: str, env_spec: str | None) -> WorldModel:
    """The exact world model ``name`` for the dataset's env.

    Args:
        name: ``"auto"`` (the built-in model of the env, e.g. Pendulum) or the dotted import
            path of a :class:`WorldModel` subclass (``"my_pkg.sim.MySim"``).
        env_spec: the dataset's evaluation env spec (JSON or id).

    Raises:
        ConfigError: no built-in model for the env, or the path does not name a WorldModel.
    """
    from lit_itpo.envs import make_gym_env

    env_id = _env_id(env_spec)
    if name == "auto":
        cls = EXACT_MODELS.get(env_id.split("-v")[0])
        if cls is None:
            raise ConfigError(
                f"exact_model=auto: no built-in exact model for env '{env_id}' (built in: "
                f"{sorted(EXACT_MODELS)}); pass the dotted path of your own WorldModel subclass "
                "(see lit_itpo.world_models.exact), or leave the exact arm off."
            )
    else:
        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr) if module else None
        except (ImportError, AttributeError, ValueError):
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, WorldModel)):
            raise ConfigError(
                f"exact_model={name!r} is not an importable WorldModel subclass; pass 'auto' or "
                "a dotted path such as my_pkg.sim.MySim (see lit_itpo.world_models.exact)."
            )
    if callable(getattr(cls, "from_env", None)) and env_spec:
        env = make_gym_env(env_spec)
        try:
            model = cls.from_env(env)
        finally:
            env.close()
    else:
        model = cls()
    if not any(True for _ in model.state_dict()):
        # WorldModel.sample_noise reads the device from the state dict
        model.register_buffer("_device_anchor", torch.zeros(0))
    return model.eval().requires_grad_(False)
