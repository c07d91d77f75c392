"""What the TD3-family stages share (ReBRAC, TD3+BC): a deterministic tanh actor, fused twin
critics, frozen target copies, the delayed actor update and the optimisers.

An update is the critic's TD step, then every ``policy_freq``-th batch the actor's step and the
soft target update. The hot path is plain tensors end to end: losses from
:mod:`lit_itpo.policies` on plain modules, fused Adam (one kernel per optimiser step on CPU and
CUDA), and one ``torch._foreach_lerp_`` for all target parameters.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from tensordict import TensorDict

from lit_itpo.errors import DivergenceError
from lit_itpo.itpo import PolicyParts
from lit_itpo.modules.checkpoints import StageCheckpoint, set_obs_normalisers
from lit_itpo.modules.optim import adam
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.policies import rebrac_critic_loss


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with ``requires_grad`` off: a target network."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


class ActorCriticModule(StageCheckpoint, pl.LightningModule):
    """Actor, twin critics and their targets; subclasses define :meth:`actor_loss`
    (``batch -> (loss, info)``) and call :meth:`build` in ``__init__`` after
    ``save_hyperparameters()`` (hparams ``gamma``, ``tau``, ``policy_noise``, ``noise_clip``,
    ``policy_freq``, ``actor_lr``, ``critic_lr``; optional ``beta_critic``, ``reward_scale``,
    ``reward_bias``, ``compile``)."""

    stage = "policy"
    compiled_losses = ("critic_loss", "actor_loss")

    def build(
        self,
        obs_dim: int,
        action_dim: int,
        action_low,
        action_high,
        hidden,
        critic_layer_norm: bool,
    ) -> None:
        self.automatic_optimization = False
        self.actor = TanhActor(obs_dim, action_dim, action_low, action_high, list(hidden))
        self.critic = TwinCritic(obs_dim, action_dim, list(hidden), critic_layer_norm)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))

    def setup(self, stage: str) -> None:
        nets = (self.actor, self.critic, self.actor_target, self.critic_target)
        set_obs_normalisers(self, stage, nets)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action for raw observations (evaluation)."""
        return self.actor(obs)

    def policy_parts(self) -> PolicyParts:
        """The deterministic actor, the twin critic and the training reward transform."""
        hp = self.hparams
        return PolicyParts(
            self.actor, self.critic, hp.get("reward_scale", 1.0), hp.get("reward_bias", 0.0)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def configure_optimizers(self):
        return [
            adam(self.actor.parameters(), self.hparams.actor_lr),
            adam(self.critic.parameters(), self.hparams.critic_lr),
        ]

    @torch.no_grad()
    def update_targets(self) -> None:
        src = [*self.actor.parameters(), *self.critic.parameters()]
        dst = [*self.actor_target.parameters(), *self.critic_target.parameters()]
        torch._foreach_lerp_(dst, src, self.hparams.tau)

    def critic_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        """TD3's critic loss with target policy smoothing; with ``beta_critic`` > 0, ReBRAC's
        next-action penalty (TD3's is ReBRAC's at ``beta_critic = 0``)."""
        hp = self.hparams
        return rebrac_critic_loss(
            self.critic,
            self.critic_target,
            self.actor_target,
            batch,
            gamma=hp.gamma,
            beta_critic=hp.get("beta_critic", 0.0),
            policy_noise=hp.policy_noise,
            noise_clip=hp.noise_clip,
            action_low=self.action_low,
            action_high=self.action_high,
            reward_scale=hp.get("reward_scale", 1.0),
            reward_bias=hp.get("reward_bias", 0.0),
        )

    def actor_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        opt_actor, opt_critic = self.optimizers()
        c_loss, info = self.critic_loss(batch)
        if not torch.isfinite(c_loss):
            raise DivergenceError(
                f"{type(self).__name__} critic loss became {c_loss.item()} at step "
                f"{self.global_step}; lower model.critic_lr or check the dataset's rewards."
            )
        opt_critic.zero_grad(set_to_none=True)
        self.manual_backward(c_loss)
        opt_critic.step()
        # global_step counts critic updates (= batches): the actor steps its raw optimiser,
        # which Lightning does not count, so ``max_steps`` means training batches as in CORL.
        if self.global_step % self.hparams.policy_freq == 0:
            self.critic.requires_grad_(False)
            a_loss, a_info = self.actor_loss(batch)
            self.critic.requires_grad_(True)
            opt_actor.zero_grad(set_to_none=True)
            self.manual_backward(a_loss)
            opt_actor.optimizer.step()
            self.update_targets()
            info |= a_info
        self.log_train({f"train/{k}": v for k, v in info.items()})

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        q = self.critic(batch["observation"], batch["action"]).min(0).values
        bc = (self.actor(batch["observation"]) - batch["action"]).pow(2).sum(-1).mean()
        n = batch.shape[0]
        self.log_dict(
            {"val/q_data_mean": q.mean(), "val/actor_bc_mse": bc}, batch_size=n, sync_dist=True
        )
