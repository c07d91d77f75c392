"""``EpisodeEvalCallback``: policy evaluation episodes at the end of each validation.

Episodes use fixed seeds (``seed + i``), so two policies are compared on the same episodes (env
seed ``s`` is gymnasium's ``env.reset(seed=s); env.reset()`` episode: see
:mod:`lit_itpo.evaluation`); each DDP rank runs episodes ``rank, rank + world, ...`` and the
results are gathered, so every episode is run exactly once. Works inside ``fit`` and under
``lit-itpo validate --ckpt_path``.

A SIGTERM (a scheduler's stop or preemption) ends the evaluation at the next env step: Lightning
only notes the signal and acts on it between batches, and one validation "batch" here can hold
many minutes of episodes (ITPO), which would outlast the scheduler's grace period.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_itpo.errors import ConfigError
from lit_itpo.evaluation import run_episodes


def summary_line(prefix: str, step: int, metrics: dict[str, torch.Tensor]) -> str:
    """One line a person reads in the log: the evaluation's episodes and scores at ``step``."""
    line = (
        f"{prefix} at step {step}: return {float(metrics[f'{prefix}/return_mean']):.1f} +- "
        f"{float(metrics[f'{prefix}/return_std']):.1f}, "
        f"episode length {float(metrics[f'{prefix}/length_mean']):.0f}"
    )
    if f"{prefix}/normalized_score" in metrics:
        line += f", normalised score {float(metrics[f'{prefix}/normalized_score']):.1f}"
    if f"{prefix}/success_rate" in metrics:
        line += f", success rate {float(metrics[f'{prefix}/success_rate']):.2f}"
    return line


class EpisodeEvalCallback(Callback):
    """Evaluate ``pl_module.act`` (raw obs -> raw action) on the dataset's environment.

    Args:
        num_episodes: episodes per evaluation (all stepped together).
        seed: episode ``i`` uses env seed ``seed + i`` (gymnasium's second reset after
            ``reset(seed=seed + i)``, as TorchRL seeds with a reset of its own).
        max_episode_steps: cut episodes there (default: the env's own limit).
        every_n_validations: evaluate at every n-th validation.
        prefix: metric namespace (``eval/``).
    """

    def __init__(
        self,
        num_episodes: int = 10,
        seed: int = 1_000_000,
        max_episode_steps: int | None = None,
        every_n_validations: int = 1,
        prefix: str = "eval",
    ):
        if num_episodes < 1 or every_n_validations < 1:
            raise ConfigError(
                f"EpisodeEvalCallback num_episodes={num_episodes} and every_n_validations="
                f"{every_n_validations} must be >= 1."
            )
        self.num_episodes, self.seed = num_episodes, seed
        self.max_episode_steps, self.every = max_episode_steps, every_n_validations
        self.prefix = prefix
        self._count = 0
        self.last: dict[str, torch.Tensor] = {}

    def episodes_for_rank(self, rank: int, world: int, total: int | None = None) -> list[int]:
        """The indices (of ``total`` episodes, default ``num_episodes``) this rank runs."""
        return list(range(rank, self.num_episodes if total is None else total, world))

    def evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        act,
        seeds: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run this rank's episodes with ``act`` and gather every rank's per-episode values
        ``[num_episodes]`` (or one per entry of ``seeds``: the env seed of each episode, default
        ``seed + i``); per-step traces (``[n_mine, T, ...]``) are this rank's only.

        Besides ``return`` and ``length``, ``seed`` (the env seed each episode ran with) and
        ``runs`` (how many ranks ran it) are gathered the same way, so coverage is checkable:
        ``runs`` is all ones and ``seed`` is ``seed + arange(num_episodes)``."""
        dm = trainer.datamodule
        seeds = [self.seed + i for i in range(self.num_episodes)] if seeds is None else seeds
        mine = self.episodes_for_rank(trainer.global_rank, trainer.world_size, len(seeds))

        def act_or_stop(obs: torch.Tensor) -> torch.Tensor:
            if trainer.received_sigterm:
                raise SIGTERMException
            return act(obs)

        res = run_episodes(
            act_or_stop,
            dm.env_spec,
            [seeds[i] for i in mine],
            obs_keys=dm.info.obs_keys,
            max_episode_steps=self.max_episode_steps,
            action_bounds=(dm.action_low, dm.action_high),
            device=pl_module.device,
        )
        res["seed"] = torch.tensor([float(seeds[i]) for i in mine], dtype=torch.float64)
        res["runs"] = torch.ones(len(mine), dtype=torch.float64)
        out = {}
        for key, val in res.items():
            if val.dim() != 1:  # per-step traces stay with their rank (figures, rank 0)
                out[key] = val
                continue
            full = torch.zeros(len(seeds), dtype=torch.float64, device=pl_module.device)
            full[mine] = val.double().to(pl_module.device)  # float64: seeds ~1e6 stay exact
            if trainer.world_size > 1:
                full = pl_module.all_gather(full).sum(0)  # each episode is set on one rank only
            out[key] = full.cpu()
        return out

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def state_dict(self) -> dict:
        """The validation count (``every_n_validations``) travels in checkpoints."""
        return {"count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self._count = int(state.get("count", 0))

    def due(self, trainer: pl.Trainer) -> bool:
        """Count this validation; True when it is one to evaluate at (never the sanity check)."""
        if trainer.sanity_checking:
            return False
        self._count += 1
        return (self._count - 1) % self.every == 0

    @staticmethod
    def normalized_scores(res: dict[str, torch.Tensor], dm) -> torch.Tensor:
        """Each episode's normalised score ``[N]`` (float64; needs the dataset's references)."""
        return torch.tensor(
            [dm.normalized_score(float(r)) for r in res["return"]], dtype=torch.float64
        )

    @staticmethod
    def scores(prefix: str, res: dict[str, torch.Tensor], dm) -> dict[str, torch.Tensor]:
        """Return, length and (where reference scores exist) normalised-score statistics."""
        out = {
            f"{prefix}/return_mean": res["return"].mean(),
            f"{prefix}/return_std": res["return"].std(unbiased=False),
            f"{prefix}/length_mean": res["length"].double().mean(),
        }
        if "success" in res:  # maze envs
            out[f"{prefix}/success_rate"] = res["success"].double().mean()
        if dm.ref_scores is not None:
            s = EpisodeEvalCallback.normalized_scores(res, dm).float()
            out[f"{prefix}/normalized_score"] = s.mean()
            out[f"{prefix}/normalized_score_std"] = s.std(unbiased=False)
        return out

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.due(trainer):
            return
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.no_grad():
            res = self.evaluate(trainer, pl_module, pl_module.act)
        self.last = res
        metrics = self.scores(self.prefix, res, trainer.datamodule)
        metrics[f"time/{self.prefix}_env_steps_per_s"] = torch.tensor(
            float(res["length"].sum()) / max(time.perf_counter() - t0, 1e-9)
        )
        # identical on every rank after the gather: no further sync needed
        pl_module.log_dict({k: v.float() for k, v in metrics.items()}, rank_zero_only=False)
        rank_zero_info(summary_line(self.prefix, trainer.global_step, metrics))
