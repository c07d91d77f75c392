"""Fault injection: bad inputs and interruptions, each ending in one clear line.

Every bad input must end with exit status 2 and exactly one ``lit-itpo: error:`` line naming the
thing, the value and the fix, with no traceback and no run directory left behind; a SIGTERM ends
with 143, a SIGINT (Ctrl-C) with 130, each with the command that resumes; after SIGTERM, SIGINT
or kill -9 that command reaches the same final step and bit-identical weights as an
uninterrupted run.

Tiny real Minari datasets and checkpoints are made in tmp dirs (module fixtures below).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from lit_itpo.cli import main
from lit_itpo.collect.minari_writer import write_dataset
from lit_itpo.collect.rollout import rollout_episodes
from lit_itpo.errors import ConfigError
from tests.conftest import REPO, make_dataset

DID = "test/hopper/random-v0"
OTHER = "test/hopper/other-v0"  # same env and dims, another dataset
PENDULUM = "test/pendulum/random-v0"  # other dims
INF = "test/infbox/random-v0"  # action space with infinite bounds
FIX_WORDS = (
    "must", "pass", "fix", "use", "run", "delete", "point", "give", "set", "list", "see",
    "move", "install", "write", "get", "ask", "resume",
)  # fmt: skip
LIT_ITPO = str(REPO / ".venv" / "bin" / "lit-itpo")


class InfBoxEnv(gym.Env):
    """A 2-D action space without bounds (some third-party envs declare one)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.normal(size=3), {}

    def step(self, action):
        self._t += 1
        return self.np_random.normal(size=3), 0.0, False, self._t >= 50, {}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A Minari root with the four datasets above."""
    root = tmp_path_factory.mktemp("faults_minari")
    make_dataset(root, DID)
    make_dataset(root, OTHER, n_steps=300, seed=1)
    make_dataset(root, PENDULUM, env_id="Pendulum-v1", n_steps=300)
    gym.register(
        "LitItpoInfBox-v0", entry_point="tests.test_faults:InfBoxEnv", max_episode_steps=50
    )
    rng = np.random.default_rng(0)
    eps = rollout_episodes(
        lambda: gym.make("LitItpoInfBox-v0"),
        lambda obs: rng.normal(size=(len(obs), 2)).astype(np.float32),
        n_steps=100,
        n_envs=2,
    )
    write_dataset(INF, eps, "LitItpoInfBox-v0", data_dir=root, ref_min_score=0, ref_max_score=1)
    return root


def args_for(sub: str, config: str, root, out, *extra: str, dataset: str = DID, steps=5):
    """A committed config shrunk: tiny dataset and nets, a few steps, logs under ``out``."""
    return [
        sub,
        "--config",
        str(REPO / config),
        "--data.dataset_id",
        dataset,
        "--data.data_dir",
        str(root),
        "--data.batch_size",
        "32",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        "4",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--model.init_args.hidden",
        "[16, 16]",
        *extra,
    ]


WM = (
    "--model.init_args.reward_hidden", "[16, 16]", "--model.init_args.diffusion_steps", "2",
    "--model.init_args.sample_steps", "2", "--model.init_args.eval_windows", "16",
)  # fmt: skip
EVAL = (
    "--trainer.callbacks.init_args.num_episodes", "1",
    "--trainer.callbacks.init_args.max_episode_steps", "3",
)  # fmt: skip


def _ckpt(out: Path) -> Path:
    return next(out.glob("tb/version_0/checkpoints/last.ckpt"))


@pytest.fixture(scope="module")
def ckpts(root, tmp_path_factory):
    """Tiny stage checkpoints: BC (policy), world model, BC on another dataset, BC on Pendulum."""
    base = tmp_path_factory.mktemp("faults_ckpts")
    made = {}
    for name, config, extra, dataset in (
        ("bc", "conf/embedded/bc.yaml", (), DID),
        ("wm", "conf/embedded/world_model.yaml", WM, DID),
        ("bc_other", "conf/embedded/bc.yaml", (), OTHER),
        ("bc_pendulum", "conf/embedded/bc.yaml", (), PENDULUM),
    ):
        main(args_for("fit", config, root, base / name, *extra, dataset=dataset))
        made[name] = _ckpt(base / name)
    text = base / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    made["text"] = text
    trunc = base / "truncated.ckpt"
    trunc.write_bytes(made["bc"].read_bytes()[:2000])
    made["truncated"] = trunc
    empty = base / "empty.ckpt"
    empty.write_bytes(b"")
    made["empty"] = empty
    plain = base / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)  # a torch file, not a stage's
    made["plain"] = plain
    bad_yaml = base / "bad.yaml"
    bad_yaml.write_text("trainer:\n  max_steps: 5\n  logger: [1, 2\nmodel: {\n")
    made["bad_yaml"] = bad_yaml
    return made


def expect_error(capsys, argv, *names: str, out: Path | None = None, code: int = 2) -> str:
    """Run ``lit-itpo argv`` in-process; the one error line it printed."""
    cwd_before = set(os.listdir("."))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("lit-itpo:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("lit-itpo: error: ")
    for name in names:
        assert name in line, (name, line)
    assert any(w in line for w in FIX_WORDS), line
    if out is not None:  # failed its checks: no run directory made
        assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
    assert not (set(os.listdir(".")) - cwd_before) & {"lightning_logs", "checkpoints", "tb"}
    return line


# --- checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["fit", "validate", "test"])
def test_missing_ckpt_path(sub, root, tmp_path, capsys):
    cfg = "conf/embedded/bc.yaml"
    missing = tmp_path / "nope.ckpt"
    out = tmp_path / "run"
    line = expect_error(
        capsys, args_for(sub, cfg, root, out, "--ckpt_path", str(missing)), str(missing), out=out
    )
    assert "does not exist" in line


@pytest.mark.parametrize("bad", ["text", "truncated", "empty", "plain"])
@pytest.mark.parametrize("sub", ["fit", "validate"])
def test_unreadable_ckpt_path(bad, sub, root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(sub, "conf/embedded/bc.yaml", root, out, "--ckpt_path", str(ckpts[bad]))
    line = expect_error(capsys, argv, str(ckpts[bad]), out=out)
    assert "weights_only" not in line


def test_fit_refuses_another_stages_checkpoint(root, ckpts, tmp_path, capsys):
    """LightningCLI would swap in the checkpoint's class and train a world model."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/rebrac.yaml", root, out, "--ckpt_path", str(ckpts["wm"]))
    expect_error(capsys, argv, "WorldModelModule", "ReBRACModule", out=out)


def test_validate_refuses_world_model_for_policy_config(root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        "validate", "conf/embedded/rebrac.yaml", root, out, *EVAL, "--ckpt_path", str(ckpts["wm"])
    )
    expect_error(capsys, argv, "WorldModelModule", "ReBRACModule", out=out)


def test_policy_class_mismatch(root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        "validate", "conf/embedded/rebrac.yaml", root, out, *EVAL, "--ckpt_path", str(ckpts["bc"])
    )
    expect_error(capsys, argv, "BCModule", "ReBRACModule", out=out)


