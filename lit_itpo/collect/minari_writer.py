"""Write episodes as a real Minari dataset, atomically.

``minari.DataCollector`` needs jax (``minari[create]``, ~500 MB); building ``EpisodeBuffer``s from
whole-episode arrays and calling ``minari.create_dataset_from_buffers`` needs none
(docs/STACK.md). The dataset is created under a temp root beside the target and renamed into
place, so an interrupted run leaves no partial dataset; the temp root a killed run leaves
(``.tmp-<pid>-*``) is removed by the next write to that Minari root.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from lit_itpo.collect.rollout import Episode
from lit_itpo.data.minari_io import datasets_root, minari_root
from lit_itpo.errors import DatasetFormatError
from lit_itpo.utils import atomic_write_json, remove_stale_temps, replace_dir, temp_prefix

log = logging.getLogger(__name__)


def _to_list(obs):
    if isinstance(obs, dict):
        return {k: _to_list(v) for k, v in obs.items()}
    return np.asarray(obs)


def _finite(obs) -> bool:
    if isinstance(obs, dict):
        return all(_finite(v) for v in obs.values())
    return bool(np.isfinite(obs).all())


def write_dataset(
    dataset_id: str,
    episodes: list[Episode],
    env,
    *,
    eval_env=None,
    data_dir: str | Path | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Create ``dataset_id`` under the Minari root from whole episodes; returns its directory.

    Args:
        dataset_id: ``namespace/name/recipe-vN``.
        episodes: in Minari's layout (observations one step longer than actions).
        env: gymnasium id or ``EnvSpec`` the data came from (stored as the dataset's env spec).
        eval_env: id or spec of the evaluation env (default: ``env``).
        data_dir: Minari root (see :func:`lit_itpo.data.minari_io.datasets_root`).
        ref_min_score, ref_max_score: reference returns for normalised scores (always give them:
            ``minari.get_normalized_score`` fails without).
        provenance: written as ``provenance.json`` beside the dataset's ``data/``.
        overwrite: replace an existing dataset of that id.

    Raises:
        DatasetFormatError: no episodes, or non-finite values.
        FileExistsError: the id exists and ``overwrite`` is off.
    """
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import create_namespace, list_local_namespaces

    if not episodes or sum(len(e) for e in episodes) == 0:
        raise DatasetFormatError(f"Refusing to write dataset '{dataset_id}' with no transitions.")
    for i, ep in enumerate(episodes):
        if not (
            _finite(ep.observations)
            and np.isfinite(ep.actions).all()
            and np.isfinite(ep.rewards).all()
        ):
            raise DatasetFormatError(
                f"Episode {i} for dataset '{dataset_id}' holds non-finite values; not writing it."
            )
    root = datasets_root(data_dir)
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"Dataset '{dataset_id}' already exists at {final}; pass overwrite=true to replace it."
        )
    root.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temps(root):
        log.info("removed %s (left by an interrupted write)", stale)
    tmp_root = Path(tempfile.mkdtemp(dir=root, prefix=temp_prefix()))
    try:
        buffers = [
            EpisodeBuffer(
                id=i,
                seed=ep.seed,
                observations=_to_list(ep.observations),
                actions=np.asarray(ep.actions, dtype=np.float32),
                rewards=np.asarray(ep.rewards, dtype=np.float64),
                terminations=np.asarray(ep.terminations, dtype=bool),
                truncations=np.asarray(ep.truncations, dtype=bool),
                infos={},
            )
            for i, ep in enumerate(episodes)
        ]
        from lit_itpo.envs import make_gym_env

        env_obj = make_gym_env(env)
        with minari_root(tmp_root), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*author_email.*", category=UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env_obj,
                eval_env=eval_env if eval_env is not None else env_obj.spec,
                algorithm_name=algorithm_name,
                author="lit_itpo",
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
                description=description,
                data_format="hdf5",
            )
        env_obj.close()
        if provenance is not None:
            atomic_write_json(provenance, tmp_root / dataset_id / "provenance.json")
        namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
        with minari_root(root):
            # Nested namespaces (a/b) need each level registered.
            parts = namespace.split("/") if namespace else []
            for j in range(1, len(parts) + 1):
                ns = "/".join(parts[:j])
                if ns not in list_local_namespaces():
                    create_namespace(ns)
        replace_dir(tmp_root / dataset_id, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log.info(
        "wrote %s (%d episodes, %d steps) to %s",
        dataset_id,
        len(episodes),
        sum(len(e) for e in episodes),
        final,
    )
    return final
