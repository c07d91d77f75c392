"""Minari datasets -> one TensorDict of transitions with TorchRL keys.

Not through torchrl's ``MinariExperienceReplay``: with ``load_from_local_minari=True`` it returns a
buffer of zeros in torchrl 0.11-0.14.1 (docs/STACK.md). Converting ``iterate_episodes()``
ourselves is also fast (10k steps in ~0.04 s).

Layout of one Minari episode: ``observations [T+1]``, ``actions/rewards/terminations/truncations
[T]``. Transition ``t`` is ``(obs[t], act[t], rew[t], obs[t+1])``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from lit_itpo.data.scores import reference_scores
from lit_itpo.errors import DatasetFormatError, DatasetNotFoundError, EnvSpecError
from lit_itpo.utils import file_sha256

EMBEDDED = "embedded"
EMBEDDED_ROOT = Path(__file__).resolve().parent.parent / "assets" / "minari"
DEFAULT_GOAL_KEYS = ("observation", "desired_goal")


def datasets_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where Minari datasets live: ``data_dir``; ``"embedded"`` for the ones shipped with the
    package; else ``$MINARI_DATASETS_PATH``; else ``~/.minari/datasets`` (Minari's default)."""
    if data_dir is not None and str(data_dir) == EMBEDDED:
        return EMBEDDED_ROOT
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()  # Minari mis-joins relative roots
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser().resolve() if env else Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def minari_root(path: str | os.PathLike):
    """Point Minari's own functions (create, download, namespaces) at ``path`` for a block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def open_dataset(
    dataset_id: str, data_dir: str | os.PathLike | None = None, download: bool = False
):
    """Open a Minari dataset from the local cache, downloading only when asked.

    Raises:
        DatasetNotFoundError: the id is not under the root and ``download`` is off.
        DatasetFormatError: the files are there but unreadable.
    """
    import minari

    if not str(dataset_id).strip():
        raise DatasetNotFoundError(
            f"the Minari dataset id {dataset_id!r} is empty; pass an id "
            "<namespace>/<env>/<name>-vN, e.g. lit_itpo/pendulum/medium-v0."
        )
    root = datasets_root(data_dir)
    path = root / dataset_id
    if data_dir is not None and not root.is_dir() and not download:
        raise DatasetNotFoundError(
            f"Minari root data_dir={data_dir} does not exist ({root}); point `--data.data_dir` at "
            "the folder that holds your Minari datasets (the one with <namespace>/<name>-vN "
            "inside), or leave it unset for $MINARI_DATASETS_PATH or ~/.minari/datasets."
        )
    if not (path / "data").exists():
        if not download:
            raise DatasetNotFoundError(
                f"Minari dataset '{dataset_id}' is not in the local cache (searched {path}); "
                f"get it with `minari download {dataset_id}` (network needed), make a local one "
                "with `lit-itpo collect --config conf/collect/<env>.yaml`, or point `data_dir` at "
                "the folder that holds it."
            )
        with minari_root(root):
            minari.download_dataset(dataset_id)
    try:
        return minari.MinariDataset(path / "data")
    except Exception as exc:  # h5py/json raise many types for a damaged file
        raise DatasetFormatError(
            f"Minari dataset '{dataset_id}' at {path} cannot be read "
            f"({type(exc).__name__}: {exc}); "
            "delete it and regenerate or re-download it."
        ) from exc


def dataset_digest(dataset_id: str, data_dir: str | os.PathLike | None = None) -> dict:
    """A dataset's identity by content: ``{"path": <its data folder>, "sha256": <digest>}``,
    the digest over every file of ``data/`` (``metadata.json``, ``main_data.hdf5``) by name
    and content, so a dataset rewritten in place (``collect --collect.overwrite true``) gets
    another one while a copy elsewhere keeps it; ``sha256`` is None when the folder is absent."""
    folder = datasets_root(data_dir) / dataset_id / "data"
    if not folder.is_dir():
        return {"path": str(folder), "sha256": None}
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder).as_posix()}\0{file_sha256(f)}\n".encode())
    return {"path": str(folder), "sha256": h.hexdigest()}


@dataclass
class DatasetInfo:
    """What later stages need to know about a dataset (all primitives, for hparams/links)."""

    dataset_id: str
    env_id: str | None
    env_spec: str | None  # gymnasium EnvSpec JSON of the evaluation env (eval_env_spec first)
    obs_dim: int
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    obs_keys: list[str] | None  # dict observations: the keys concatenated, in order
    ref_min_score: float | None
    ref_max_score: float | None
    total_steps: int
    total_episodes: int

    @property
    def ref_scores(self) -> tuple[float, float] | None:
        return reference_scores(self.env_id, self.ref_min_score, self.ref_max_score)


def _space_dim(space: gym.Space, obs_keys: list[str] | None) -> int:
    if isinstance(space, gym.spaces.Dict):
        return sum(int(np.prod(space[k].shape)) for k in obs_keys)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise EnvSpecError(
        f"Observation space {space} is not a Box or Dict of Boxes; lit_itpo needs continuous "
        "vector observations."
    )


def dataset_info(dataset, dataset_id: str, obs_keys: list[str] | None = None) -> DatasetInfo:
    """Read spaces, env spec and reference scores from a dataset's metadata."""
    act_space = dataset.action_space
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise EnvSpecError(
            f"Dataset '{dataset_id}' has action space {act_space}; lit_itpo needs a 1-D Box "
            "(continuous control)."
        )
    bad = ~(np.isfinite(act_space.low) & np.isfinite(act_space.high))
    if bad.any():
        raise EnvSpecError(
            f"Dataset '{dataset_id}' has an action space with infinite bounds (low="
            f"{act_space.low.tolist()}, high={act_space.high.tolist()}, dims "
            f"{np.flatnonzero(bad).tolist()}); lit_itpo's tanh policies need finite bounds: "
            "write the dataset with the env's real action limits (e.g. a Box(-1, 1))."
        )
    obs_space = dataset.observation_space
    if isinstance(obs_space, gym.spaces.Dict):
        keys = (
            list(obs_keys) if obs_keys else [k for k in DEFAULT_GOAL_KEYS if k in obs_space.spaces]
        )
        missing = [k for k in keys if k not in obs_space.spaces]
        if missing or not keys:
            raise DatasetFormatError(
                f"Dataset '{dataset_id}' observation keys {list(obs_space.spaces)} lack "
                f"{missing or keys}; "
                "set `obs_keys` to the keys to concatenate."
            )
    else:
        keys = None
    meta = dataset.storage.metadata
    spec = dataset.spec
    env_spec = spec.env_spec
    # Evaluation uses the dataset's eval env when it has one (maze data: goals do not reset).
    env_spec_json = meta.get("eval_env_spec") or (env_spec.to_json() if env_spec else None)
    env_id = env_spec.id if env_spec is not None else None
    return DatasetInfo(
        dataset_id=dataset_id,
        env_id=env_id,
        env_spec=env_spec_json,
        obs_dim=_space_dim(obs_space, keys),
        action_dim=int(act_space.shape[0]),
        action_low=[float(x) for x in act_space.low],
        action_high=[float(x) for x in act_space.high],
        obs_keys=keys,
        ref_min_score=meta.get("ref_min_score"),
        ref_max_score=meta.get("ref_max_score"),
        total_steps=int(spec.total_steps),
        total_episodes=int(spec.total_episodes),
    )


