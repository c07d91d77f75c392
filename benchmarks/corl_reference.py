"""CORL's single-file PyTorch TD3+BC and IQL updates (Tarasov et al., CORL: ``td3_bc.py``,
``iql.py``), rewritten as step functions over a device-resident transition TensorDict: no
TorchRL, no Lightning. They are the peer the policy modules are measured against, in the same
process and under the same load (``policy_speed.py``), and the plain reference that tells a
wiring problem in ``TD3BCModule`` from TD3+BC's own behaviour (``td3bc_reference.py``).

Sizes and settings are CORL's Gym-MuJoCo defaults: 2 x 256 ReLU MLPs, Adam 3e-4, batch 256,
gamma 0.99, tau 0.005; TD3+BC alpha 2.5, policy noise 0.2 clipped at 0.5, actor every 2nd
update; IQL expectile 0.7, temperature 3.0, advantage weights clipped at 100, a Gaussian actor
with a tanh mean and a state-independent log std, cosine actor learning-rate decay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn


def mlp(i: int, o: int, h: int = 256) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


@torch.no_grad()
def soft_update(pairs, tau: float) -> None:
    """CORL's soft target update, parameter by parameter: ``target <- target + tau (net -
    target)`` for each ``(net, target)``."""
    for net, tgt in pairs:
        for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
            tp.lerp_(p, tau)


def twin_critic_step(q1, q2, opt: torch.optim.Optimizer, sa, target) -> None:
    """TD3's critic update: both critics regress to the shared ``target``."""
    q_loss = F.mse_loss(q1(sa), target) + F.mse_loss(q2(sa), target)
    opt.zero_grad()
    q_loss.backward()
    opt.step()


def _batches(data: TensorDict, mean, std, batch: int, seed: int):
    """CORL's uniform sampling from a device-resident buffer; states standardised."""
    g = torch.Generator().manual_seed(seed)
    while True:
        b = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        yield (
            (b["observation"] - mean) / std,
            b["action"],
            b["next", "reward"],
            (b["next", "observation"] - mean) / std,
            b["next", "terminated"].float(),
        )


def corl_td3bc(
    data: TensorDict, mean, std, batch: int = 256, seed: int = 0
) -> tuple[nn.Module, Callable[[int], None]]:
    """``(actor, step)``: ``step(i)`` is update ``i`` (1-based: the actor moves on even ``i``);
    ``actor`` maps standardised states to actions in [-1, 1]."""
    o, a = data["observation"].shape[-1], data["action"].shape[-1]
    actor = nn.Sequential(mlp(o, a), nn.Tanh())
    q1, q2 = mlp(o + a, 1), mlp(o + a, 1)
    actor_t, q1_t, q2_t = (copy.deepcopy(m).requires_grad_(False) for m in (actor, q1, q2))
    opt_a = torch.optim.Adam(actor.parameters(), 3e-4)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], 3e-4)
    gamma, tau, alpha, noise, clip = 0.99, 0.005, 2.5, 0.2, 0.5
    sample = _batches(data, mean, std, batch, seed)

    def step(i: int) -> None:
        s, act, r, s2, term = next(sample)
        with torch.no_grad():
            eps = (torch.randn_like(act) * noise).clamp(-clip, clip)
            a2 = (actor_t(s2) + eps).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], -1)
            target = r + gamma * (1 - term) * torch.min(q1_t(sa2), q2_t(sa2))
        twin_critic_step(q1, q2, opt_q, torch.cat([s, act], -1), target)
        if i % 2 == 0:
            pi = actor(s)
            q = q1(torch.cat([s, pi], -1))
            lmbda = alpha / q.abs().mean().detach()
            a_loss = -lmbda * q.mean() + F.mse_loss(pi, act)
            opt_a.zero_grad()
            a_loss.backward()
            opt_a.step()
            soft_update(((actor, actor_t), (q1, q1_t), (q2, q2_t)), tau)

    return actor, step


def mlp_ln(i: int, o: int, h: int = 256, n: int = 3) -> nn.Sequential:
    """CORL ReBRAC's critic: ``n`` hidden ``Linear -> LayerNorm -> ReLU`` blocks."""
    layers: list[nn.Module] = []
    for d in [i] + [h] * (n - 1):
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(h, o))