def test_world_model_config_refuses_policy(root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        "fit", "conf/embedded/world_model.yaml", root, out, *WM, "--ckpt_path", str(ckpts["bc"])
    )
    expect_error(capsys, argv, "BCModule", "WorldModelModule", out=out)


def test_itpo_sample_steps_above_the_world_models_trained_k(root, ckpts, tmp_path, monkeypatch,
                                                            capsys):  # fmt: skip
    """ITPOCallback's sample_steps above its diffusion checkpoint's trained K (here 2) was a
    ValueError traceback at the end of the validation: the pipeline's one line
    (test_pipeline_sample_steps_above_the_trained_k) naming both numbers and the checkpoint,
    before any episode runs."""
    from lit_itpo.callbacks.evaluation import EpisodeEvalCallback

    def no_episodes(*args, **kwargs):
        raise AssertionError("an episode ran before sample_steps was refused")

    monkeypatch.setattr(EpisodeEvalCallback, "evaluate", no_episodes)
    out = tmp_path / "run"
    argv = args_for("validate", "conf/embedded/itpo.yaml", root, out, *EVAL,
                    "--model", "lit_itpo.modules.BCModule", "--ckpt_path", str(ckpts["bc"]),
                    "--trainer.callbacks.init_args.world_model_ckpt", str(ckpts["wm"]),
                    "--trainer.callbacks.init_args.sample_steps", "3")  # fmt: skip
    expect_error(capsys, argv, "sample_steps=3", "diffusion_steps=2", str(ckpts["wm"]), out=out)


@pytest.mark.parametrize("sub", ["fit", "validate"])
def test_checkpoint_of_another_dataset(sub, root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(sub, "conf/embedded/bc.yaml", root, out, "--ckpt_path", str(ckpts["bc_other"]))
    expect_error(capsys, argv, OTHER, DID, "--data.dataset_id", out=out)


@pytest.mark.parametrize("sub", ["fit", "test"])
def test_checkpoint_of_another_shape(sub, root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        sub, "conf/embedded/bc.yaml", root, out, "--ckpt_path", str(ckpts["bc_pendulum"])
    )
    expect_error(capsys, argv, "obs_dim=3", "obs_dim=11", out=out)


def test_fit_checkpoint_past_the_budget(root, ckpts, tmp_path, capsys):
    """A checkpoint at step 5 resumed with max_steps 3 is already past the budget: refused
    (Lightning ended at once with "max_steps reached" and exit 0), for a path and for last."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--ckpt_path", str(ckpts["bc"]),
                    steps=3)  # fmt: skip
    expect_error(capsys, argv, str(ckpts["bc"]), "step 5", "--trainer.max_steps=3", out=out)
    assert not out.exists()
    main(args_for("fit", "conf/embedded/bc.yaml", root, out))  # step 5
    saved = _ckpt(out)
    stamp = saved.stat().st_mtime_ns
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--ckpt_path", "last", steps=3)
    expect_error(capsys, argv, str(saved), "step 5", "--trainer.max_steps=3")
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    assert saved.stat().st_mtime_ns == stamp


def test_a_full_disk_while_saving_leaves_no_partial_checkpoint(root, tmp_path, monkeypatch, capsys):
    """A disk that fills up while a checkpoint is written gave a traceback and a truncated
    .ckpt, which the rerun then skipped with a warning: every checkpoint goes to a temp file
    beside it and is renamed into place, so a failed write leaves the earlier checkpoints as
    they were and no partial file; one line names the file, the error and the resume command,
    which then finishes the run."""
    import errno
    import io

    real_save = torch.save
    written = []

    def disk_full_at_the_third_save(obj, f, *args, **kwargs):
        written.append(f)
        if len(written) != 3:  # step 4's two files (epoch=0-step=4.ckpt, last.ckpt) go through
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(f, str | os.PathLike):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full_at_the_third_save)
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, steps=10)
    line = expect_error(capsys, argv, "epoch=0-step=8.ckpt", os.strerror(errno.ENOSPC))
    assert line.endswith(shlex.join(["lit-itpo", *argv, "--ckpt_path", "last"])), line
    ckpts = out / "tb/version_0/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 4
    monkeypatch.setattr(torch, "save", real_save)
    main([*argv, "--ckpt_path", "last"])
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 10
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]


# --- errors during a run: nothing left behind ------------------------------------------------
def _huge_rewards(f, meta):
    for ep in f:
        f[ep]["rewards"][...] = 1e30


def test_a_divergence_during_a_fit_leaves_no_run_folder(root, tmp_path, capsys):
    """Rewards of 1e30 pass the dataset's checks (finite) and make ReBRAC's critic loss inf at
    its first update: the divergence guard's one line, and nothing left (an empty tb/ stayed
    behind; an error not of lit_itpo's own left the whole tb/version_0)."""
    big = _edited_copy(root, tmp_path / "big", _huge_rewards)
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/rebrac.yaml", big, out, *EVAL)
    expect_error(capsys, argv, "critic loss became inf", "critic_lr", out=out)
    assert not out.exists(), list(out.rglob("*"))


@pytest.mark.parametrize("sub", ["fit", "validate"])
def test_an_error_inside_a_run_leaves_no_run_folder(sub, root, ckpts, tmp_path):
    """An exception raised inside the run (here an OSError as the first validation starts,
    before the checkpoint it would save) left tb/version_0 with its logs: the attempt's folder
    is removed on the error path (the error itself, not lit_itpo's, goes on as it is)."""
    out = tmp_path / "run"
    extra = ("--ckpt_path", str(ckpts["bc"])) if sub == "validate" else ()
    argv = args_for(sub, "conf/embedded/bc.yaml", root, out, *extra,
                    "--trainer.callbacks+=tests.fault_helpers.RaiseAt",
                    "--trainer.callbacks.init_args.error", "OSError")  # fmt: skip
    with pytest.raises(OSError, match="injected OSError"):
        main(argv)
    assert not out.exists(), list(out.rglob("*"))


def test_a_pipeline_that_fails_in_its_first_stage_leaves_no_out_dir(
    root, tmp_path, monkeypatch, capsys
):
    """A pipeline whose first stage fails during its run (its own folder removed by the stage
    run) left out_dir holding only its lock file: the folder the run made is removed; one that
    existed before stays, without the lock file."""
    import lit_itpo.pipeline as pipeline

    def failing_stage(*args, **kwargs):
        raise ConfigError("stage 1 failed; fix it")

    monkeypatch.setattr(pipeline, "_fit", failing_stage)
    out = tmp_path / "pipe"
    expect_error(capsys, pipeline_args(root, out), "stage 1 failed")
    assert not out.exists(), list(out.iterdir())
    out.mkdir()
    expect_error(capsys, pipeline_args(root, out), "stage 1 failed")
    assert list(out.iterdir()) == []


@pytest.fixture
def world_model_stage_only(monkeypatch):
    """A pipeline whose world model stage trains for real (tiny nets) and whose other stages and
    ITPO runs are stand-ins returning at once: every record a pipeline writes, in seconds."""
    import lit_itpo.pipeline as pipeline
    from lit_itpo.stages import EvalResult, ITPOScore, Score, StageResult

    real_fit = pipeline._fit

    def fit(cfg, out, stage, config, steps, overrides, val_every=1000):
        if stage == "world_model":
            return real_fit(cfg, out, stage, config, steps, overrides | _wm_overrides())
        return StageResult(out / stage, out / stage / "last.ckpt", steps, {})

    def evaluate(cfg, spec):
        base = Score(0.0, 1.0)
        if spec.alpha_grid is not None:
            grid = {a: base for a in spec.alpha_grid}
            return EvalResult(base, grid={m: grid for m in spec.world_models},
                              alpha={m: 0.0 for m in spec.world_models})  # fmt: skip
        nan = float("nan")
        score = ITPOScore(spec.itpo.lr, base, 0.0, (nan, nan), 0.0, 0.0, 0.0)
        return EvalResult(base, itpo={m: score for m in spec.world_models})

    monkeypatch.setattr(pipeline, "_fit", fit)
    monkeypatch.setattr(pipeline, "_evaluate", evaluate)


@pytest.mark.parametrize("name", ["world_model/metrics.json", "results.json"])
def test_a_full_disk_while_writing_a_record(name, root, tmp_path, world_model_stage_only,
                                            monkeypatch, capsys):  # fmt: skip
    """A stage's metrics.json or the pipeline's results.json that could not be written (a full
    disk) gave a traceback: one line naming the file, the OS's reason and the fix, no partial
    or temp file, and the same command, rerun, resumes and writes it."""
    import errno

    out = tmp_path / "pipe"
    argv = pipeline_args(root, out, "--pipeline.world_model_steps", "5")
    record = out / name
    real_replace = os.replace

    def disk_full_at_the_record(src, dst, *args, **kwargs):
        if Path(dst) == record:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full_at_the_record)
    line = expect_error(capsys, argv, str(record), os.strerror(errno.ENOSPC), "free space")
    assert line.endswith(f"then resume with: {shlex.join(['lit-itpo', *argv])}"), line
    assert not record.exists()
    assert not [p for p in out.rglob("*.tmp")], list(out.rglob("*"))
    monkeypatch.setattr(os, "replace", real_replace)
    main(argv)
    assert record.is_file()
    assert sorted(p.name for p in (out / "world_model" / "tb").iterdir()) == ["version_0"]


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A read-only folder: chmod 555 (root writes there anyway, so as root the OS's answer for
    it, os.access, says what a read-only filesystem says: EROFS)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *args, **kwargs):
            inside = Path(path).absolute().is_relative_to(folder)
            return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("sub", ["fit", "validate"])