def flatten_obs(obs: Any, obs_keys: list[str] | None) -> np.ndarray:
    """Dict observations -> ``[T, sum of key dims]`` concatenated in ``obs_keys`` order."""
    if obs_keys is None:
        arr = np.asarray(obs)
        return arr.reshape(arr.shape[0], -1)
    return np.concatenate([np.asarray(obs[k]).reshape(len(obs[k]), -1) for k in obs_keys], axis=-1)


def _check_finite(name: str, arr: np.ndarray, dataset_id: str, episode_id: int) -> None:
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DatasetFormatError(
            f"Dataset '{dataset_id}' episode {episode_id} has {bad} non-finite {name} values; "
            "clean or regenerate the dataset (offline RL cannot train on NaN/inf)."
        )


# How far past its declared bounds an action may lie and still count as inside: float rounding
# (D4RL's data has actions a few float32 ulps past [-1, 1]), not another scale.
ACTION_BOUND_TOLERANCE = 1e-4


def _interval(low: list[float], high: list[float]) -> str:
    """``Box [-1, 1]`` where every dimension has the same bounds, else both lists."""
    if len(set(low)) == 1 and len(set(high)) == 1:
        return f"Box [{low[0]:g}, {high[0]:g}]"
    fmt = lambda xs: "[" + ", ".join(f"{x:g}" for x in xs) + "]"  # noqa: E731
    return f"Box low={fmt(low)}, high={fmt(high)}"


