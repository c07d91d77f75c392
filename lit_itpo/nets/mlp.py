"""MLPs and the deterministic tanh actor used by ReBRAC / TD3+BC / BC (and adapted by ITPO)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_itpo.nets.normalizer import Normalizer


class Float32Linear(nn.Linear):
    """A ``Linear`` that runs in float32 under autocast: the output layer of every MLP, so that
    values such as Q (hundreds, where bfloat16's spacing is 1-2) keep float32 resolution while
    the hidden matmuls run in bfloat16 (``--trainer.precision bf16-mixed``). Without autocast it
    is a plain ``Linear``; the state-dict keys are the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class MLP(nn.Sequential):
    """``Linear -> [LayerNorm] -> act`` blocks, then a final ``Linear`` (float32 under
    autocast, ``Float32Linear``).

    Args:
        in_dim: input features.
        out_dim: output features.
        hidden: widths of the hidden layers.
        layer_norm: LayerNorm after each hidden Linear (ReBRAC's critics).
        activation: hidden activation class.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        layer_norm: bool = False,
        activation: type[nn.Module] = nn.ReLU,
    ):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(activation())
            d = h
        layers.append(Float32Linear(d, out_dim))
        super().__init__(*layers)


class TanhActor(nn.Module):
    """Deterministic policy ``obs [..., obs_dim] -> action [..., act_dim]`` inside the bounds.

    Observations are standardised with the given normaliser buffers (raw units in, raw actions
    out), so ITPO and world models can call it on raw states.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        hidden: Sequence[int] = (256, 256, 256),
    ):
        super().__init__()
        self.net = MLP(obs_dim, action_dim, hidden)
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        self.obs_norm = Normalizer(obs_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = self.net(self.obs_norm(obs))
        return torch.tanh(z) * self.action_scale + self.action_bias


class GaussianActor(nn.Module):
    """``obs [..., obs_dim] -> (loc, scale) [..., act_dim]`` of a Tanh-Gaussian policy (IQL's),
    on standardised observations (raw units in). The scale mapping is TorchRL's
    ``NormalParamExtractor("biased_softplus_1.0")``, as TorchRL's IQL examples use."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        from torchrl.modules import NormalParamExtractor

        self.net = MLP(obs_dim, 2 * action_dim, hidden)
        self.params = NormalParamExtractor(scale_mapping="biased_softplus_1.0")
        self.obs_norm = Normalizer(obs_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.params(self.net(self.obs_norm(obs)))


class TanhGaussianMode(nn.Module):
    """The deterministic action of a :class:`GaussianActor`'s Tanh-Gaussian on ``[low,
    high]``: ``low + (high - low) (tanh(loc) + 1) / 2`` (TorchRL ``TanhNormal``'s
    ``deterministic_sample``), differentiable in the actor's parameters (ITPO adapts them)."""

    def __init__(self, actor: GaussianActor, action_low: torch.Tensor, action_high: torch.Tensor):
        super().__init__()
        self.actor = actor
        self.register_buffer("low", torch.as_tensor(action_low, dtype=torch.float32).clone())
        self.register_buffer("high", torch.as_tensor(action_high, dtype=torch.float32).clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        loc, _ = self.actor(obs)
        return self.low + (self.high - self.low) * (torch.tanh(loc) + 1) / 2


class ValueNet(nn.Module):
    """``V(s) [..., 1]`` on standardised observations (raw units in)."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden)
        self.obs_norm = Normalizer(obs_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.obs_norm(obs))