def test_read_only_output_folder(sub, root, read_only, tmp_path, capsys):
    """A read-only output folder was a traceback from the logger's makedirs: one line naming
    the folder, before anything runs."""
    out = read_only / "run"
    argv = args_for(sub, "conf/embedded/bc.yaml", root, out)
    expect_error(capsys, argv, str(out), "not writable", out=out)


def test_pipeline_read_only_out_dir(root, read_only, no_stages, capsys):
    out = read_only / "pipe"
    expect_error(capsys, pipeline_args(root, out), f"--pipeline.out_dir={out}", "not writable",
                 out=out)  # fmt: skip


@pytest.mark.parametrize("sub", ["fit", "validate"])
def test_ckpt_path_best(sub, root, tmp_path, capsys):
    """'best' gave Lightning's ValueError traceback: the stages monitor no metric."""
    out = tmp_path / "run"
    argv = args_for(sub, "conf/embedded/bc.yaml", root, out, "--ckpt_path", "best")
    expect_error(capsys, argv, "--ckpt_path best", "monitor", "last", out=out)


def test_validate_last_without_a_run(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("validate", "conf/embedded/bc.yaml", root, out, "--ckpt_path", "last")
    expect_error(capsys, argv, "--ckpt_path last", out=out)


# --- trainer values, config files, arguments -------------------------------------------------
@pytest.mark.parametrize(
    "key,value,named",
    [
        ("max_steps", "-5", "-5"),
        ("max_steps", "0", "max_steps=0"),
        ("max_epochs", "0", "max_epochs=0"),
        ("max_steps", "abc", "abc"),
        ("val_check_interval", "-3", "-3"),
        ("val_check_interval", "1.5", "1.5"),
        ("accelerator", "tpu", "tpu"),
        ("strategy", "nope", "nope"),
        ("precision", "13", "13"),
        ("max_epochs", "-2", "-2"),
        ("limit_train_batches", "-1", "-1"),
        ("log_every_n_steps", "-1", "-1"),
        ("check_val_every_n_epoch", "0", "check_val_every_n_epoch=0"),
        ("accumulate_grad_batches", "0", "accumulate_grad_batches=0"),
        ("gradient_clip_val", "-1", "gradient_clip_val=-1"),
        ("devices", "0", "devices"),
    ],
)
def test_trainer_values_lightning_rejects(key, value, named, root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, f"--trainer.{key}", value)
    expect_error(capsys, argv, named, out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_accelerator_without_a_gpu(accelerator, root, tmp_path, capsys):
    """'a trainer value is rejected by Lightning: No supported gpu backend found!' named no
    value: name it, say no GPU is visible, and the values that run."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--trainer.accelerator",
                    accelerator)  # fmt: skip
    expect_error(capsys, argv, f"--trainer.accelerator={accelerator}", "no GPU is visible",
                 "cpu", "auto", out=out)  # fmt: skip


@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_fp16_mixed_precision_on_cpu(precision, root, tmp_path, capsys):
    """Lightning trains 16-mixed on a CPU in bf16 while the saved config says 16-mixed."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--trainer.accelerator", "cpu",
                    "--trainer.precision", precision)  # fmt: skip
    expect_error(capsys, argv, f"--trainer.precision={precision}", "bf16-mixed", "32-true", out=out)
    assert not out.exists()


def test_yaml_syntax_error_names_file_and_line(root, ckpts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--config", str(ckpts["bad_yaml"]))
    expect_error(capsys, argv, str(ckpts["bad_yaml"]), "line 4", out=out)


def test_missing_config_file(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--config", "conf/nope.yaml")
    expect_error(capsys, argv, "conf/nope.yaml", "does not exist", out=out)


@pytest.mark.parametrize("option", ["--config", "--ckpt_path"])
def test_a_folder_where_a_file_is_expected(option, root, tmp_path, capsys):
    """A folder given for a file was reported as not existing: say it is a folder."""
    out, folder = tmp_path / "run", tmp_path / "conf"
    folder.mkdir()
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, option, f"{folder}/")
    line = expect_error(capsys, argv, f"{option} {folder}/", "is a directory", "file", out=out)
    assert "does not exist" not in line


@pytest.mark.parametrize("word,meant", [("fitt", "fit"), ("pipelin", "pipeline"),
                                        ("colect", "collect")])  # fmt: skip
def test_unknown_command_suggests_the_projects_commands(word, meant, capsys):
    """'fitt' was answered with LightningCLI's choices (fit, validate, test, predict): the
    project's commands, with the nearest one, and not predict (no stage has a predict loop)."""
    line = expect_error(capsys, [word, "--config", "conf/embedded/bc.yaml"], f"'{word}'",
                        f"did you mean {meant}?", "pipeline", "collect")  # fmt: skip
    assert "predict" not in line, line


@pytest.mark.parametrize("sub", ["test", "predict"])
def test_test_and_predict_say_to_use_validate(sub, root, tmp_path, capsys):
    """No stage defines test_step (or predict_step): 'fix that value' named no value; say so
    and name validate, before the dataset is read or a run folder made."""
    out = tmp_path / "run"
    line = expect_error(capsys, args_for(sub, "conf/embedded/bc.yaml", root, out),
                        f"no stage defines a {sub} loop", "validate", out=out)  # fmt: skip
    assert "fix that value" not in line and not out.exists()


def test_unknown_model_argument_is_one_line(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--model.init_args.lrr", "0.1")
    expect_error(capsys, argv, "--model.init_args.lrr", "BCModule", "--model.help", out=out)


def test_unknown_top_level_argument(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, "--nonsense", "3")
    expect_error(capsys, argv, "--nonsense", "--help", out=out)


def test_unknown_model_class(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        "fit", "conf/embedded/bc.yaml", root, out, "--model.class_path", "lit_itpo.modules.Nope"
    )
    expect_error(capsys, argv, "lit_itpo.modules.Nope", out=out)


@pytest.mark.parametrize(
    "extra,named",
    [
        (("--data.batch_size", "0"), "batch_size=0"),
        (("--data.val_fraction", "1.5"), "val_fraction=1.5"),
        (("--model.init_args.lr", "-1"), "lr=-1"),
    ],
)
def test_bad_model_and_data_values(extra, named, root, tmp_path, capsys):
    out = tmp_path / "run"
    expect_error(
        capsys, args_for("fit", "conf/embedded/bc.yaml", root, out, *extra), named, out=out
    )


def test_bad_eval_callback_value(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for(
        "fit",
        "conf/embedded/rebrac.yaml",
        root,
        out,
        "--trainer.callbacks.init_args.num_episodes",
        "0",
    )
    expect_error(capsys, argv, "num_episodes=0", out=out)


@pytest.mark.parametrize(
    "config,extra,named",
    [
        ("bc", ("--model.init_args.lr", "-1e-3"), "lr=-0.001"),  # read as an option
        ("bc", ("--model.init_args.lr", "nan"), "--model.init_args.lr nan"),
        ("bc", ("--model.init_args.lr", "-inf"), "--model.init_args.lr -inf"),
        ("bc", ("--trainer.gradient_clip_val", "inf"), "--trainer.gradient_clip_val inf"),
        ("bc", ("--trainer.max_steps", "1e3"), "--trainer.max_steps 1e3"),
        (  # named another class's 'not an argument' (the union's second member)
            "rebrac",
            ("--trainer.callbacks.init_args.num_episodes", "nan"),
            "--trainer.callbacks.init_args.num_episodes nan",
        ),
        ("world_model", ("--model.init_args.sample_steps", "nan"), "sample_steps nan"),
    ],
)
def test_number_values_the_parser_rejects(config, extra, named, root, tmp_path, capsys):
    """A negative number in e-notation was read as an option ("argument --model: expected one
    argument"), and nan / inf gave jsonargparse's multi-line union report on one line: one
    short line naming the option and the value."""
    out = tmp_path / "run"
    argv = args_for("fit", f"conf/embedded/{config}.yaml", root, out, *extra)
    line = expect_error(capsys, argv, named, out=out)
    assert "Parser key" not in line and "Given value" not in line, line
    assert len(line) < 200, line


# --- datasets ----------------------------------------------------------------------------------
def test_minari_root_that_does_not_exist(tmp_path, capsys):
    out, missing = tmp_path / "run", tmp_path / "no_such_root"
    argv = args_for("fit", "conf/embedded/bc.yaml", missing, out)
    expect_error(capsys, argv, "data_dir", str(missing), "does not exist", out=out)


@pytest.mark.parametrize("empty", ["", " "])
def test_empty_dataset_id(empty, root, tmp_path, capsys):
    """An empty id (an unset shell variable) offered `minari download ` with nothing to get."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, dataset=empty)
    line = expect_error(capsys, argv, f"--data.dataset_id={empty!r} is empty", out=out)
    assert "minari download" not in line, line


def test_dataset_not_in_root(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, dataset="test/hopper/nope-v0")
    expect_error(capsys, argv, "test/hopper/nope-v0", out=out)


def test_action_space_with_infinite_bounds(root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out, dataset=INF)
    expect_error(capsys, argv, INF, "infinite bounds", "inf", out=out)


def _edited_copy(root: Path, dst: Path, edit) -> Path:
    """A Minari root holding a copy of ``DID`` with ``edit(h5py file, metadata dict)`` applied."""
    import json

    import h5py

    shutil.copytree(root / DID, dst / DID)
    meta_path = dst / DID / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    with h5py.File(dst / DID / "data" / "main_data.hdf5", "r+") as f:
        edit(f, meta)
    meta_path.write_text(json.dumps(meta))
    return dst


def _scale_actions(f, meta, factor=5.0):
    for ep in f:
        f[ep]["actions"][...] = f[ep]["actions"][...] * factor


def _nan_observation(f, meta):
    f["episode_2/observations"][3, 1] = np.nan


def _wrong_obs_shape(f, meta):
    import json

    space = json.loads(meta["observation_space"])
    space.update(shape=[12], low=[-1e9] * 12, high=[1e9] * 12)
    meta["observation_space"] = json.dumps(space)


def _discrete_actions(f, meta):
    import json

    meta["action_space"] = json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": 3})


@pytest.fixture(scope="module")
def bad_roots(root, tmp_path_factory):
    """Minari roots, each with a faulty copy of ``DID``: actions 5x past the declared Box
    [-1, 1] (``wide``), a NaN observation, observations of another shape than the metadata's,
    a discrete action space."""
    base = tmp_path_factory.mktemp("faults_bad_data")
    edits = {
        "wide": _scale_actions,
        "nan": _nan_observation,
        "shape": _wrong_obs_shape,
        "discrete": _discrete_actions,
    }
    return {name: _edited_copy(root, base / name, edit) for name, edit in edits.items()}


def test_actions_outside_the_declared_action_space(bad_roots, tmp_path, capsys):
    """Actions up to 5x past a declared Box [-1, 1] are refused before a run directory exists:
    the line names the dataset, the share outside, the observed range, the bounds and the fix."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", bad_roots["wide"], out)
    line = expect_error(capsys, argv, DID, "% of its actions", "[-1, 1]", "rescale", out=out)
    assert re.search(r"observed \[-4\.\d+, 4\.\d+\]", line), line
    assert not out.exists()


def test_actions_outside_by_a_rounding_amount_are_accepted(root, tmp_path):
    """D4RL-like data: a few actions past the bounds by float rounding (<= 1e-4) load as they
    are; 1e-3 past is refused."""
    from lit_itpo.data.minari_io import dataset_info, load_transitions, open_dataset
    from lit_itpo.errors import DatasetFormatError

    def nudge(by):
        def edit(f, meta):
            f["episode_1/actions"][2, 0] = 1.0 + by
            f["episode_3/actions"][0, 1] = -1.0 - by

        return edit

    ok = _edited_copy(root, tmp_path / "ok", nudge(5e-5))
    ds = open_dataset(DID, ok)
    td = load_transitions(ds, dataset_info(ds, DID))
    assert float(td["action"].max()) == pytest.approx(1.0 + 5e-5)
    bad = _edited_copy(root, tmp_path / "bad", nudge(1e-3))
    ds = open_dataset(DID, bad)
    with pytest.raises(DatasetFormatError, match="outside its declared action space"):
        load_transitions(ds, dataset_info(ds, DID))


# --- pipeline: every argument checked before anything trains ---------------------------------
def pipeline_args(root, out, *extra):
    return [
        "pipeline",
        "--pipeline.dataset_id",
        DID,
        "--pipeline.data_dir",
        str(root),
        "--pipeline.out_dir",
        str(out),
        *extra,
    ]


@pytest.fixture
def no_stages(monkeypatch):
    """No pipeline stage may run: a check meant to come before training must refuse first."""
    import lit_itpo.pipeline as pipeline

    def no_stage(*args, **kwargs):
        raise AssertionError("a stage ran before the pipeline's checks refused the input")

    monkeypatch.setattr(pipeline, "_fit", no_stage)
    monkeypatch.setattr(pipeline, "_evaluate", no_stage)


@pytest.mark.parametrize(
    "extra,named",
    [
        (("--pipeline.particles", "0"), "particles=0"),
        (("--pipeline.horizon", "0"), "horizon=0"),
        (("--pipeline.inner_steps", "0"), "inner_steps=0"),
        (("--pipeline.alpha_grid", "[]"), "alpha_grid"),
        (("--pipeline.alpha_grid", "[0.001, -1e-5]"), "-1e-05"),
        (("--pipeline.num_episodes", "0"), "num_episodes=0"),
        (("--pipeline.world_model_steps", "-3"), "world_model_steps=-3"),
        (("--pipeline.sample_variance", "gamma"), "gamma"),
        (("--pipeline.proximity", "-1"), "proximity=-1.0"),
        (("--pipeline.itpo_models", "[mlp]"), "itpo_models=['mlp']"),
        (("--pipeline.itpo_models", "[]"), "itpo_models=[]"),
        (("--pipeline.itpo_models", "[meanflow_later]"), "itpo_models=['meanflow_later']"),
        (("--pipeline.itpo_models", "[meanflow, meanflow_carry]"), "names one arm twice"),
        (("--pipeline.itpo_dir", "policy"), "itpo_dir='policy'"),
        (("--pipeline.itpo_dir", "../elsewhere"), "itpo_dir='../elsewhere'"),
        (("--pipeline.restart", "[policy, nope]"), "names ['nope']"),
        (("--pipeline.restart", "everything"), "names ['everything']"),
        (("--pipeline.alpha_seed", "1000000"), "alpha_seed=1000000"),
        (("--pipeline.policy_config", "conf/nope.yaml"), "conf/nope.yaml"),
        (("--pipeline.policy_config", "conf/"), "--pipeline.policy_config=conf/ is a directory"),
        (("--pipeline.dataset_id", "test/hopper/nope-v0"), "test/hopper/nope-v0"),
        (("--pipeline.dataset_id", ""), "--pipeline.dataset_id='' is empty"),
        (("--pipeline.particles", "many"), "many"),
        (("--pipeline.foo", "1"), "--pipeline.foo"),
        (("--pipeline.max_episode_steps", "0"), "max_episode_steps=0"),
        (("--pipeline.eval_seed", "-5"), "eval_seed=-5"),
        (("--pipeline.alpha_seed", "-1"), "alpha_seed=-1"),
        (("--pipeline.seed", "-1"), "seed=-1"),
        (("--pipeline.proximity", "-1e-3"), "proximity=-0.001"),  # was read as an option
        (("--pipeline.proximity", "nan"), "--pipeline.proximity nan"),
        (("--pipeline.proximity", "-inf"), "--pipeline.proximity -inf"),
        (("--pipeline.alpha_grid", "[1e-3, inf]"), "--pipeline.alpha_grid [1e-3, inf] has inf"),
        (("--pipeline.particles", "1e6"), "--pipeline.particles 1e6"),
        (("--pipeline.max_episode_steps", "nan"), "--pipeline.max_episode_steps nan"),
    ],
)
def test_pipeline_arguments(extra, named, root, tmp_path, no_stages, capsys):
    out = tmp_path / "pipe"
    expect_error(capsys, pipeline_args(root, out, *extra), named, out=out)


@pytest.mark.parametrize(
    "fault,named",
    [
        ("nan", "1 non-finite observation"),
        ("shape", "obs_dim=12"),
        ("discrete", "1-D Box"),
        ("wide", "outside its declared action space"),
    ],
)
def test_pipeline_checks_the_dataset_before_any_stage(fault, named, bad_roots, tmp_path, capsys):
    """The datamodule's own checks, run by check_config: nothing trains, nothing is made."""
    from lit_itpo.errors import LitItpoError
    from lit_itpo.pipeline import PipelineConfig, check_config

    out = tmp_path / "pipe"
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(bad_roots[fault]), out_dir=str(out))
    with pytest.raises(LitItpoError, match=re.escape(named)):
        check_config(cfg)
    expect_error(capsys, pipeline_args(bad_roots[fault], out), DID, named, out=out)
    assert not out.exists()


def test_pipeline_sample_steps_above_the_trained_k(root, tmp_path, no_stages, capsys):
    """--pipeline.sample_steps above the world model's trained K (its config's diffusion_steps)
    failed after three stages had trained: refused up front, naming both numbers and the file;
    a config without diffusion_steps has WorldModelModule's default K."""
    out = tmp_path / "pipe"
    conf = "conf/embedded/world_model.yaml"  # diffusion_steps: 20
    argv = pipeline_args(root, out, "--pipeline.world_model_config", conf,
                         "--pipeline.sample_steps", "50")  # fmt: skip
    expect_error(capsys, argv, "--pipeline.sample_steps=50", "diffusion_steps=20", conf, out=out)
    bare = yaml.safe_load((REPO / conf).read_text())
    del bare["model"]["init_args"]["diffusion_steps"], bare["model"]["init_args"]["sample_steps"]
    own = tmp_path / "wm.yaml"
    own.write_text(yaml.safe_dump(bare))
    argv = pipeline_args(root, out, "--pipeline.world_model_config", str(own),
                         "--pipeline.sample_steps", "11")  # fmt: skip
    expect_error(capsys, argv, "--pipeline.sample_steps=11", "diffusion_steps=10", out=out)


def test_pipeline_particles_beyond_the_machines_memory(root, tmp_path, no_stages, capsys):
    """--pipeline.particles 1000000 ran out of memory in the first ITPO run without naming the
    option: refused up front with the estimate of the imagined rollout's memory and what the
    machine has."""
    out = tmp_path / "pipe"
    argv = pipeline_args(root, out, "--pipeline.particles", "1000000")
    line = expect_error(capsys, argv, "--pipeline.particles=1000000", "available", out=out)
    assert re.search(r"~[\d.]+ [GTP]B", line), line
    assert len(line) < 400, line


def test_pipeline_stage_config_with_yaml_error(root, ckpts, tmp_path, capsys):
    out = tmp_path / "pipe"
    argv = pipeline_args(root, out, "--pipeline.itpo_config", str(ckpts["bad_yaml"]))
    expect_error(capsys, argv, str(ckpts["bad_yaml"]), "line 4", out=out)


def test_pipeline_out_dir_is_a_file(root, tmp_path, capsys):
    out = tmp_path / "pipe"
    out.write_text("x")
    expect_error(capsys, pipeline_args(root, out), str(out))


@pytest.mark.parametrize("empty", ["", " "])
def test_pipeline_out_dir_empty(empty, root, tmp_path, monkeypatch, capsys):
    """An empty out_dir (an unset shell variable) would put every stage in the working
    directory: refused, nothing written there."""
    from lit_itpo.pipeline import STAGE_CONFIGS, PipelineConfig, check_config

    confs = {k: str(REPO / "conf" / "embedded" / v) for k, v in STAGE_CONFIGS.items()}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="out_dir"):
        check_config(PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=empty, **confs))
    argv = ["pipeline", "--pipeline.dataset_id", DID, "--pipeline.data_dir", str(root),
            "--pipeline.out_dir", empty]  # fmt: skip
    argv += [a for k, v in confs.items() for a in (f"--pipeline.{k}", v)]
    expect_error(capsys, argv, f"--pipeline.out_dir={empty!r}")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_from_another_working_directory(root, tmp_path, monkeypatch, capsys):
    """Run from another folder, the default stage configs (conf/...) were not found and the
    error blamed --pipeline.world_model_config, never passed: they come from the conf/ of the
    repository the package is installed from; where there is none (an installed wheel) one
    line says to run from the repository root or pass the config paths."""
    import lit_itpo.pipeline as pipeline
    from lit_itpo.pipeline import STAGE_CONFIGS, PipelineConfig, check_config

    monkeypatch.chdir(tmp_path)
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=str(tmp_path / "pipe"))
    check_config(cfg)
    for name, file in STAGE_CONFIGS.items():
        assert getattr(cfg, name) == str(REPO / "conf" / "embedded" / file)
    monkeypatch.setattr(pipeline, "REPO_CONF", tmp_path / "no_conf")
    argv = ["pipeline", "--pipeline.dataset_id", DID, "--pipeline.data_dir", str(root),
            "--pipeline.out_dir", str(tmp_path / "pipe")]  # fmt: skip
    line = expect_error(capsys, argv, "conf/embedded/world_model.yaml", "repository root",
                        "--pipeline.world_model_config")  # fmt: skip
    assert "does not exist; pass a stage config" not in line, line
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}  # fmt: skip


