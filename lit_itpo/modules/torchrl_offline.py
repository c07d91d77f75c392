"""TD3+BC and IQL on TorchRL's own ``TD3BCLoss`` / ``IQLLoss``, used as they are.

Fujimoto & Gu 2021 (TD3+BC); Kostrikov et al. 2021 (IQL). Both are baselines beside ReBRAC.
Observations are standardised by the module *before* the TensorDict reaches the loss: TorchRL
copies a network's buffers into its functional parameters when the loss is built, so normaliser
buffers inside the networks would stay at their initial values. ``act`` and ``q_values`` take
raw observations. TorchRL keeps target parameters inside the loss; ``SoftUpdate`` moves them.
Manual optimisation; ``global_step`` counts critic updates (extra optimisers step raw, uncounted).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import IQLLoss, SoftUpdate, TD3BCLoss

from lit_itpo.data.normalizer import Normalizer
from lit_itpo.errors import ConfigError, DatasetFormatError
from lit_itpo.modules.checkpoints import StageCheckpoint
from lit_itpo.nets import MLP

FORMAT_VERSION = 1


class _QNet(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden):
        super().__init__()
        self.net = MLP(obs_dim + action_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], -1))


class _TorchRLOffline(StageCheckpoint, pl.LightningModule):
    """Shared wiring: normaliser, optimisers, soft targets, logging, checkpoint metadata."""

    stage = "policy"
    format_version = FORMAT_VERSION

    def _init_common(self, obs_dim: int, action_dim: int, action_low, action_high) -> None:
        self.automatic_optimization = False
        self.obs_norm = Normalizer(obs_dim)
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.action_spec = Bounded(low, high, shape=(action_dim,))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and dm.stats:
            self.obs_norm.set(dm.stats["obs_mean"], dm.stats["obs_std"])

    def _normalised(self, batch: TensorDict) -> TensorDict:
        out = batch.clone(False)
        out["observation"] = self.obs_norm(batch["observation"])
        out["next", "observation"] = self.obs_norm(batch["next", "observation"])
        return out

    def _policy(self, obs: torch.Tensor) -> TensorDict:
        """Run the loss's actor with the loss's (trained) parameters: TorchRL keeps its own copy
        of them, so the module passed to the loss is not what training updates."""
        lm = self.loss_module
        td = TensorDict({"observation": self.obs_norm(obs)}, obs.shape[:-1])
        with lm.actor_network_params.to_module(lm.actor_network):
            return lm.actor_network(td)

    def _check(self, loss: torch.Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise DatasetFormatError(
                f"{type(self).__name__} {name} became {loss.item()} at step {self.global_step}; "
                "lower the learning rate or check the dataset's rewards."
            )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)


class TD3BCModule(_TorchRLOffline):
    """TD3+BC with TorchRL's ``TD3BCLoss`` (alpha 2.5, policy noise 0.2/0.5, actor every 2).

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        alpha: TD3+BC's alpha (lambda = alpha / mean|Q|).
        gamma, tau, policy_noise, noise_clip, policy_freq, actor_lr, critic_lr, hidden: as the
            TD3+BC paper (3e-4, 2 x 256).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        alpha: float = 2.5,
        gamma: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        hidden: list[int] = (256, 256),
    ):
        super().__init__()
        if alpha < 0 or policy_freq < 1 or not 0 < gamma <= 1:
            raise ConfigError(
                f"model.alpha={alpha} must be >= 0, policy_freq={policy_freq} >= 1 "
                f"and gamma={gamma} in (0, 1]."
            )
        self.save_hyperparameters()
        self._init_common(obs_dim, action_dim, action_low, action_high)
        from lit_itpo.nets import TanhActor

        actor = TensorDictModule(
            TanhActor(obs_dim, action_dim, action_low, action_high, list(hidden)),
            in_keys=["observation"],
            out_keys=["action"],
        )
        qvalue = TensorDictModule(
            _QNet(obs_dim, action_dim, list(hidden)),
            in_keys=["observation", "action"],
            out_keys=["state_action_value"],
        )
        self.loss_module = TD3BCLoss(
            actor,
            qvalue,
            action_spec=self.action_spec,
            alpha=alpha,
            policy_noise=policy_noise,
            noise_clip=noise_clip,
            loss_function="l2",
        )
        self.loss_module.make_value_estimator(gamma=gamma)
        self.updater = SoftUpdate(self.loss_module, tau=tau)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action for raw observations."""
        return self._policy(obs)["action"]

    def configure_optimizers(self):
        lm = self.loss_module
        return [
            torch.optim.Adam(lm.actor_network_params.values(True, True), self.hparams.actor_lr),
            torch.optim.Adam(lm.qvalue_network_params.values(True, True), self.hparams.critic_lr),
        ]

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        opt_actor, opt_critic = self.optimizers()
        td = self._normalised(batch)
        q_loss, q_info = self.loss_module.qvalue_loss(td)
        self._check(q_loss, "critic loss")
        opt_critic.zero_grad(set_to_none=True)
        self.manual_backward(q_loss)
        opt_critic.step()
        info = {
            "critic/loss": q_loss.detach(),
            "critic/q_mean": q_info["pred_value"].mean(),  # TD3BCLoss's detached Q(s, a)
            "critic/target_mean": q_info["target_value"].mean(),
        }
        if self.global_step % self.hparams.policy_freq == 0:
            a_loss, a_info = self.loss_module.actor_loss(td)
            opt_actor.zero_grad(set_to_none=True)
            self.manual_backward(a_loss)
            opt_actor.optimizer.step()
            self.updater.step()
            info |= {
                "actor/loss": a_loss.detach(),
                "actor/bc_mse": a_info["bc_loss"].detach(),
                "actor/lambda": torch.as_tensor(a_info["lmbd"]).detach(),
            }
        self.log_train({f"train/{k}": v for k, v in info.items()})

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        bc = (self.act(batch["observation"]) - batch["action"]).pow(2).sum(-1).mean()
        self.log("val/actor_bc_mse", bc, batch_size=batch.shape[0], sync_dist=True)


class IQLModule(_TorchRLOffline):
    """IQL with TorchRL's ``IQLLoss`` (expectile 0.7, temperature 3.0, Tanh-Gaussian actor;
    the deterministic action is the distribution's mode).

    Args:
        obs_dim, action_dim, action_low, action_high, dataset_id: linked from the DataModule.
        expectile, temperature: IQL's tau and beta (Gym-MuJoCo: 0.7, 3.0).
        gamma, tau, lr, hidden: IQL paper / CORL defaults (3e-4, 2 x 256).
        reward_scale: rewards x this for training (CORL: 1000 / (max return - min return)).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: list[float],
        action_high: list[float],
        dataset_id: str = "",
        expectile: float = 0.7,
        temperature: float = 3.0,
        gamma: float = 0.99,
        tau: float = 0.005,
        lr: float = 3e-4,
        hidden: list[int] = (256, 256),
        reward_scale: float = 1.0,
    ):
        super().__init__()
        if not 0 < expectile < 1 or temperature <= 0:
            raise ConfigError(
                f"model.expectile={expectile} must be in (0, 1) and temperature={temperature} > 0."
            )
        self.save_hyperparameters()
        self._init_common(obs_dim, action_dim, action_low, action_high)
        net = nn.Sequential(
            MLP(obs_dim, 2 * action_dim, list(hidden)),
            NormalParamExtractor(scale_mapping="biased_softplus_1.0"),
        )
        actor = ProbabilisticActor(
            TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=self.action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={
                "low": self.action_spec.space.low,
                "high": self.action_spec.space.high,
            },
            default_interaction_type=InteractionType.RANDOM,
            return_log_prob=False,
        )
        qvalue = TensorDictModule(
            _QNet(obs_dim, action_dim, list(hidden)),
            in_keys=["observation", "action"],
            out_keys=["state_action_value"],
        )
        value = ValueOperator(MLP(obs_dim, 1, list(hidden)), in_keys=["observation"])
        self.loss_module = IQLLoss(
            actor,
            qvalue,
            value,
            num_qvalue_nets=2,
            expectile=expectile,
            temperature=temperature,
            loss_function="l2",
        )
        self.loss_module.make_value_estimator(gamma=gamma)
        self.updater = SoftUpdate(self.loss_module, tau=tau)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The Tanh-Gaussian's mode for raw observations."""
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            return self._policy(obs)["action"]

    def configure_optimizers(self):
        lm, lr = self.loss_module, self.hparams.lr
        return [
            torch.optim.Adam(lm.actor_network_params.values(True, True), lr),
            torch.optim.Adam(lm.qvalue_network_params.values(True, True), lr),
            torch.optim.Adam(lm.value_network_params.values(True, True), lr),
        ]

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        opt_actor, opt_q, opt_v = self.optimizers()
        td = self._normalised(batch)
        td["next", "reward"] = td["next", "reward"] * self.hparams.reward_scale
        out = self.loss_module(td)
        total = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
        self._check(total, "loss")
        for opt in (opt_actor, opt_q, opt_v):
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_q.step()  # counted: global_step = updates
        opt_v.optimizer.step()
        opt_actor.optimizer.step()
        self.updater.step()
        self.log_train(
            {
                "train/actor/loss": out["loss_actor"].detach(),
                "train/critic/loss": out["loss_qvalue"].detach(),
                "train/value/loss": out["loss_value"].detach(),
            }
        )

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        bc = (self.act(batch["observation"]) - batch["action"]).pow(2).sum(-1).mean()
        self.log("val/actor_bc_mse", bc, batch_size=batch.shape[0], sync_dist=True)
