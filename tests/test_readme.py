"""The README's example commands run as written (on the tiny pipeline's checkpoints, with
episodes shortened and logs sent to a tmp dir), and it stays a product page (<= 12 KB)."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def commands(prefix: str) -> list[list[str]]:
    """Every ``.venv/bin/lit-itpo <prefix> ...`` command of the README's bash blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            words = shlex.split(cmd)
            if words[:2] == [".venv/bin/lit-itpo", prefix]:
                found.append(words[1:])
    return found


def test_readme_is_at_most_12_kb():
    assert len(README.encode()) <= 12 * 1024


def test_readme_validate_commands_run_on_the_pipelines_checkpoints(tiny_pipeline, tmp_path):
    from lit_itpo.cli import main

    out, _ = tiny_pipeline
    found = commands("validate")
    assert len(found) == 2  # the policy alone; base vs ITPO with both world models
    shorter = ["--trainer.callbacks.init_args.max_episode_steps", "3",
               "--trainer.callbacks.init_args.num_episodes", "1",
               "--trainer.default_root_dir", str(tmp_path),
               "--trainer.logger.init_args.save_dir", str(tmp_path),
               "--trainer.enable_progress_bar", "false"]  # fmt: skip
    for argv in found:
        argv = [a.replace("runs/pipeline/lit_itpo/pendulum/medium-v0/s0", str(out)) for a in argv]
        if "conf/pendulum-medium/itpo.yaml" in argv:
            shorter += ["--trainer.callbacks.init_args.itpo.particles", "4"]
        main(argv + shorter)  # raises SystemExit on a bad path or flag


@pytest.mark.parametrize("sub", ["fit", "validate", "pipeline", "collect"])
def test_readme_subcommands_have_help(sub, capsys):
    from lit_itpo.cli import main

    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr()
    assert "usage:" in text.out and "args parameter" not in text.out + text.err
