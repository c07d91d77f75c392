"""Minari -> TensorDict transitions, splits, normalisers, scores and bad-input errors."""

from __future__ import annotations

import json
import shutil

import h5py
import minari
import numpy as np
import pytest
import torch

from lit_itpo.data.datamodule import MinariDataModule, split_episodes
from lit_itpo.data.minari_io import (
    dataset_info,
    load_transitions,
    minari_root,
    open_dataset,
)
from lit_itpo.data.scores import D4RL_REF_SCORES, normalized_score, reference_scores
from lit_itpo.errors import DatasetFormatError, DatasetNotFoundError, EnvSpecError
from lit_itpo.nets.normalizer import Normalizer
from tests.conftest import DID


def _copy(tiny_root, tmp_path):
    root, _ = tiny_root
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst


def test_transitions_align_with_minari_episodes(tiny_root):
    root, _ = tiny_root
    ds = open_dataset(DID, root)
    td = load_transitions(ds, dataset_info(ds, DID))
    with minari_root(root):
        ref = minari.load_dataset(DID)  # the stock loader, independent of our reader
    n = 0
    for ep in ref.iterate_episodes():
        sel = td["episode"] == ep.id
        T = len(ep.actions)
        assert int(sel.sum()) == T
        part = td[sel]
        np.testing.assert_allclose(part["observation"].numpy(), ep.observations[:-1], rtol=1e-6)
        np.testing.assert_allclose(
            part["next", "observation"].numpy(), ep.observations[1:], rtol=1e-6
        )
        np.testing.assert_allclose(part["action"].numpy(), ep.actions, rtol=1e-6)
        np.testing.assert_allclose(
            part["next", "reward"].squeeze(-1).numpy(), ep.rewards, rtol=1e-6
        )
        # next action: the dataset's following action; the last one repeats itself
        np.testing.assert_allclose(part["next", "action"][:-1].numpy(), ep.actions[1:], rtol=1e-6)
        assert torch.equal(part["step"], torch.arange(T))
        n += T
    assert n == td.shape[0] == ref.total_steps


def test_terminated_vs_truncated(tiny_root):
    root, eps = tiny_root
    ds = open_dataset(DID, root)
    td = load_transitions(ds, dataset_info(ds, DID))
    term, trunc, done = (td["next", k].squeeze(-1) for k in ("terminated", "truncated", "done"))
    assert torch.equal(done, term | trunc)
    assert not (term & trunc).any()
    # Random Hopper falls (terminated) and the budget cut makes the last episode truncated.
    assert term.any() and trunc.any()
    assert term.sum() == sum(int(e.terminations.sum()) for e in eps)
    assert trunc.sum() == sum(int(e.truncations.sum()) for e in eps)
    # Only the final step of an episode can be done.
    last = torch.zeros_like(done)
    ends = torch.nonzero(td["episode"][1:] != td["episode"][:-1]).squeeze(-1)
    last[ends] = True
    last[-1] = True
    assert not (done & ~last).any()


def test_split_is_disjoint_and_seeded():
    ep = torch.arange(50).repeat_interleave(3)
    tr, va = split_episodes(ep, 0.2, seed=3)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert sorted(tr.tolist() + va.tolist()) == list(range(50))
    assert len(va) == 10
    tr2, va2 = split_episodes(ep, 0.2, seed=3)
    assert torch.equal(va, va2)
    assert not torch.equal(va, split_episodes(ep, 0.2, seed=4)[1])


def test_datamodule_split_sampling_and_links(tiny_root):
    root, _ = tiny_root
    dm = MinariDataModule(DID, data_dir=str(root), batch_size=32, val_fraction=0.25, epoch_steps=5)
    assert (dm.obs_dim, dm.action_dim) == (11, 3)
    assert dm.action_low == [-1.0] * 3 and dm.action_high == [1.0] * 3
    assert dm.env_id == "Hopper-v5" and json.loads(dm.env_spec)["id"] == "Hopper-v5"
    assert dm.ref_scores == (-20.272305, 3234.3)
    dm.setup("fit")
    train_eps = set(dm.train_data["episode"].tolist())
    val_eps = set(dm.val_data["episode"].tolist())
    assert train_eps and val_eps and not train_eps & val_eps
    batches = list(dm.train_dataloader())
    assert len(batches) == 5 and batches[0].shape == (32,)
    assert set(batches[0]["episode"].tolist()) <= train_eps
    assert sum(b.shape[0] for b in dm.val_dataloader()) == dm.val_data.shape[0]
    assert torch.allclose(dm.stats["obs_mean"], dm.train_data["observation"].mean(0), atol=1e-5)


