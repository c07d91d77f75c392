"""``MinariDataModule``: any Minari dataset id -> device-resident transitions sampled by steps.

Offline RL has no epochs: ``train_dataloader`` is an endless uniform sampler over the training
transitions (a fixed number of steps is reported as the epoch length only for progress bars);
``max_steps`` ends training. The split is by episode, so validation never sees a training episode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDict

from lit_itpo.data.minari_io import (
    DatasetInfo,
    dataset_info,
    datasets_root,
    load_transitions,
    open_dataset,
)
from lit_itpo.data.scores import normalized_score
from lit_itpo.errors import ConfigError

log = logging.getLogger(__name__)


def split_episodes(
    episode_ids: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint train/val episode ids: a seeded permutation, at least one episode each side
    when there are two or more (all to train when there is one)."""
    ids = torch.unique(episode_ids)
    if val_fraction <= 0 or len(ids) < 2:
        return ids, ids[:0]
    g = torch.Generator().manual_seed(seed)
    perm = ids[torch.randperm(len(ids), generator=g)]
    n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class TransitionSampler:
    """Endless uniform minibatches ``TensorDict [batch_size]`` drawn on the data's device.

    Resumable: Lightning saves :meth:`state_dict` in every checkpoint and hands it back to
    :meth:`load_state_dict` before iterating, so a resumed run draws the batches the
    uninterrupted run would have drawn (Lightning prefetches a batch ahead, so the state kept is
    the one before the first batch training has not consumed yet).

    Args:
        data: transitions ``[N]`` (already on the training device).
        batch_size: transitions per batch.
        epoch_steps: batches per "epoch" (only for ``len`` and progress bars).
        seed: sampler seed; each DDP rank adds its rank so ranks draw different batches.
        consumed: how many batches training has taken so far (the trainer's count); None
            outside a Trainer (then :meth:`state_dict` assumes every drawn batch was used).
    """

    def __init__(
        self,
        data: TensorDict,
        batch_size: int,
        epoch_steps: int,
        seed: int,
        consumed: Callable[[], int] | None = None,
    ):
        self.data = data
        self.batch_size = batch_size
        self.epoch_steps = epoch_steps
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.consumed = consumed
        self.drawn = 0  # batches drawn over all epochs
        self._states: dict[int, torch.Tensor] = {}  # generator state before draw i (a few)

    def __len__(self) -> int:
        return self.epoch_steps

    def __iter__(self) -> Iterator[TensorDict]:
        n = self.data.shape[0]
        # a resumed epoch yields only its remaining batches, so the next epoch starts where
        # the uninterrupted run's did
        for _ in range(self.epoch_steps - self.drawn % self.epoch_steps):
            self._states[self.drawn] = self.generator.get_state()
            self._states.pop(self.drawn - 8, None)
            self.drawn += 1
            idx = torch.randint(
                n, (self.batch_size,), device=self.data.device, generator=self.generator
            )
            yield self.data[idx]

    def state_dict(self) -> dict:
        used = self.drawn if self.consumed is None else self.consumed()
        state = self.generator.get_state() if used == self.drawn else self._states.get(used)
        if state is None:
            raise RuntimeError(f"TransitionSampler has no state for batch {used}.")
        return {"drawn": used, "generator": state}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = int(state["drawn"])
        self.generator.set_state(state["generator"])
        self._states.clear()