def corl_rebrac(
    data: TensorDict, mean, std, batch: int = 1024, seed: int = 0
) -> tuple[nn.Module, Callable[[int], None]]:
    """``(actor, step)`` for CORL's ReBRAC update (its JAX ``rebrac.py`` in plain PyTorch, as a
    CORL-style single-file peer): 3 x 256 actor, two 3 x 256 LayerNorm critics, Adam 1e-3,
    actor BC 0.001 / critic BC 0.01 (halfcheetah-medium), target noise 0.2 clipped 0.5, actor
    and targets every 2nd update, Q term scaled by 1 / mean|Q|. Needs ``("next", "action")``."""
    o, a = data["observation"].shape[-1], data["action"].shape[-1]
    actor = nn.Sequential(
        nn.Linear(o, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, a), nn.Tanh(),
    )  # fmt: skip
    q1, q2 = mlp_ln(o + a, 1), mlp_ln(o + a, 1)
    actor_t, q1_t, q2_t = (copy.deepcopy(m).requires_grad_(False) for m in (actor, q1, q2))
    opt_a = torch.optim.Adam(actor.parameters(), 1e-3)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], 1e-3)
    gamma, tau, beta1, beta2, noise, clip = 0.99, 0.005, 0.001, 0.01, 0.2, 0.5
    g = torch.Generator().manual_seed(seed)

    def step(i: int) -> None:
        b = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        s, act, s2 = (
            (b["observation"] - mean) / std,
            b["action"],
            (b["next", "observation"] - mean) / std,
        )
        r, term, a2_data = b["next", "reward"], b["next", "terminated"].float(), b["next", "action"]
        with torch.no_grad():
            eps = (torch.randn_like(act) * noise).clamp(-clip, clip)
            a2 = (actor_t(s2) + eps).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], -1)
            bc2 = (a2 - a2_data).pow(2).sum(-1, keepdim=True)
            q_next = torch.min(q1_t(sa2), q2_t(sa2)) - beta2 * bc2
            target = r + gamma * (1 - term) * q_next
        twin_critic_step(q1, q2, opt_q, torch.cat([s, act], -1), target)
        if i % 2 == 0:
            pi = actor(s)
            spi = torch.cat([s, pi], -1)
            q = torch.min(q1(spi), q2(spi))
            lmbda = 1 / q.abs().mean().detach()
            a_loss = (beta1 * (pi - act).pow(2).sum(-1, keepdim=True) - lmbda * q).mean()
            opt_a.zero_grad()
            a_loss.backward()
            opt_a.step()
            soft_update(((actor, actor_t), (q1, q1_t), (q2, q2_t)), tau)

    return actor, step


def corl_iql(
    data: TensorDict, mean, std, batch: int = 256, seed: int = 0, max_steps: int = 1_000_000
) -> tuple[nn.Module, Callable[[int], None]]:
    """``(actor mean network, step)`` for CORL's IQL update (value, then Q, then actor)."""
    o, a = data["observation"].shape[-1], data["action"].shape[-1]
    q1, q2, v = mlp(o + a, 1), mlp(o + a, 1), mlp(o, 1)
    q1_t, q2_t = (copy.deepcopy(m).requires_grad_(False) for m in (q1, q2))
    actor = nn.Sequential(mlp(o, a), nn.Tanh())
    log_std = nn.Parameter(torch.zeros(a))
    opt_v = torch.optim.Adam(v.parameters(), 3e-4)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], 3e-4)
    opt_a = torch.optim.Adam([*actor.parameters(), log_std], 3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, max_steps)
    gamma, tau, expectile, beta = 0.99, 0.005, 0.7, 3.0
    sample = _batches(data, mean, std, batch, seed)

    def step(i: int) -> None:
        s, act, r, s2, term = next(sample)
        sa = torch.cat([s, act], -1)
        with torch.no_grad():
            target_q = torch.min(q1_t(sa), q2_t(sa))
            next_v = v(s2)
        adv = target_q - v(s)
        v_loss = (torch.abs(expectile - (adv < 0).float()) * adv.pow(2)).mean()
        opt_v.zero_grad()
        v_loss.backward()
        opt_v.step()
        targets = r + (1.0 - term) * gamma * next_v
        q_loss = (F.mse_loss(q1(sa), targets) + F.mse_loss(q2(sa), targets)) / 2
        opt_q.zero_grad()
        q_loss.backward()
        opt_q.step()
        soft_update(((q1, q1_t), (q2, q2_t)), tau)
        exp_adv = torch.exp(beta * adv.detach()).clamp(max=100.0)
        dist = torch.distributions.Normal(actor(s), log_std.clamp(-5.0, 2.0).exp())
        a_loss = (exp_adv * -dist.log_prob(act).sum(-1, keepdim=True)).mean()
        opt_a.zero_grad()
        a_loss.backward()
        opt_a.step()
        sched.step()

    return actor, step