def test_pipeline_refuses_an_out_dir_another_run_holds(root, tmp_path, monkeypatch, capsys):
    """Two pipelines on one out_dir at once each trained every stage (tb/version_0 and
    version_1, both exit 0): while one holds the folder's lock the other refuses with one line
    naming the folder and the ways out, and changes nothing; the lock is the run's for as long
    as it runs, also when it fails."""
    from filelock import FileLock

    import lit_itpo.pipeline as pipeline

    def no_stage(*args, **kwargs):
        raise AssertionError("a stage ran while another run held the out_dir")

    monkeypatch.setattr(pipeline, "_fit", no_stage)
    out = tmp_path / "pipe"
    (out / "world_model").mkdir(parents=True)
    (out / "world_model" / "run.json").write_text("{}\n")
    lock = FileLock(out / ".lit-itpo.lock")  # what a running `lit-itpo pipeline` holds
    with lock:
        before = _files(out)
        line = expect_error(capsys, pipeline_args(root, out), str(out), "another", "wait")
        assert "--pipeline.out_dir" in line.split(";", 1)[1], line
        assert _files(out) == before
    seen = []

    def failing_stage(*args, **kwargs):  # the lock is held while the stages run
        with pytest.raises(Exception, match="could not be acquired"):
            FileLock(out / ".lit-itpo.lock", timeout=0).acquire()
        seen.append(True)
        raise ConfigError("stage 1 failed; fix it")

    monkeypatch.setattr(pipeline, "_fit", failing_stage)
    expect_error(capsys, pipeline_args(root, out), "stage 1 failed")
    assert seen == [True]
    with FileLock(out / ".lit-itpo.lock", timeout=0):  # released on the error
        pass


