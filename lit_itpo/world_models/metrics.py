"""World-model accuracy on real data, shared by the training modules and the benchmarks so that
diffusion and MeanFlow are scored by the same code on the same transitions and noise."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from lit_itpo.world_models.base import WorldModel


def step_noise(wm: WorldModel, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise for one imagined step of ``n`` samples: ``[n, *step_noise_shape]``."""
    shape = wm.noise_shape(n, 1, 1)[3:]
    device = next(iter(wm.state_dict().values())).device
    return torch.randn((n, *shape), generator=generator, device=device)


def state_scale(wm: WorldModel) -> torch.Tensor | None:
    """The dataset's per-dimension state std ``[obs_dim]`` a world model normalises with (its
    transition's ``obs_std`` buffer), or ``None`` for a model without one."""
    return getattr(getattr(wm, "transition", None), "obs_std", None)


@torch.no_grad()
def one_step_errors(
    wm: WorldModel, data: TensorDict, seed: int = 1000, chunk: int = 4096
) -> dict[str, torch.Tensor]:
    """Per-transition squared errors (mean over state dims) of the sampled next state and of
    the predicted reward.

    Returns:
        ``{"state": [N], "reward": [N]}`` in raw env units and, where the model has the
        dataset's state std (:func:`state_scale`), ``"state_normalised": [N]``: each state
        dimension's error divided by that dimension's std over the training data (raw units
        let large-range dimensions, e.g. joint velocities, dominate).
    """
    g = torch.Generator(device=data.device).manual_seed(seed)
    scale = state_scale(wm)
    state, state_n, reward = [], [], []
    for i in range(0, data.shape[0], chunk):
        b = data[i : i + chunk]
        obs, act = b["observation"], b["action"]
        diff = wm.next(obs, act, step_noise(wm, obs.shape[0], g)) - b["next", "observation"]
        state.append(diff.pow(2).mean(-1))
        if scale is not None:
            state_n.append((diff / scale).pow(2).mean(-1))
        reward.append((wm.reward(obs, act) - b["next", "reward"]).pow(2).reshape(-1))
    out = {"state": torch.cat(state), "reward": torch.cat(reward)}
    if state_n:
        out["state_normalised"] = torch.cat(state_n)
    return out


def open_loop_windows(
    episodes: list[TensorDict], horizon: int, max_windows: int
) -> TensorDict | None:
    """Non-overlapping ``[N, H]`` windows of real transitions that do not cross an episode end."""
    wins = []
    for ep in episodes:
        T = ep.shape[0]
        for start in range(0, T - horizon + 1, horizon):
            w = ep[start : start + horizon]
            if not w["next", "done"][:-1].any():
                wins.append(w)
    if not wins:
        return None
    return torch.stack(wins[:max_windows])


@torch.no_grad()
def open_loop_rmse(wm: WorldModel, windows: TensorDict, seed: int = 7) -> torch.Tensor:
    """RMSE ``[H]`` of states predicted open-loop with the real actions of ``windows [N, H]``."""
    g = torch.Generator(device=windows.device).manual_seed(seed)
    H = windows.shape[1]
    s = windows["observation"][:, 0]
    errs = []
    for j in range(H):
        s = wm.next(s, windows["action"][:, j], step_noise(wm, s.shape[0], g))
        errs.append((s - windows["next", "observation"][:, j]).pow(2).mean())
    return torch.stack(errs).sqrt()


@torch.no_grad()
def imagine_along(wm: WorldModel, episode: TensorDict, horizon: int, seed: int = 11):
    """Open-loop predictions ``[T, obs_dim]`` along ``episode``, re-anchored on the real state
    every ``horizon`` steps (the trajectory figure)."""
    g = torch.Generator(device=episode.device).manual_seed(seed)
    T = episode.shape[0]
    preds = []
    for start in range(0, T, horizon):
        s = episode["observation"][start : start + 1]
        for j in range(start, min(start + horizon, T)):
            s = wm.next(s, episode["action"][j : j + 1], step_noise(wm, 1, g))
            preds.append(s)
    return torch.cat(preds)
