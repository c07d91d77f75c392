"""The ``lit-itpo`` CLI: help, print_config with the real configs, a ``fit`` smoke run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_itpo.cli import lightning_main, main
from lit_itpo.modules import BCModule
from tests.conftest import DID, REPO, cli_args


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "lit_itpo", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for sub in ("fit", "validate", "test", "collect"):
        assert sub in out
    out = subprocess.run(
        [sys.executable, "-m", "lit_itpo", "collect", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--collect.recipes" in out and "--collect.sac.total_frames" in out


def test_print_config_of_committed_configs(tiny_root, capsys):
    root, _ = tiny_root
    with pytest.raises(SystemExit):
        lightning_main(
            [
                "fit",
                "--config",
                str(REPO / "conf/embedded/bc.yaml"),
                "--data.dataset_id",
                DID,
                "--data.data_dir",
                str(root),
                "--print_config",
            ]
        )
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "lit_itpo.modules.BCModule"
    assert cfg["seed_everything"] == 0 and cfg["trainer"]["check_val_every_n_epoch"] is None
    with pytest.raises(SystemExit):
        main(["collect", "--config", str(REPO / "conf/collect/halfcheetah.yaml"), "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["collect"]["env_id"] == "HalfCheetah-v5" and cfg["collect"]["steps"] == 1_000_000


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--config",
                str(REPO / "conf/embedded/bc.yaml"),
                "--data.dataset_id",
                "nope/none/x-v0",
                "--data.data_dir",
                str(tmp_path),
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lit-itpo: error:") and "nope/none/x-v0" in err


def test_fit_smoke_writes_checkpoint_logs_and_config(tiny_root, tmp_path):
    root, _ = tiny_root
    cli = lightning_main(cli_args("fit", "conf/embedded/bc.yaml", root, tmp_path, 30))
    assert cli.trainer.global_step == 30
    run = Path(cli.trainer.logger.log_dir)
    assert (run / "config.yaml").exists()
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = next(run.glob("checkpoints/*.ckpt"))
    model = BCModule.load_from_checkpoint(ckpt, weights_only=True)
    assert model.hparams.dataset_id == DID
    meta = torch.load(ckpt, weights_only=True)["lit_itpo"]
    assert meta == {
        "stage": "policy",
        "format_version": 1,
        "algorithm": "BCModule",
        "lit_itpo_version": "0.1.0",
    }
    assert model.hparams.obs_dim == 11
    # the normaliser came from the training split and travels in the checkpoint
    assert not torch.allclose(model.actor.obs_norm.std, torch.ones(11))
    assert "val/actor/bc_mse" in cli.trainer.callback_metrics


@pytest.mark.parametrize(
    "config",
    sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "conf").glob("*/*.yaml")
        if p.parent.name not in ("collect", "suite")  # suite/: a benchmark's protocol
    ),
)
def test_every_committed_stage_config_parses(config, tiny_root, capsys):
    """Each committed config is valid for LightningCLI (class paths, init args, callbacks)."""
    root, _ = tiny_root
    with pytest.raises(SystemExit) as e:
        lightning_main(
            [
                "fit",
                "--config",
                config,
                "--data.dataset_id",
                DID,
                "--data.data_dir",
                str(root),
                "--print_config",
            ]
        )
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["seed_everything"] == 0 and cfg["trainer"]["check_val_every_n_epoch"] is None


def test_fit_prints_no_lightning_advert(tiny_root, tmp_path):
    """``lit-itpo fit`` drops Lightning's "Tip: ... litlogger" line (the rest of its log stays)."""
    args = cli_args("fit", "conf/embedded/bc.yaml", tiny_root[0], tmp_path, 2)
    args += ["--trainer.enable_progress_bar", "true"]
    proc = subprocess.run(
        [sys.executable, "-m", "lit_itpo", *args], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "litlogger" not in proc.stderr
    assert "max_steps=2" in proc.stderr  # Lightning's own messages still reach stderr
    out = proc.stdout + proc.stderr
    # one summary line per stage, no "Total FLOPs: 0", no per-data-epoch "Epoch 0/-2", no v_num
    assert "model: " in proc.stderr and "FLOPs" not in out and "Trainer already" not in out
    assert "Epoch" not in out and "v_num" not in out