def test_gain_interval_needs_enough_paired_episodes():
    """A bootstrap interval over 1 (or a few) paired episodes has zero (or no real) width: below
    MIN_PAIRED_EPISODES it is n/a (NaN; None in results.json), and the table says why."""
    from lit_itpo.pipeline import format_table
    from lit_itpo.stats import MIN_PAIRED_EPISODES, paired_gain_ci

    assert MIN_PAIRED_EPISODES == 5
    for n in range(MIN_PAIRED_EPISODES):
        assert all(np.isnan(paired_gain_ci([1.0, -2.0, 0.5, 3.0][:n] or [])))
    lo, hi = paired_gain_ci([1.0, -2.0, 0.5, 3.0, 2.0])
    assert np.isfinite(lo) and np.isfinite(hi) and lo < hi
    score = {"normalized_score": 10.0, "return_mean": -500.0, "length_mean": 200.0}
    res = {
        "dataset_id": DID,
        "config": {"num_episodes": 1, "max_episode_steps": 200, "eval_seed": 7},
        "base": score,
        "itpo_diffusion": score | {
            "world_model": "diffusion", "alpha": 1e-3, "fell_back": False, "gain": 1.5,
            "gain_ci": [None, None], "gain_unit": "normalised score", "ms_per_step": 3.0,
            "nfe_per_step": 10, "ascent_rate": 0.5,
        },
    }  # fmt: skip
    table = format_table(res)
    assert "+1.5 [n/a]" in table
    assert "95% CI n/a: fewer than 5 paired episodes (1 evaluation episode;" in table, table