def test_normalizer_round_trip():
    x = torch.randn(500, 7, dtype=torch.float32) * torch.arange(1, 8) + 3.0
    x[:, 4] = 2.0  # a constant feature keeps std 1
    norm = Normalizer(7).fit(x)
    y = norm(x)
    assert torch.allclose(y[:, [0, 1, 2, 3, 5, 6]].mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(y[:, [0, 1, 2, 3, 5, 6]].std(0, unbiased=False), torch.ones(6), atol=1e-4)
    assert norm.std[4] == 1.0
    assert torch.allclose(norm.denormalize(y), x, atol=1e-5)
    assert set(dict(norm.state_dict())) == {"mean", "std"}


def test_scores():
    assert reference_scores("HalfCheetah-v5") == D4RL_REF_SCORES["halfcheetah"]
    assert reference_scores("Hopper-v5", 0.0, 10.0) == (0.0, 10.0)  # metadata first
    assert reference_scores("PointMaze_UMaze-v3") is None
    lo, hi = D4RL_REF_SCORES["hopper"]
    assert normalized_score(hi, (lo, hi)) == pytest.approx(100.0)
    assert normalized_score(lo, (lo, hi)) == pytest.approx(0.0)
    assert normalized_score(1.0, None) is None


def test_missing_dataset_error_names_id_path_and_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        MinariDataModule("mujoco/halfcheetah/medium-v0", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "mujoco/halfcheetah/medium-v0" in msg and str(tmp_path) in msg
    assert "minari download" in msg and "lit-itpo collect" in msg


def test_nan_in_episode_is_rejected(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    with h5py.File(root / DID / "data" / "main_data.hdf5", "r+") as f:
        f["episode_2/observations"][3, 1] = np.nan
    ds = open_dataset(DID, root)
    with pytest.raises(DatasetFormatError, match="episode 2 has 1 non-finite observation"):
        load_transitions(ds, dataset_info(ds, DID))


def test_truncated_hdf5_is_a_clear_error(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    path = root / DID / "data" / "main_data.hdf5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetFormatError, match="regenerate or re-download"):
        load_transitions(ds := open_dataset(DID, root), dataset_info(ds, DID))


def _edit_metadata(root, key, value):
    meta_path = root / DID / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta[key] = value
    meta_path.write_text(json.dumps(meta))


def test_metadata_shape_disagreeing_with_data(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    space = json.loads(
        json.loads((root / DID / "data" / "metadata.json").read_text())["observation_space"]
    )
    space.update(shape=[12], low=[-1e9] * 12, high=[1e9] * 12)
    _edit_metadata(root, "observation_space", json.dumps(space))
    ds = open_dataset(DID, root)
    with pytest.raises(DatasetFormatError, match="obs_dim=12"):
        load_transitions(ds, dataset_info(ds, DID))


def test_non_box_action_space(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    _edit_metadata(
        root, "action_space", json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": 3})
    )
    with pytest.raises(EnvSpecError, match="1-D Box"):
        MinariDataModule(DID, data_dir=str(root))


def test_empty_dataset_refused(tmp_path):
    from lit_itpo.collect.minari_writer import write_dataset

    with pytest.raises(DatasetFormatError, match="no transitions"):
        write_dataset("test/hopper/empty-v0", [], "Hopper-v5", data_dir=tmp_path)
    assert not (tmp_path / "test").exists()


def test_embedded_dataset_ships_and_loads():
    dm = MinariDataModule("lit_itpo/halfcheetah/medium-small-v0", data_dir="embedded")
    assert dm.root.is_dir() and dm.root.name == "minari"
    assert (dm.obs_dim, dm.action_dim, dm.env_id) == (17, 6, "HalfCheetah-v5")
    assert dm.ref_scores == D4RL_REF_SCORES["halfcheetah"]
    dm.setup()
    assert dm.transitions.shape[0] == 50_000
    prov = json.loads((dm.root / dm.dataset_id / "provenance.json").read_text())
    # D4RL's halfcheetah-medium sits near 41 normalised; the shipped sample must too
    assert 31 < prov["normalized_score_mean"] < 51
    size = sum(f.stat().st_size for f in (dm.root / dm.dataset_id).rglob("*") if f.is_file())
    assert size < 15 * 2**20


def test_mujoco_deprecation_warning_goes_to_logging_not_stderr(capfd, caplog):
    """gymnasium's HalfCheetah XML uses MuJoCo's deprecated ``settotalmass``: once per env made,
    MuJoCo printed a two-line warning to stderr; lit_itpo routes it to debug logging."""
    import logging

    import gymnasium as gym

    import lit_itpo.envs  # noqa: F401  (installs the handler)

    with caplog.at_level(logging.DEBUG, logger="lit_itpo.envs"):
        gym.make("HalfCheetah-v5").reset(seed=0)
    assert "settotalmass" not in capfd.readouterr().err
    assert any("settotalmass" in r.getMessage() for r in caplog.records)