def check_action_bounds(actions: np.ndarray, info: DatasetInfo) -> None:
    """Every action inside the dataset's declared action space, up to
    ``ACTION_BOUND_TOLERANCE`` (float rounding). The policies' tanh heads act inside the
    declared bounds and the evaluation env clips to them, so data on another scale would be
    trained on silently and never reproduced.

    Raises:
        DatasetFormatError: naming the share of actions outside, their range and the bounds.
    """
    low = np.asarray(info.action_low, dtype=np.float64)
    high = np.asarray(info.action_high, dtype=np.float64)
    act = np.asarray(actions, dtype=np.float64)
    excess = np.maximum(low - act, act - high)  # > 0 outside, per value
    out = (excess > ACTION_BOUND_TOLERANCE).any(axis=-1)
    if not out.any():
        return
    declared = _interval(info.action_low, info.action_high)
    raise DatasetFormatError(
        f"Dataset '{info.dataset_id}' has {100 * out.mean():.1f}% of its actions "
        f"({int(out.sum())} of {len(out)}) outside its declared action space: observed "
        f"[{act.min():.4g}, {act.max():.4g}] against the declared {declared} (up to "
        f"{excess.max():.3g} past it); rescale or clip the actions into the bounds, or write "
        "the dataset with the action space they were taken in."
    )


def load_transitions(dataset, info: DatasetInfo) -> TensorDict:
    """All transitions of a dataset as one TensorDict ``[N]`` with TorchRL keys.

    Keys: ``observation [N, obs_dim]``, ``action [N, act_dim]``, ``episode [N]``, ``step [N]``, and
    under ``next``: ``observation``, ``action`` (the dataset's next action, which ReBRAC's critic
    penalty uses; the last step of an episode repeats its own action since no next one exists, and
    a terminated step never bootstraps), ``reward [N, 1]``, ``terminated``, ``truncated``,
    ``done [N, 1]`` (bool).

    Raises:
        DatasetFormatError: empty dataset, non-finite values, shapes that disagree with
            metadata, actions outside the declared action space (:func:`check_action_bounds`).
    """
    did = info.dataset_id
    obs_l, nobs_l, act_l, nact_l, rew_l, term_l, trunc_l, ep_l, step_l = ([] for _ in range(9))
    try:
        episodes = list(dataset.iterate_episodes())
    except Exception as exc:  # h5py raises OSError/KeyError/ValueError for damaged files
        raise DatasetFormatError(
            f"Dataset '{did}' cannot be read ({type(exc).__name__}: {exc}); the HDF5 file is "
            "damaged or truncated: delete it and regenerate or re-download it."
        ) from exc
    for ep in episodes:
        obs = flatten_obs(ep.observations, info.obs_keys).astype(np.float32)
        act = np.asarray(ep.actions, dtype=np.float32).reshape(len(ep.actions), -1)
        rew = np.asarray(ep.rewards, dtype=np.float32).reshape(-1)
        T = len(act)
        if T == 0:
            continue
        if obs.shape != (T + 1, info.obs_dim) or act.shape[1] != info.action_dim or len(rew) != T:
            raise DatasetFormatError(
                f"Dataset '{did}' episode {ep.id} has observations {obs.shape}, "
                f"actions {act.shape}, "
                f"rewards {rew.shape}, but the metadata says obs_dim={info.obs_dim}, "
                f"action_dim={info.action_dim} and observations need one more step than actions; "
                "the file is inconsistent: regenerate it."
            )
        for name, arr in (("observation", obs), ("action", act), ("reward", rew)):
            _check_finite(name, arr, did, ep.id)
        obs_l.append(obs[:-1])
        nobs_l.append(obs[1:])
        act_l.append(act)
        nact_l.append(np.concatenate([act[1:], act[-1:]]))
        rew_l.append(rew)
        term_l.append(np.asarray(ep.terminations, dtype=bool).reshape(-1))
        trunc_l.append(np.asarray(ep.truncations, dtype=bool).reshape(-1))
        ep_l.append(np.full(T, ep.id, dtype=np.int64))
        step_l.append(np.arange(T, dtype=np.int64))
    if not act_l:
        raise DatasetFormatError(
            f"Dataset '{did}' holds no transitions; regenerate it with `lit-itpo collect`."
        )
    check_action_bounds(np.concatenate(act_l), info)
    cat = lambda xs: torch.from_numpy(np.concatenate(xs))  # noqa: E731
    term, trunc = cat(term_l).unsqueeze(-1), cat(trunc_l).unsqueeze(-1)
    n = term.shape[0]
    return TensorDict(
        {
            "observation": cat(obs_l),
            "action": cat(act_l),
            "episode": cat(ep_l),
            "step": cat(step_l),
            "next": {
                "observation": cat(nobs_l),
                "action": cat(nact_l),
                "reward": cat(rew_l).unsqueeze(-1),
                "terminated": term,
                "truncated": trunc,
                "done": term | trunc,
            },
        },
        batch_size=[n],
    )