def _wm_overrides() -> dict:
    overrides = {k[2:]: yaml.safe_load(v) for k, v in zip(WM[::2], WM[1::2], strict=True)}
    return overrides | {"model.init_args.hidden": [16, 16], "data.batch_size": 32,
                        "trainer.enable_progress_bar": False}  # fmt: skip


def test_pipeline_refuses_a_stage_of_another_budget_or_seed(root, tmp_path):
    """A stage's run of another budget, smaller or larger, or another seed is neither passed off
    as the one asked nor continued: one error naming the options and the way out, which
    ``--pipeline.restart`` takes; a run of the same inputs it leaves alone."""
    from dataclasses import replace

    from lit_itpo.pipeline import PipelineConfig, _fit

    out = tmp_path / "pipe"
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=str(out))
    conf = "conf/embedded/world_model.yaml"
    _fit(cfg, out, "world_model", conf, 5, _wm_overrides())
    for steps, seed, named in (
        (3, 0, "--pipeline.world_model_steps 5 -> 3"),
        (8, 0, "--pipeline.world_model_steps 5 -> 8"),
        (5, 1, "--pipeline.seed 0 -> 1"),
    ):
        with pytest.raises(ConfigError) as e:
            _fit(replace(cfg, seed=seed), out, "world_model", conf, steps, _wm_overrides())
        msg = str(e.value)
        assert named in msg and "--pipeline.restart world_model" in msg, msg
        assert "--pipeline.out_dir" in msg and str(out / "world_model") in msg, msg
    again = _fit(
        replace(cfg, restart=["world_model"]), out, "world_model", conf, 3, _wm_overrides()
    )
    assert torch.load(again.checkpoint, weights_only=True)["global_step"] == 3
    assert len(list((out / "world_model").glob("tb/version_*"))) == 1  # the old run is gone
    stamp = again.checkpoint.stat().st_mtime_ns
    again = _fit(replace(cfg, restart="all"), out, "world_model", conf, 3, _wm_overrides())
    assert again.checkpoint.stat().st_mtime_ns == stamp  # the same inputs: reused, not redone