class SequentialBatches:
    """The whole of ``data`` once, in order, in batches (one loader: Lightning reads a list as
    several)."""

    def __init__(self, data: TensorDict, batch_size: int):
        self.data = data
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(self.data.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[TensorDict]:
        yield from self.data.split(self.batch_size)


class MinariDataModule(pl.LightningDataModule):
    """Loads a Minari dataset from the local cache as TorchRL-keyed transitions.

    Args:
        dataset_id: Minari id, e.g. ``mujoco/halfcheetah/medium-v0`` or
            ``lit_itpo/halfcheetah/medium-v0`` (made by ``lit-itpo collect``).
        data_dir: Minari root to search; ``"embedded"`` for the dataset shipped in the package;
            ``None`` for ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``.
        download: fetch from the Minari server when absent (off: this project works offline).
        batch_size: transitions per training batch.
        val_fraction: share of episodes held out for validation.
        split_seed: seed of the episode split.
        epoch_steps: training batches per nominal epoch (offline RL is step-based).
        val_batch_size: transitions per validation batch (validation walks the whole split).
        obs_keys: for dict observations, the keys to concatenate (default observation,
            desired_goal).
        sample_on_device: keep the training transitions on the training device and sample there.
        seed: seed of the training sampler (each DDP rank offsets it by its rank).
    """

    def __init__(
        self,
        dataset_id: str,
        data_dir: str | None = None,
        download: bool = False,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        epoch_steps: int = 1000,
        val_batch_size: int = 4096,
        obs_keys: list[str] | None = None,
        sample_on_device: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or val_batch_size < 1 or epoch_steps < 1:
            raise ConfigError(
                f"batch_size={batch_size}, val_batch_size={val_batch_size} and "
                f"epoch_steps={epoch_steps} must all be positive integers."
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1); 0.1 is typical.")
        if not str(dataset_id).strip():  # an unset shell variable
            raise ConfigError(
                f"--data.dataset_id={dataset_id!r} is empty; pass a Minari id "
                "<namespace>/<env>/<name>-vN, e.g. lit_itpo/pendulum/medium-v0."
            )
        self.save_hyperparameters()
        self.dataset_id = dataset_id
        self.data_dir = data_dir
        # Metadata only (cheap) so dims/bounds exist at instantiation for LightningCLI links.
        self._dataset = open_dataset(dataset_id, data_dir, download)
        self.info: DatasetInfo = dataset_info(self._dataset, dataset_id, obs_keys)
        self.transitions: TensorDict | None = None
        self.train_data: TensorDict | None = None
        self.val_data: TensorDict | None = None
        self.stats: dict[str, torch.Tensor] = {}

    # --- linkable attributes (primitives) -------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return self.info.obs_dim

    @property
    def action_dim(self) -> int:
        return self.info.action_dim

    @property
    def action_low(self) -> list[float]:
        return self.info.action_low

    @property
    def action_high(self) -> list[float]:
        return self.info.action_high

    @property
    def env_spec(self) -> str | None:
        return self.info.env_spec

    @property
    def env_id(self) -> str | None:
        return self.info.env_id

    @property
    def ref_scores(self) -> tuple[float, float] | None:
        return self.info.ref_scores

    @property
    def root(self) -> Path:
        return datasets_root(self.data_dir)

    def normalized_score(self, ret: float) -> float | None:
        """D4RL-normalised score of a raw return (``None`` without reference scores)."""
        return normalized_score(ret, self.ref_scores)

    def load(self) -> None:
        """Read and check every transition (:func:`~lit_itpo.data.minari_io.load_transitions`:
        shapes, finite values, actions inside the declared bounds), split the episodes and take
        the normalisers' statistics; once (later calls do nothing). The CLI calls it before a
        run makes its directory, so a faulty dataset is refused with nothing left behind;
        :meth:`setup` calls it otherwise."""
        if self.transitions is None:
            self.transitions = load_transitions(self._dataset, self.info)
            train_ids, val_ids = split_episodes(
                self.transitions["episode"], self.hparams.val_fraction, self.hparams.split_seed
            )
            in_train = torch.isin(self.transitions["episode"], train_ids)
            self.train_data = self.transitions[in_train]
            self.val_data = self.transitions[~in_train]
            self.stats = transition_stats(self.train_data)
            log.info(
                "%s: %d train / %d val transitions (%d / %d episodes)",
                self.dataset_id,
                self.train_data.shape[0],
                self.val_data.shape[0],
                len(train_ids),
                len(val_ids),
            )

    # --- Lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.load()
        device = self._device()
        if self.hparams.sample_on_device and self.train_data.device != device:
            self.train_data = self.train_data.to(device)

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def train_dataloader(self) -> TransitionSampler:
        rank = self.trainer.global_rank if getattr(self, "trainer", None) is not None else 0
        return TransitionSampler(
            self.train_data,
            self.hparams.batch_size,
            self.hparams.epoch_steps,
            seed=self.hparams.seed + 7919 * rank,
            consumed=self._batches_consumed,
        )

    def _batches_consumed(self) -> int:
        """Training batches the trainer has taken (restored with the loops on a resume)."""
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def val_dataloader(self) -> SequentialBatches:
        data = self.val_data if self.val_data.shape[0] > 0 else self.train_data
        return SequentialBatches(data, self.hparams.val_batch_size)

    def test_dataloader(self) -> SequentialBatches:
        return self.val_dataloader()

    def val_episodes(self) -> list[TensorDict]:
        """Held-out transitions grouped by episode, each ``[T_i]`` in step order."""
        data = self.val_data if self.val_data.shape[0] > 0 else self.train_data
        ids = torch.unique(data["episode"])
        return [data[data["episode"] == i] for i in ids]


def transition_stats(data: TensorDict) -> dict[str, torch.Tensor]:
    """Mean/std (float32) of observations, state changes and rewards, for model normalisers;
    a (near-)constant feature gets std 1 so it passes through unscaled."""

    def ms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.double()
        std = x.std(0, unbiased=False)
        return x.mean(0).float(), torch.where(std < 1e-6, torch.ones_like(std), std).float()

    obs_mean, obs_std = ms(data["observation"])
    delta_mean, delta_std = ms(data["next", "observation"] - data["observation"])
    reward_mean, reward_std = ms(data["next", "reward"])
    return {
        "obs_mean": obs_mean,
        "obs_std": obs_std,
        "delta_mean": delta_mean,
        "delta_std": delta_std,
        "reward_mean": reward_mean,
        "reward_std": reward_std,
    }
