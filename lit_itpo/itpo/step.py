"""Inference Time Policy Optimization (arXiv 2603.22430, Sec. 3): the step and its engine.

At each real state s_t, for every episode n (own parameters psi_n):

1. draw M noise sequences, fixed across the E inner steps;
2. roll psi_n out H steps in the world model: a_j = pi_psi(s_j), s_{j+1} = f(s_j, a_j, eps_j);
3. J(psi) = mean_m [ sum_{j<H} gamma^j r(s_j, a_j) + gamma^H min(Q1, Q2)(s_H, pi_psi(s_H)) ];
4. E steps of plain gradient ascent psi <- psi + alpha * grad J;
5. act a_t = pi_psi(s_t); psi carries over within the episode and is reset at its start.

Episodes are batched with ``torch.func.vmap(torch.func.grad_and_value(J))`` over stacked
per-episode parameters, so N episodes cost one batched pass. Rewards are put in the critic's
units with the policy's reward transform (``r * reward_scale + reward_bias``).

Guard: an episode whose objective, gradient or action is non-finite keeps its previous
parameters and takes the base (pretrained) policy's action for that step; it is counted in
``fallbacks``. No non-finite action leaves the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from lit_itpo.errors import ConfigError
from lit_itpo.itpo.policy import PolicyParts
from lit_itpo.world_models.base import WorldModel


@dataclass
class ITPOConfig:
    """ITPO hyperparameters (paper: H = 5, gamma = 0.99; M, E, alpha: see METHOD.md).

    Attributes:
        horizon: H imagined steps.
        particles: M noise sequences per real step.
        inner_steps: E gradient-ascent steps per real step.
        lr: alpha, the plain gradient-ascent step size.
        gamma: imagined discount.
        reward_scale, reward_bias: the policy's training reward transform.
        Beyond the paper (off by default; measured in README):
        reset_every_step: reset psi to the pretrained one at every step.
        optimizer: ``"sgd"`` (the paper's plain gradient ascent) or ``"adam"`` (per-episode
            Adam state, betas 0.9/0.999, reset with psi at each episode start; ``lr`` is then
            Adam's step size).
        proximity: J - proximity * ||psi - psi_0||^2, a pull back to the pretrained parameters.
        uncertainty_penalty: J - uncertainty_penalty * std over particles of the imagined
            returns (risk-averse: prefers actions whose imagined outcome the model agrees on).
        termination: ``"none"`` (the paper: imagined episodes never end), ``"rule"`` (the env
            family's known termination rule on imagined states, given to the engine) or
            ``"model"`` (the world model's learned termination probability): reward and
            terminal value after a predicted fall are masked out.
        accept_z: > 0: an acceptance test per real step. The adapted parameters are re-scored
            against the previous ones on an independent set of M noise sequences (paired); the
            step is kept only if the mean improvement exceeds ``accept_z`` standard errors,
            otherwise the episode acts with its previous parameters. 0: off (the paper).
        precision: ``"32-true"`` (the paper) or ``"bf16-mixed"``: the imagined rollout and its
            gradient (and the logged objective) under bfloat16 autocast, for CPUs and GPUs with
            fast bfloat16 matmuls. Parameters, the ascent step, the acceptance test and the
            acting forward pass stay float32, so even alpha 5e-7 moves the action. Its move
            agrees with float32's by the tolerance of tests/test_itpo.py in most states, not
            all: on trained checkpoints (benchmarks/studies/itpo_precision.py) 95-98% of hopper's,
            65-88% of halfcheetah's, where J is nearly flat in psi; hence off by default.
    """

    horizon: int = 5
    particles: int = 64
    inner_steps: int = 1
    lr: float = 5e-5
    gamma: float = 0.99
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    reset_every_step: bool = False
    optimizer: str = "sgd"
    proximity: float = 0.0
    uncertainty_penalty: float = 0.0
    termination: str = "none"
    accept_z: float = 0.0
    precision: str = "32-true"

    def __post_init__(self) -> None:
        if self.precision not in ("32-true", "bf16-mixed"):
            raise ConfigError(
                f"ITPO precision={self.precision!r} must be '32-true' or 'bf16-mixed'."
            )
        if self.termination not in ("none", "rule", "model"):
            raise ConfigError(
                f"ITPO termination={self.termination!r} must be 'none', 'rule' or 'model'."
            )
        if not self.accept_z >= 0:
            raise ConfigError(f"ITPO accept_z={self.accept_z} must be >= 0 (0: no test).")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"ITPO optimizer={self.optimizer!r} must be 'sgd' or 'adam'.")
        if not (self.proximity >= 0 and self.uncertainty_penalty >= 0):
            raise ConfigError(
                f"ITPO proximity={self.proximity} and uncertainty_penalty="
                f"{self.uncertainty_penalty} must be >= 0."
            )
        if self.horizon < 1 or self.particles < 1 or self.inner_steps < 0:
            raise ConfigError(
                f"ITPO horizon={self.horizon} and particles={self.particles} must be >= 1 and "
                f"inner_steps={self.inner_steps} >= 0."
            )
        if not self.lr >= 0 or not 0 < self.gamma <= 1:
            raise ConfigError(f"ITPO lr={self.lr} must be >= 0 and gamma={self.gamma} in (0, 1].")


def episode_generators(
    env_seeds: list[int], noise_seed: int = 0, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One world-model noise stream per evaluation episode, seeded from (noise_seed, the
    episode's env seed), so an episode's ITPO actions do not depend on which other episodes
    share its batch or its DDP rank."""
    return [
        torch.Generator(device=device).manual_seed(noise_seed * 1_000_003 + s) for s in env_seeds
    ]


def episode_noise(
    world_model: WorldModel, generators: list[torch.Generator], particles: int, horizon: int
) -> torch.Tensor:
    """This step's noise ``noise_shape(N, M, H)``, row ``i`` drawn from ``generators[i]``."""
    return torch.cat([world_model.sample_noise(1, particles, horizon, g) for g in generators])


def imagined_returns(
    params: dict,
    actor: nn.Module,
    critic: nn.Module | None,
    world_model: WorldModel,
    obs: torch.Tensor,
    noise: torch.Tensor,
    cfg: ITPOConfig,
    terminated: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The imagined return of each particle ``[M]`` for one episode: ``obs [obs_dim]``,
    ``noise noise_shape(1, M, H)[1:]``. With ``cfg.termination`` (``"rule"``: the callable
    ``terminated(next_obs) -> bool``; ``"model"``: the world model's termination probability)
    reward and terminal value after a predicted end are masked out.

    ``critic`` maps ``(obs [..., o], action [..., a]) -> [n_q, ..., 1]`` (None: no terminal
    value).
    """

    def policy(s: torch.Tensor) -> torch.Tensor:
        return functional_call(actor, params, (s,))

    td = world_model.rollout(
        obs.unsqueeze(0), policy, cfg.horizon, cfg.particles, noise=noise.unsqueeze(0)
    )
    r = td["next", "reward"][0, ..., 0] * cfg.reward_scale + cfg.reward_bias  # [M, H]
    disc = cfg.gamma ** torch.arange(cfg.horizon, device=r.device, dtype=r.dtype)
    alive = None  # [M, H]: the imagined episode is still running after step j
    if cfg.termination == "rule":
        if terminated is None:
            raise ConfigError("ITPO termination='rule' needs the env's rule (none given).")
        alive = torch.cumprod((~terminated(td["next", "observation"][0])).to(r.dtype), -1)
    elif cfg.termination == "model":
        if "terminated" not in td["next"].keys():
            raise ConfigError(
                "ITPO termination='model' needs a world model trained with a termination model "
                "(model.init_args.termination: true)."
            )
        alive = torch.cumprod(1 - td["next", "terminated"][0, ..., 0].to(r.dtype), -1)
    if alive is None:
        ret = (r * disc).sum(-1)  # [M]
    else:  # a step's own reward counts; what follows a fall does not
        before = torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], -1)
        ret = (r * disc * before).sum(-1)
    if critic is not None:
        s_h = td["next", "observation"][0, :, -1]  # [M, o]
        q = critic(s_h, policy(s_h)).min(0).values[..., 0]  # [M]
        ret = ret + cfg.gamma**cfg.horizon * q * (1 if alive is None else alive[:, -1])
    return ret


def objective(returns: torch.Tensor, cfg: ITPOConfig) -> torch.Tensor:
    """J(psi) of one episode from its particles' :func:`imagined_returns` ``[M]``: their mean,
    minus ``cfg.uncertainty_penalty`` times their standard deviation."""
    if cfg.uncertainty_penalty > 0 and returns.shape[0] > 1:
        return returns.mean() - cfg.uncertainty_penalty * returns.std()
    return returns.mean()


class ITPOEngine:
    """Per-episode adapted policy parameters for N episodes stepped together.

    Args:
        actor: the pretrained deterministic policy (``obs -> action``), left untouched.
        critic: twin critic (``(obs, action) -> [n_q, ..., 1]``) or None.
        world_model: any :class:`~lit_itpo.world_models.base.WorldModel` (frozen).
        cfg: ITPO hyperparameters.
    """

    def __init__(
        self,
        actor: nn.Module,
        critic: nn.Module | None,
        world_model: WorldModel,
        cfg: ITPOConfig,
        terminated: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.actor, self.critic, self.world_model, self.cfg = actor, critic, world_model, cfg
        self.base = {k: v.detach() for k, v in actor.named_parameters()}
        self.buffers = {k: v for k, v in actor.named_buffers()}
        self.params: dict[str, torch.Tensor] | None = None
        self.opt: dict = {}
        self.fallbacks = 0
        self.last: dict[str, torch.Tensor] = {}
        self.step_sizes: torch.Tensor | None = None  # per-episode alpha; None: cfg.lr for all

        def returns(p, o, eps):
            return imagined_returns(
                {**p, **self.buffers}, actor, critic, world_model, o, eps, cfg, terminated
            )

        def j_of(p, o, eps):
            j = objective(returns(p, o, eps), cfg)
            if cfg.proximity > 0:
                j = j - cfg.proximity * sum((v - self.base[k]).pow(2).sum() for k, v in p.items())
            return j

        self._grad_value = vmap(grad_and_value(j_of))
        self._value = vmap(j_of)
        self._returns = vmap(returns)
        self._act = vmap(lambda p, o: functional_call(actor, {**p, **self.buffers}, (o,)))

    @classmethod
    def for_policy(
        cls,
        policy: PolicyParts,
        world_model: WorldModel,
        cfg: ITPOConfig,
        terminated: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        """An engine on a policy stage's :class:`PolicyParts`, imagined rewards in its critic's
        units (its reward transform replaces ``cfg``'s)."""
        cfg = replace(cfg, reward_scale=policy.reward_scale, reward_bias=policy.reward_bias)
        return cls(policy.actor, policy.critic, world_model, cfg, terminated)

    def set_step_sizes(self, step_sizes: torch.Tensor | list[float] | None) -> None:
        """One alpha per episode (``[N]``, e.g. a grid of step sizes on the same episodes in one
        batch), or None for ``cfg.lr`` everywhere. An episode at alpha 0 acts as the base
        policy exactly."""
        if step_sizes is not None:
            step_sizes = torch.as_tensor(step_sizes, dtype=torch.float32)
            if not bool(((step_sizes >= 0) & torch.isfinite(step_sizes)).all()):
                raise ConfigError(f"ITPO step sizes {step_sizes.tolist()} must be finite and >= 0.")
        self.step_sizes = step_sizes

    def _alphas(self, n: int, device: torch.device) -> torch.Tensor:
        if self.step_sizes is None:
            return torch.full((n,), float(self.cfg.lr), device=device)
        if self.step_sizes.shape != (n,):
            raise ConfigError(
                f"ITPO has {self.step_sizes.numel()} step sizes for {n} episodes; give one each."
            )
        return self.step_sizes.to(device)

    def _prepare(self, n: int) -> None:
        if self.params is None or next(iter(self.params.values())).shape[0] != n:
            self.reset(n)
        if self.cfg.reset_every_step:
            self.reset(n)

    def start_params(self, n: int) -> dict[str, torch.Tensor]:
        """The per-episode parameters the next :meth:`step` on ``n`` episodes starts from
        (carried over, or the pretrained ones after a reset)."""
        self._prepare(n)
        return {k: v.detach().clone() for k, v in self.params.items()}

    def reset(self, num_episodes: int, mask: torch.Tensor | None = None) -> None:
        """Reset psi to the pretrained parameters for all episodes, or those where ``mask``."""
        fresh = {
            k: v.unsqueeze(0).expand(num_episodes, *v.shape).clone() for k, v in self.base.items()
        }
        zeros = lambda: {k: torch.zeros_like(v) for k, v in fresh.items()}  # noqa: E731
        fresh_opt = {"m": zeros(), "v": zeros(), "t": torch.zeros(num_episodes)}
        if self.params is None or mask is None:
            self.params, self.opt = fresh, fresh_opt
            return
        for k in self.params:
            m = mask.view(-1, *([1] * (self.params[k].dim() - 1)))
            self.params[k] = torch.where(m, fresh[k], self.params[k])
            for s in ("m", "v"):
                self.opt[s][k] = torch.where(m, fresh_opt[s][k], self.opt[s][k])
        self.opt["t"] = torch.where(mask.cpu(), fresh_opt["t"], self.opt["t"])

    def step(
        self,
        obs: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        accept_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Adapt every episode's psi at ``obs [N, obs_dim]`` and return actions ``[N, act]``.

        ``noise`` (``world_model.noise_shape(N, M, H)``) is drawn from ``generator`` when None;
        it is held fixed across the inner steps. Sets ``self.last`` (objective before/after,
        fallback mask) for logging.
        """
        cfg, N = self.cfg, obs.shape[0]
        self._prepare(N)
        if noise is None:
            noise = self.world_model.sample_noise(N, cfg.particles, cfg.horizon, generator)
        with torch.no_grad():
            base_action = self.actor(obs)
        alpha = self._alphas(N, obs.device)
        moves = alpha > 0
        if not bool(moves.any()) or cfg.inner_steps == 0:
            # psi never moves: act exactly as the base policy (the vmapped actor rounds
            # differently at ~1e-7, which chaotic MuJoCo episodes amplify).
            self.last = {
                "fallback": torch.zeros(N, dtype=torch.bool, device=obs.device),
                "objective_before": torch.full((N,), float("nan"), device=obs.device),
            }
            return base_action
        params = {k: v.detach() for k, v in self.params.items()}
        start = params
        ok = torch.ones(N, dtype=torch.bool, device=obs.device)
        j_before = None
        for _ in range(cfg.inner_steps):
            with self._imagination(obs.device):
                grads, j = self._grad_value(params, obs, noise)
            if j_before is None:
                j_before = j.detach()
            finite = torch.isfinite(j)
            for g in grads.values():
                finite &= torch.isfinite(g).flatten(1).all(1)
            ok &= finite
            grads = {k: torch.nan_to_num(g) for k, g in grads.items()}
            steps = self._ascent(grads, ok, alpha)
            params = {k: torch.where(_bcast(ok, v), v + steps[k], v) for k, v in params.items()}
        accepted = torch.ones(N, dtype=torch.bool, device=obs.device)
        if cfg.accept_z > 0:
            if accept_noise is None:
                accept_noise = self.world_model.sample_noise(
                    N, cfg.particles, cfg.horizon, generator
                )
            accepted = self._accept(start, params, obs, accept_noise)
            params = {k: torch.where(_bcast(accepted, v), v, start[k]) for k, v in params.items()}
        with torch.no_grad():
            action = self._act(params, obs)
            ok &= torch.isfinite(action).all(-1)
            # alpha-0 episodes act exactly as the base (the vmapped actor rounds differently)
            action = torch.where((ok & moves).unsqueeze(-1), action, base_action)
        # An episode that failed keeps its previous parameters.
        self.params = {
            k: torch.where(_bcast(ok, v), v, self.params[k]).detach() for k, v in params.items()
        }
        self.fallbacks += int((~ok).sum())
        self.last = {"fallback": ~ok, "objective_before": j_before, "accepted": accepted}
        return action

    @torch.no_grad()
    def _accept(self, start: dict, adapted: dict, obs: torch.Tensor, noise: torch.Tensor):
        """``[N]``: the adapted parameters' imagined returns beat the previous ones' on the
        independent ``noise`` by more than ``accept_z`` standard errors of the paired mean."""
        diff = self._returns(adapted, obs, noise) - self._returns(start, obs, noise)  # [N, M]
        se = diff.std(-1) / diff.shape[-1] ** 0.5 if diff.shape[-1] > 1 else 0.0
        return torch.nan_to_num(diff.mean(-1), nan=-1.0) > self.cfg.accept_z * se

    @torch.no_grad()
    def _ascent(self, grads: dict, ok: torch.Tensor, alpha: torch.Tensor) -> dict:
        """Per-episode ascent steps: ``alpha * grad`` (sgd) or Adam's, whose state advances only
        for episodes in ``ok``."""
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return {k: _bcast(alpha, g).to(g.dtype) * g for k, g in grads.items()}
        b1, b2, eps = 0.9, 0.999, 1e-8
        t = self.opt["t"] + ok.cpu().float()
        self.opt["t"] = t
        out = {}
        for k, g in grads.items():
            keep = _bcast(ok, g)
            m = torch.where(keep, b1 * self.opt["m"][k] + (1 - b1) * g, self.opt["m"][k])
            v = torch.where(keep, b2 * self.opt["v"][k] + (1 - b2) * g * g, self.opt["v"][k])
            self.opt["m"][k], self.opt["v"][k] = m, v
            tt = t.clamp(min=1).to(g.device, g.dtype).view(-1, *[1] * (g.dim() - 1))
            m_hat, v_hat = m / (1 - b1**tt), v / (1 - b2**tt)
            out[k] = _bcast(alpha, g).to(g.dtype) * m_hat / (v_hat.sqrt() + eps)
        return out

    def _imagination(self, device: torch.device):
        """The autocast region of the imagined rollout (``cfg.precision``)."""
        bf16 = self.cfg.precision == "bf16-mixed"
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    @torch.no_grad()
    def objective(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """J ``[N]`` of the current per-episode parameters (for before/after logging)."""
        with self._imagination(obs.device):
            return self._value(self.params, obs, noise).float()

    def grad_and_value(
        self, obs: torch.Tensor, noise: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-episode gradients of J w.r.t. the current parameters (each ``[N, *param]``) and
        J ``[N]``: the work of one inner step without the update (for timing and probes)."""
        with self._imagination(obs.device):
            return self._grad_value(self.params, obs, noise)


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))