def test_collect_bad_arguments(tmp_path, capsys):
    expect_error(capsys, ["collect", "--config", str(tmp_path / "c.yaml")], "c.yaml")
    expect_error(capsys, ["collect", "--collect.nope", "1"], "--collect.nope")


# --- collect: what a killed writer leaves is cleaned by the next write -----------------------
def test_collect_cleans_a_killed_writers_temp_dir(root, tmp_path):
    from lit_itpo.collect.recipes import uniform_policy

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".tmp-{dead.pid}-abc" / "test" / "x-v0" / "data"
    stale.mkdir(parents=True)
    (stale / "main_data.hdf5").write_bytes(b"partial")
    old_style = tmp_path / ".tmp-k2j3h4"  # before temp names carried the writer's pid
    old_style.mkdir()
    live = tmp_path / f".tmp-{os.getpid()}-live"  # a writer still running: kept
    live.mkdir()
    eps = rollout_episodes(
        lambda: gym.make("Pendulum-v1"), uniform_policy("Pendulum-v1", 0), n_steps=40, n_envs=1
    )
    write_dataset("test/pendulum/tiny-v0", eps, "Pendulum-v1", data_dir=tmp_path)
    left = sorted(p.name for p in tmp_path.glob(".tmp-*"))
    assert left == [live.name]
    assert (tmp_path / "test/pendulum/tiny-v0/data").is_dir()


# --- interruptions: SIGTERM and kill -9, then the resume command -----------------------------
def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MUJOCO_GL": "disable"}


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LIT_ITPO, *argv], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300
    )


INJECT = "--trainer.callbacks+=tests.fault_helpers.SignalAt"
AT = "--trainer.callbacks.init_args."
STAGE = ("conf/embedded/rebrac.yaml", *EVAL)


def _weights(ckpt: Path) -> dict:
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {"step": blob["global_step"], **blob["state_dict"]}


@pytest.fixture(scope="module")
def uninterrupted(root, tmp_path_factory):
    """The reference: a 13-step ReBRAC run (validations at 4, 8, 12; final step 13)."""
    out = tmp_path_factory.mktemp("faults_ref")
    main(args_for("fit", STAGE[0], root, out, *STAGE[1:], steps=13))
    return _weights(_ckpt(out))


def _assert_same_run(ckpt: Path, ref: dict) -> None:
    got = _weights(ckpt)
    assert got["step"] == ref["step"] == 13
    for k, v in ref.items():
        if k != "step":
            assert torch.equal(got[k], v), k


@pytest.mark.parametrize(
    "how",
    [
        (f"{AT}step", "6"),  # SIGTERM between validations
        (f"{AT}validation", "2"),  # SIGTERM during a validation
        (f"{AT}step", "10", f"{AT}sig", "KILL"),
        # Ctrl-C inside an update (before batch 7's first optimizer step): it still stops at
        # the batch's end (Lightning's own handling stops there and then, exit 1, no resume line)
        (f"{AT}step", "6", f"{AT}sig", "INT", f"{AT}mid_step", "true"),
        (f"{AT}validation", "2", f"{AT}sig", "INT"),  # Ctrl-C during a validation
    ],
    ids=["sigterm", "sigterm-in-validation", "kill-9", "sigint-mid-update", "sigint-in-validation"],
)
def test_interrupted_fit_resumes_to_the_same_run(how, root, uninterrupted, tmp_path):
    out = tmp_path / "run"
    argv = args_for("fit", STAGE[0], root, out, *STAGE[1:], steps=13)
    stopped = run_cli([*argv, INJECT, *how])
    kill = "KILL" in how
    sig = signal.SIGINT if "INT" in how else signal.SIGTERM
    assert stopped.returncode == (-signal.SIGKILL if kill else 128 + sig), stopped.stderr[-2000:]
    resume = [*argv, INJECT, *how, "--ckpt_path", "last"]
    if not kill:  # the one line names the saved checkpoint and exactly the command to resume
        assert "Traceback" not in stopped.stderr
        lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("lit-itpo:")]
        assert len(lines) == 1 and f"stopped by {sig.name} at step" in lines[0], stopped.stderr
        if "mid_step" in how[-2]:
            assert "at step 7 " in lines[0]  # the update it fell in was finished, then saved
        assert str(out / "tb/version_0/checkpoints/last.ckpt") in lines[0]
        assert lines[0].split("resume with: ", 1)[1] == shlex.join(["lit-itpo", *resume])
    resume = [*argv, "--ckpt_path", "last"]  # that command without the test's signal
    done = run_cli(resume)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]  # same run dir
    _assert_same_run(_ckpt(out), uninterrupted)


def test_pipeline_stage_stopped_by_ctrl_c_resumes_to_the_same_weights(root, tmp_path, monkeypatch):
    """A pipeline stage stopped by Ctrl-C (here inside an update) saves at the batch's end, and
    the rerun resumes it to the uninterrupted stage's weights, bit for bit."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lit_itpo.pipeline import PipelineConfig, _fit
    from lit_itpo.stages import StageSpec

    conf = "conf/embedded/world_model.yaml"
    ref_out, out = tmp_path / "ref", tmp_path / "pipe"
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=str(out))
    ref = _fit(cfg, ref_out, "world_model", conf, 8, _wm_overrides())
    to_config = StageSpec.to_config

    def with_ctrl_c(spec):  # the signal from inside the run, as a callback (not an input)
        cfg = to_config(spec)
        inject = {"class_path": "tests.fault_helpers.SignalAt",
                  "init_args": {"step": 3, "sig": "INT", "mid_step": True}}  # fmt: skip
        cfg["trainer"]["callbacks"] = [*(cfg["trainer"].get("callbacks") or []), inject]
        return cfg

    monkeypatch.setattr(StageSpec, "to_config", with_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SIGTERMException):
        _fit(cfg, out, "world_model", conf, 8, _wm_overrides())
    monkeypatch.setattr(StageSpec, "to_config", to_config)
    assert signal.getsignal(signal.SIGINT) is handler  # handed back after the run
    saved = next((out / "world_model").glob("tb/version_0/checkpoints/last.ckpt"))
    assert torch.load(saved, weights_only=True)["global_step"] == 4
    got = _fit(cfg, out, "world_model", conf, 8, _wm_overrides())
    tb = out / "world_model" / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["version_0"]  # resumed in its own run
    assert len(list((tb / "version_0").glob("events.out.tfevents.*"))) == 2  # before + after
    a, b = _weights(got.checkpoint), _weights(ref.checkpoint)
    assert a["step"] == b["step"] == 8 and a.keys() == b.keys()
    for k in b:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


def _inject_signal(monkeypatch, **init_args):
    """Every stage run gets a :class:`tests.fault_helpers.SignalAt` callback (the signal from
    inside the run, not an input); returns the real ``StageSpec.to_config``."""
    from lit_itpo.stages import StageSpec

    to_config = StageSpec.to_config

    def with_signal(spec):
        cfg = to_config(spec)
        inject = {"class_path": "tests.fault_helpers.SignalAt", "init_args": init_args}
        cfg["trainer"]["callbacks"] = [*(cfg["trainer"].get("callbacks") or []), inject]
        return cfg

    monkeypatch.setattr(StageSpec, "to_config", with_signal)
    return to_config


def _only_version_0(tb: Path) -> Path:
    """``tb/version_0``, the one run folder, holding one events file: the rerun's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert sorted(p.name for p in tb.iterdir()) == ["version_0"]
    events = list((tb / "version_0").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert acc.Tags()["scalars"]
    return tb / "version_0"


def test_a_stage_stopped_before_its_first_checkpoint_reruns_in_its_own_version(
    root, tmp_path, monkeypatch
):
    """A fit stage stopped before it saved anything (Ctrl-C twice, kill -9) left tb/version_0
    with its logs, and the rerun (which starts over) logged into a new version_1 beside them:
    it starts over in version_0, which then holds the rerun's events only."""
    from lit_itpo.pipeline import PipelineConfig, _fit
    from lit_itpo.stages import StageSpec

    conf = "conf/embedded/world_model.yaml"
    out = tmp_path / "pipe"
    cfg = PipelineConfig(dataset_id=DID, data_dir=str(root), out_dir=str(out))
    to_config = _inject_signal(monkeypatch, step=2, sig="INT", times=2)
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, out, "world_model", conf, 8, _wm_overrides())
    tb = out / "world_model" / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["version_0"]
    assert not list(tb.rglob("*.ckpt"))  # nothing saved: the rerun starts over
    monkeypatch.setattr(StageSpec, "to_config", to_config)
    got = _fit(cfg, out, "world_model", conf, 8, _wm_overrides())
    assert got.checkpoint.parent.parent == _only_version_0(tb).resolve()
    assert _weights(got.checkpoint)["step"] == 8


def test_a_fit_killed_before_its_first_checkpoint_resumes_in_its_own_version(root, tmp_path):
    """`lit-itpo fit ... --ckpt_path last` after a kill -9 before the first checkpoint (step 4)
    found nothing to resume and started over in a new tb/version_1 beside the killed attempt's
    logs: it starts over in version_0, which then holds the rerun's events and checkpoint."""
    out = tmp_path / "run"
    argv = args_for("fit", "conf/embedded/bc.yaml", root, out)
    killed = run_cli([*argv, INJECT, f"{AT}step", "2", f"{AT}sig", "KILL"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    assert not list(out.rglob("*.ckpt"))
    main([*argv, "--ckpt_path", "last"])
    _only_version_0(out / "tb")
    assert _weights(_ckpt(out))["step"] == 5


def test_an_itpo_evaluation_stopped_by_ctrl_c_reruns_in_its_own_version(
    root, ckpts, tmp_path, monkeypatch
):
    """An ITPO evaluation stopped part-way (SIGTERM, Ctrl-C) is run again by the same command,
    into its own tb/version_0 (not a version_1 beside the stopped one's logs)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lit_itpo.itpo import ITPOConfig
    from lit_itpo.stages import EvalSpec, StageSpec, evaluate

    out = tmp_path / "itpo"
    spec = EvalSpec(
        str(REPO / "conf/embedded/itpo.yaml"), str(out), DID, str(ckpts["bc"]),
        {"diffusion": str(ckpts["wm"])}, ITPOConfig(horizon=2, particles=2),
        data_dir=str(root), episodes=1, max_episode_steps=3, sample_steps=2,
    )  # fmt: skip
    to_config = _inject_signal(monkeypatch, validation=1, sig="INT")
    with pytest.raises(SIGTERMException):
        evaluate(spec)
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    monkeypatch.setattr(StageSpec, "to_config", to_config)
    evaluate(spec)
    assert (_only_version_0(out / "tb") / "itpo_episodes.json").is_file()


def test_every_fit_saves_its_final_step(uninterrupted):
    """13 steps with validation every 4: the run's checkpoint is step 13, not 12."""
    assert uninterrupted["step"] == 13


def test_resume_of_a_finished_run_changes_nothing(root, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    argv = args_for("fit", STAGE[0], root, out, *STAGE[1:], steps=13)
    main(argv)
    main([*argv, "--ckpt_path", "last"])
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["version_0"]
    _assert_same_run(_ckpt(out), uninterrupted)


def test_sigterm_message_for_pipeline_names_the_same_command():
    from lit_itpo.cli import resume_command

    assert resume_command(["pipeline", "--pipeline.out_dir", "a b"]) == (
        "lit-itpo pipeline --pipeline.out_dir 'a b'"
    )
    assert resume_command(["fit", "--config", "c.yaml", "--ckpt_path", "x.ckpt"]) == (
        "lit-itpo fit --config c.yaml --ckpt_path last"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["sigterm", "sigint", "kill-9"]
)
def test_interrupted_pipeline_resumes_to_the_same_results(sig, tiny_pipeline, tmp_path):
    """Stopped while its policy stage trains, the same pipeline command finishes with the
    uninterrupted run's checkpoints (same steps and weights) and results."""
    import json
    import time

    ref_out, ref_args = tiny_pipeline
    out = tmp_path / "pipe"
    i = ref_args.index("--pipeline.out_dir")
    argv = [*ref_args[:i], "--pipeline.out_dir", str(out), *ref_args[i + 2 :]]
    proc = subprocess.Popen(
        [LIT_ITPO, *argv], env=_env(), cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (out / "policy" / "tb").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    err = proc.communicate(timeout=300)[1]
    if sig != signal.SIGKILL and proc.returncode == 128 + sig:
        line = [ln for ln in err.splitlines() if ln.startswith("lit-itpo:")][-1]
        assert f"stopped by {sig.name}" in line and line.endswith(shlex.join(["lit-itpo", *argv]))
    done = run_cli(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    for tb in out.rglob("tb"):  # every run, the stopped one too, in its own version
        assert sorted(p.name for p in tb.iterdir()) == ["version_0"], tb
    got = json.loads((out / "results.json").read_text())
    ref = json.loads((ref_out / "results.json").read_text())
    for stage in ("world_model", "policy", "meanflow"):
        a, b = _weights(got["checkpoints"][stage]), _weights(ref["checkpoints"][stage])
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), (stage, k)
    for key in ("base", "itpo_diffusion", "itpo_meanflow"):
        for metric in ("return_mean", "normalized_score"):
            assert got[key][metric] == pytest.approx(ref[key][metric], rel=1e-6, abs=1e-6)
    assert got["alpha"] == ref["alpha"]
