"""The benchmarks package: reports render from their JSON (the committed files, and synthetic
cells for suites that have not finished anything yet); a real score-suite cell runs through the
local executor and submitit's, is recorded, and is not run again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def test_results_page_renders_every_section_from_committed_json():
    from benchmarks import render_results

    text = render_results.render()
    for title, *_ in render_results.SECTIONS:
        assert f"## {title}" in text
    # the committed JSON is rendered, its recorded commands as they run today
    assert "Command: `python -m benchmarks.policy_quality --steps 20000" in text
    assert "python benchmarks/" not in text


def test_study_pages_and_their_index_render_from_committed_json(tmp_path, monkeypatch):
    """Every study section lands on its page (its table, or "Not run yet"), every page is in
    the index with its question, answer and status, and a superseded study says so on its
    page and in its module's first line."""
    import importlib

    from benchmarks.studies import render

    monkeypatch.setattr(render, "OUT", tmp_path)
    render.main()
    index = (tmp_path / "README.md").read_text()
    pages = {pg for _, pg, *_ in render.STUDY_SECTIONS}
    assert pages <= set(render.INDEX)
    for name, entry in render.INDEX.items():
        text = (tmp_path / f"{name}.md").read_text()
        assert text.startswith(f"# {entry['title']}") and f"]({name}.md)" in index
        for title, pg, *_ in render.STUDY_SECTIONS:
            if pg == name:
                assert f"## {title}" in text and "Traceback" not in text
        module = (
            importlib.import_module(f"benchmarks.studies.{entry['module']}")
            if (render.REPO / "benchmarks" / "studies" / f"{entry['module']}.py").is_file()
            else None
        )
        if entry["superseded"]:
            assert "Superseded:" in text and "superseded" in index
            assert module is not None and module.__doc__.startswith("Superseded")
    assert (
        "Command: `python -m benchmarks.studies.pendulum_exact`"
        in (tmp_path / "pendulum_exact.md").read_text()
    )


@pytest.fixture
def machine():
    return {"cpu": "x", "cores": 2, "torch_threads": 1, "date": "2026-11-24", "commit": "abc"}


def test_score_suite_report_means_over_seeds(machine):
    from benchmarks.studies import score_suite

    def cell(seed, base, diff, mf):
        return {
            "dataset": "hopper-medium", "seed": seed, "base_final": base, "base_best": base + 1,
            "itpo_diffusion": diff, "itpo_meanflow": mf,
            "alpha": {"diffusion": 5e-5, "meanflow": 0.0}, "wall_s": 600.0, "machine": machine,
            "budget": {"policy": "30000 x 256", "world_model": 10000, "meanflow": 10000},
        }  # fmt: skip

    payload = {"cells": {"a": cell(0, 10.0, 12.0, 9.0), "b": cell(1, 20.0, 22.0, 11.0)}}
    row = next(ln for ln in score_suite.report(payload).splitlines() if "hopper-medium |" in ln)
    assert "| 2 | 15.0 ± 5.0 | 16.0 ± 5.0 | 17.0 ± 5.0 | 10.0 ± 1.0 |" in row
    assert "5e-05 / 0, 5e-05 / 0" in row and "| 10 |" in row  # alphas, minutes per cell
    assert "not run yet" in score_suite.report(payload)  # the other datasets
    assert len({ln.count("|") for ln in score_suite.report(payload).splitlines()}) == 1
    gains = score_suite.gain_report(payload).splitlines()  # paired by seed: 2, 2 and -1, -9
    assert "| hopper-medium | 2 | 2.0 ± 0.0 | 2 / 0 / 0 | -5.0 ± 4.0 | 0 / 0 / 2 |" in gains
    assert gains[-1] == "| all cells | 2 | 2.0 ± 0.0 | 2 / 0 / 0 | -5.0 ± 4.0 | 0 / 0 / 2 |"
    one = {"c": cell(2, 30.0, 30.01, 29.0)}  # within 0.05: unchanged
    assert "| 0.0 | 0 / 1 / 0 | -1.0 | 0 / 0 / 1 |" in score_suite.gain_report({"cells": one})
    maze = cell(0, 50.0, 50.0, 50.0) | {"dataset": "pointmaze-umaze"}
    maze["success_rate"] = {"base": 1.0, "itpo_diffusion": 0.8, "itpo_meanflow": 0.9}
    row = next(ln for ln in score_suite.report({"cells": {"m": maze}}).splitlines() if "maze" in ln)
    assert "| 1.00 / 0.80 / 0.90 |" in row and row.count("|") == 12  # as many as the header


def test_alpha_selection_report_sets_one_episode_beside_several(machine):
    from benchmarks.studies import alpha_selection

    def wm(alpha_1, score_1, alpha, score):
        return {"alpha_1": alpha_1, "score_1": score_1, "alpha": alpha, "score": score}

    held = {"5e-07": {"base": 10.0, "diffusion": 11.0, "meanflow": 9.0}}
    cells = {
        "w/s1/x5": {"episodes": 5, "base": 60.0, "machine": machine, "held_out": held,
                    "held_out_1": {"5e-07": {"base": 12.0, "diffusion": 14.0, "meanflow": 12.5}},
                    "diffusion": wm(5e-5, 40.0, 5e-7, 62.0), "meanflow": wm(5e-5, 20.0, 0.0, 60.0)},
        "p/s2/x5": {"episodes": 5, "base": 50.0, "machine": machine, "held_out": held,
                    "diffusion": wm(5e-4, 45.0, 5e-4, 45.0), "meanflow": wm(0.0, 50.0, 0.0, 50.0)},
    }  # fmt: skip
    text = alpha_selection.report({"cells": cells})
    row = next(ln for ln in text.splitlines() if ln.startswith("| w/s1/x5"))
    assert row == "| w/s1/x5 | 5 | 60.0 | 5e-05 → 5e-07 | 40.0 → 62.0 | 5e-05 → 0 | 20.0 → 60.0 |"
    # gains over ReBRAC, paired: diffusion -20, -5 -> +2, -5; MeanFlow -40, 0 -> 0, 0
    assert "diffusion: -12.5 ± 7.5 → -1.5 ± 3.5; meanflow: -20.0 ± 20.0 → 0.0 ± 0.0" in text
    assert "| w/s1/x5 | 5e-07 | 12.0 / 14.0 / 12.5 | 10.0 / 11.0 / 9.0 |" in text
    assert "| p/s2/x5 | 5e-07 | n/a | 10.0 / 11.0 / 9.0 |" in text  # one-episode values absent


def test_score_suite_rerun_report_sets_each_rerun_beside_its_committed_cell(machine, monkeypatch):
    from benchmarks.studies import score_suite

    def cell(base, diff, mf, cpu, alpha=5e-5):
        return {
            "dataset": "pointmaze-umaze", "seed": 2, "base_final": base, "base_best": base + 1,
            "itpo_diffusion": diff, "itpo_meanflow": mf, "machine": machine | {"cpu": cpu},
            "alpha": {"diffusion": alpha, "meanflow": 0.0},
            "accuracy": {"diffusion/state_rmse": 0.137, "meanflow/state_rmse": 0.102},
        }  # fmt: skip

    committed = {
        "pointmaze-umaze/s2": cell(53.6, 42.5, 53.6, "AMD EPYC"),
        "x/s0": cell(1, 1, 1, ""),
    }
    monkeypatch.setattr(score_suite, "load", lambda name: {"cells": committed})
    assert score_suite.rerun_report({"cells": {}}) == "No cell rerun yet."
    rerun = cell(50.6, 52.5, 50.6, "Intel Xeon", alpha=5e-7) | {"data": None}
    rerun["accuracy"] = None  # a rerun whose MeanFlow logs were lost: n/a, not an error
    text = score_suite.rerun_report({"cells": {"pointmaze-umaze/s2": rerun}})
    header, _, row = text.splitlines()[:3]
    assert row.count("|") == header.count("|")
    assert row.startswith("| pointmaze-umaze/s2 | AMD EPYC → Intel Xeon | n/a | 53.6 → 50.6 |")
    assert "| 42.5 → 52.5 | 53.6 → 50.6 | 5e-05 → 5e-07 | 0 → 0 | 0.137 → n/a |" in row
    assert text.endswith("ReBRAC -3.0; diffusion-ITPO 10.0; MeanFlow-ITPO -3.0.")


def test_alpha_selection_runs_only_on_a_suite_run_made_here(tmp_path, monkeypatch):
    """Its one-episode baseline is the run dir's own results.json (the checkpoints at hand), so
    without a finished run here it stops and names the command that makes one."""
    from benchmarks.studies import alpha_selection

    monkeypatch.setattr(alpha_selection, "run_dir", lambda ds, seed: tmp_path / f"{ds}-s{seed}")
    with pytest.raises(SystemExit, match=r"results.json is absent.*--datasets pointmaze-umaze "):
        alpha_selection.cell("pointmaze-umaze/s2", 5)
    with pytest.raises(SystemExit, match="use <dataset>/s<seed>"):
        alpha_selection.cell("pointmaze/2", 5)


def test_score_suite_accuracy_reads_the_meanflow_stage_logs(tmp_path, machine):
    """The world models' errors come from the MeanFlow stage's TensorBoard events (its own
    ``val/*`` and the diffusion model's ``val/diffusion/*``); the report means them over seeds."""
    from torch.utils.tensorboard import SummaryWriter

    from benchmarks.studies import score_suite

    assert score_suite.accuracy(tmp_path) is None  # no MeanFlow stage logs
    w = SummaryWriter(str(tmp_path / "meanflow" / "tb" / "version_0"))
    for step, scale in ((1000, 2.0), (2000, 1.0)):  # the last validation counts
        for i, tag in enumerate(score_suite.ACCURACY_TAGS):
            w.add_scalar(f"val/{tag}", scale * (0.1 + i), step)
            w.add_scalar(f"val/diffusion/{tag}", scale * (0.2 + i), step)
    w.add_scalar("train/tilt/ess", 0.5, 2000)
    w.close()
    acc = score_suite.accuracy(tmp_path)
    assert acc["meanflow/state_rmse"] == pytest.approx(0.1)
    assert acc["diffusion/policy_state_rmse"] == pytest.approx(2.2) and acc["tilt_ess"] == 0.5
    other = {k: (v + 0.2 if k != "tilt_ess" else v) for k, v in acc.items()}
    cells = [{"dataset": "hopper-medium", "accuracy": a} for a in (acc, other, None)]
    text = score_suite.accuracy_report({"cells": dict(enumerate(cells))})
    row = next(ln for ln in text.splitlines() if "hopper-medium" in ln)
    assert row.startswith("| hopper-medium | 2 | 0.300 ± 0.100 | 0.200 ± 0.100 | 1.300 ± 0.100")
    assert row.endswith("| 0.50 ± 0.00 |") and "walker2d" not in text


def test_cost_study_points_change_one_factor_at_a_time():
    from benchmarks.studies import cost_study

    pts = cost_study.points()
    assert len(pts) == len({tuple(p.values()) for p in pts}) == 1 + 2 + 3 + 2
    for p in pts:
        assert sum(p[k] != v for k, v in cost_study.DEFAULT.items()) <= 1


@pytest.mark.parametrize("name", ["corl_td3bc", "corl_iql", "corl_rebrac"])
def test_corl_reference_updates_train_their_actor(name):
    """The CORL peer of policy_speed.py is a working update, not an empty loop: on a toy
    dataset whose best action is known (a = -s[0], reward -(a + s[0])^2) its actor moves
    toward it."""
    import torch
    from tensordict import TensorDict

    from benchmarks import corl_reference

    torch.manual_seed(0)
    n = 4096
    s = torch.randn(n, 3)
    a = (torch.rand(n, 1) * 2 - 1).clamp(-1, 1)
    data = TensorDict(
        {
            "observation": s,
            "action": a,
            "next": {
                "observation": torch.randn(n, 3),
                "reward": -((a + s[:, :1]) ** 2),
                "terminated": torch.ones(n, 1, dtype=torch.bool),  # one-step problem
                "action": torch.rand(n, 1) * 2 - 1,  # ReBRAC's critic penalty reads it
            },
        },
        [n],
    )
    actor, step = getattr(corl_reference, name)(data, torch.zeros(3), torch.ones(3), batch=256)
    probe = torch.linspace(-0.8, 0.8, 9).unsqueeze(-1) * torch.tensor([[1.0, 0.0, 0.0]])

    def err():
        with torch.no_grad():
            return (actor(probe) + probe[:, :1]).abs().mean().item()

    before = err()
    for i in range(1, 601):
        step(i)
    assert err() < 0.5 * before, (before, err())


def test_suite_driver_records_each_cell_and_names_the_failed_ones(tmp_path, monkeypatch):
    """Cells run in parallel; each finished one is recorded as it ends, a failed one does not
    stop the others and is named at the end; a cell finished earlier (its ``cell.json``) is
    recorded without running, unless that file is another command's (another budget)."""
    import argparse

    from benchmarks import cells, common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")

    def fake_run(cell, threads=1):
        if cell.key == "bad":
            raise cells.CellError("bad: exit 2")
        return {"command": cell.command, "wall_s": 1.0, "machine": {"cpu": "here"}}

    monkeypatch.setattr(cells, "run", fake_run)
    mk = lambda key: cells.Cell(key, ("fit", "--x", key), tmp_path / key)  # noqa: E731
    earlier, other = mk("earlier"), mk("other")
    for c, command in ((earlier, earlier.command), (other, "lit-itpo fit --x another")):
        c.run_dir.mkdir()
        c.done_file.write_text(json.dumps({"command": command, "wall_s": 5.0, "machine": {}}))
    p = argparse.ArgumentParser()
    cells.add_executor_args(p)
    args = p.parse_args(["--workers", "2"])
    summarise = lambda c, d: {"wall_s": d["wall_s"], "summary": c.key}  # noqa: E731
    todo = [mk("a"), earlier, other, mk("bad")]
    with pytest.raises(SystemExit, match=r"1 cell\(s\) failed:\nbad: bad: exit 2"):
        cells.run_cells("q", todo, summarise, {"command": "x"}, args)
    got = common.load("q")
    assert got["command"] == "x" and set(got["cells"]) == {"a", "earlier", "other"}
    assert got["cells"]["earlier"] == {
        "wall_s": 5.0, "summary": "earlier", "machine": {}, "configs": {}
    }  # fmt: skip
    assert got["cells"]["other"]["wall_s"] == got["cells"]["a"]["wall_s"] == 1.0


def test_a_cell_makes_what_it_needs_first_and_stops_if_that_fails(tmp_path, monkeypatch):
    """A cell's ``needs`` (a path and the command that makes it, e.g. the gain suite's dataset
    and its ``collect``) run before its command where the path is missing and not where it is
    there; a failed one stops the cell before its command, naming the failed command; the gain
    suite's ``--make-data`` cells need their dataset's collect, that recipe alone."""
    from benchmarks import cells, gain_suite

    bad = ("collect", "--config", str(tmp_path / "nope.yaml"))  # fails at once (exit 2)
    here = tmp_path / "here"
    here.mkdir()
    ok = cells.Cell("ok", ("nope-subcommand",), tmp_path / "ok", needs=((str(here), bad),))
    with pytest.raises(cells.CellError, match="nope-subcommand"):  # its own command ran
        cells.run(ok)
    assert "$ " in (tmp_path / "ok" / "log.txt").read_text()
    assert "collect --config" not in (tmp_path / "ok" / "log.txt").read_text()  # need was there
    missing = cells.Cell("m", ("fit",), tmp_path / "m", needs=((str(tmp_path / "gone"), bad),))
    with pytest.raises(cells.CellError, match="lit-itpo collect --config"):
        cells.run(missing)
    log = (tmp_path / "m" / "log.txt").read_text()
    assert "collect --config" in log and " fit" not in log  # stopped before its command
    assert not missing.done_file.exists()

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    proto = gain_suite.load_protocol()
    cell = gain_suite.make_cell("halfcheetah-medium-replay", 0, proto, tmp_path / "runs", True)
    ((path, argv),) = cell.needs
    assert path == str(tmp_path / "minari" / "lit_itpo/halfcheetah/medium-replay-v0")
    assert argv[:5] == ("collect", "--config", "conf/collect/halfcheetah.yaml",
                        "--collect.recipes", "[medium-replay]")  # fmt: skip
    assert str(tmp_path / "runs" / "behaviour") in argv[6] and argv[-2:] == (
        "--collect.export_dir",
        "null",
    )  # the committed behaviour actors stay as they are
    assert "[diffusion, meanflow, meanflow_reset]" in cell.argv
    assert not gain_suite.make_cell("hopper-medium", 0, proto, tmp_path).needs
    # medium rolls out the committed actor: no SAC run, nothing exported
    ((_, argv),) = gain_suite.make_cell("hopper-medium", 1, proto, tmp_path, True).needs
    assert argv == ("collect", "--config", "conf/collect/hopper.yaml", "--collect.recipes",
                    "[medium]")  # fmt: skip


def test_recorded_cells_name_the_config_values_that_changed_since(tmp_path, monkeypatch, capsys):
    """A recorded cell keeps its configs' digests (the results file their values); when a config
    changes afterwards, rerunning the suite names the cell, the file and each changed value,
    and a strict suite (the gain suite) refuses to add cells under other configs."""
    import argparse

    from benchmarks import cells, common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    conf = tmp_path / "rebrac.yaml"
    conf.write_text("model:\n  init_args: {beta_actor: 0.001, hidden: [256, 256]}\n")
    monkeypatch.setattr(
        cells, "run", lambda c, threads=1: {"command": c.command, "wall_s": 1.0, "machine": {}}
    )
    p = argparse.ArgumentParser()
    cells.add_executor_args(p)
    args = p.parse_args([])
    mk = lambda key: cells.Cell(key, ("fit", "--config", str(conf)), tmp_path / key)  # noqa: E731
    summarise = lambda c, d: {"summary": c.key}  # noqa: E731
    cells.run_cells("q", [mk("a")], summarise, {}, args)
    got = common.load("q")
    digest = got["cells"]["a"]["configs"][str(conf)]
    assert got["configs"][digest]["model.init_args.beta_actor"] == 0.001
    capsys.readouterr()
    cells.run_cells("q", [mk("a"), mk("b")], summarise, {}, args)  # unchanged: no word
    assert "other configs" not in capsys.readouterr().out

    conf.write_text("model:\n  init_args: {beta_actor: 0.01, hidden: [256, 256]}\n")
    cells.run_cells("q", [mk("a"), mk("b"), mk("c")], summarise, {}, args)
    out = capsys.readouterr().out
    assert f"a: {conf}: model.init_args.beta_actor: 0.001 -> 0.01" in out
    assert "c" in common.load("q")["cells"]  # not strict: run, with today's configs recorded
    with pytest.raises(SystemExit, match="A changed config is a new suite"):
        cells.run_cells("q", [mk("a"), mk("d")], summarise, {}, args, strict=True)
    assert "d" not in common.load("q")["cells"]


def test_a_whole_run_benchmark_runs_once_and_out_runs_it_again_beside_it(
    tmp_path, monkeypatch, capsys
):
    """A benchmark whose file is one whole run (the speed tables): where its results file
    exists nothing is measured and the run says so; ``--out NAME`` measures again into
    ``NAME.json`` beside it, naming the config values changed since the committed file; the
    recorded command names no path of this machine."""
    import argparse

    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "REPO", tmp_path)
    (tmp_path / "conf").mkdir()
    conf = tmp_path / "conf" / "rebrac.yaml"
    conf.write_text("model:\n  init_args: {beta_actor: 0.001}\n")
    calls = []

    def measure():
        calls.append(1)
        command = f"python -m benchmarks.x --data {Path.home()}/d {tmp_path}/y"
        return {"rate": 1.0, "command": command}

    first = common.run_once("speed", measure, ["conf/rebrac.yaml"])
    assert calls == [1] and first["command"] == "python -m benchmarks.x --data ~/d y"
    assert first["configs"]["conf/rebrac.yaml"]["model.init_args.beta_actor"] == 0.001
    assert "speed: 0 of 1 cells recorded, 1 to run" in capsys.readouterr().out
    assert common.run_once("speed", measure, ["conf/rebrac.yaml"]) is None  # recorded: no run
    out = capsys.readouterr().out
    assert calls == [1] and "speed: 1 of 1 cells recorded, 0 to run" in out and "--out" in out

    conf.write_text("model:\n  init_args: {beta_actor: 0.01}\n")
    ap = argparse.ArgumentParser()
    common.add_out_arg(ap, "speed")
    name = ap.parse_args(["--out", "speed_rerun.json"]).out
    assert name == "speed_rerun"
    common.run_once(name, measure, ["conf/rebrac.yaml"], committed="speed")
    out = capsys.readouterr().out
    assert calls == [1, 1] and (tmp_path / "results" / "speed.json").is_file()
    assert "conf/rebrac.yaml: model.init_args.beta_actor: 0.001 -> 0.01" in out
    rerun = common.load("speed_rerun")["configs"]["conf/rebrac.yaml"]
    assert rerun["model.init_args.beta_actor"] == 0.01
    assert common.load("speed")["rate"] == 1.0  # the committed file untouched


def test_a_missing_input_names_the_command_that_makes_it(tmp_path, monkeypatch):
    """A benchmark on trained checkpoints (or a local dataset) that is missing stops with one
    line naming the flag, the path and the ``lit-itpo`` command that makes it."""
    from benchmarks import common

    monkeypatch.setattr(common, "REPO", tmp_path)
    with pytest.raises(SystemExit) as exc:
        common.require_checkpoints(
            "ascent_rate", "lit_itpo/hopper/medium-v0", {"--policy": "nowhere/last.ckpt"}
        )
    line = str(exc.value)
    assert line.startswith("ascent_rate: --policy nowhere/last.ckpt is missing; make it with: ")
    assert "lit-itpo pipeline --pipeline.dataset_id lit_itpo/hopper/medium-v0" in line
    assert "runs/pipeline/hopper-medium-s0/policy/tb/version_0/checkpoints/last.ckpt" in line
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "last.ckpt").write_bytes(b"")
    common.require_checkpoints("x", "lit_itpo/hopper/medium-v0", {"--policy": "nowhere/last.ckpt"})
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with pytest.raises(SystemExit, match="make it with: lit-itpo collect --config conf/collect/"):
        common.require_dataset("x", "lit_itpo/hopper/medium-v0")


# A score-suite cell at a budget of a few updates on the embedded sample (found, like the
# suite's datasets, under $MINARI_DATASETS_PATH), one short episode, one alpha.
TINY_SUITE = [
    "--datasets", "embedded", "--seeds", "0",
    "--world-model-steps", "2", "--policy-steps", "2", "--meanflow-steps", "2",
    "--batch", "32", "--eval-every", "2", "--particles", "4",
    "--episodes", "1", "--max-episode-steps", "5", "--alpha-grid", "[5e-5]",
]  # fmt: skip


def test_score_suite_cell_runs_once_and_resumes_through_submitit(tmp_path, monkeypatch):
    """One real cell through the local parallel executor: its command runs, its ``cell.json``
    and the pipeline's ``results.json`` appear and the cell is recorded; running the suite again
    runs nothing; a cell finished but not recorded (a stopped driver) is recorded from its
    ``cell.json``; a job handed a finished cell returns its record without running. Then the
    same cell stopped before its end, rerun through submitit's local executor (the SLURM path
    without a cluster): its command runs again and resumes (no stage is trained again)."""
    from benchmarks import cells, common
    from benchmarks.studies import score_suite
    from lit_itpo.data.minari_io import EMBEDDED_ROOT

    monkeypatch.chdir(common.REPO)  # the jobs import `benchmarks` from the repository root
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setitem(score_suite.DATASETS, "embedded", "lit_itpo/halfcheetah/medium-small-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(EMBEDDED_ROOT))
    argv = [*TINY_SUITE, "--runs", str(tmp_path / "runs"), "--workers", "2"]
    score_suite.main(argv)

    run = tmp_path / "runs" / "embedded-s0"
    done = json.loads((run / "cell.json").read_text())
    cell = common.load("studies/score_suite")["cells"]["embedded/s0"]
    job = score_suite.make_cell("embedded", 0, score_suite.parse_args(argv))
    assert cell["command"] == done["command"] == job.command
    assert "--pipeline.policy_steps 2" in cell["command"] and (run / "results.json").is_file()
    results = json.loads((run / "results.json").read_text())
    assert cell["base_final"] == results["base"]["normalized_score"]
    assert cell["alpha"] == results["alpha"] and cell["wall_s"] == done["wall_s"] > 0
    assert cell["machine"] == done["machine"] and cell["budget"]["particles"] == 4
    log = (run / "log.txt").read_text()
    assert log.count("\n$ ") == 1

    score_suite.main(argv)  # recorded: nothing runs
    common.save("studies/score_suite", {"cells": {}})  # finished, not recorded: recorded, not run
    score_suite.main(argv)
    assert (run / "log.txt").read_text() == log
    assert common.load("studies/score_suite")["cells"]["embedded/s0"] == cell
    assert cells.run(job) == done and (run / "log.txt").read_text() == log

    # stopped after its stages, before the pipeline's results: the same command finishes it
    stamps = {k: Path(p).stat().st_mtime_ns for k, p in results["checkpoints"].items()}
    for name in ("cell.json", "results.json"):
        (run / name).unlink()
    common.save("studies/score_suite", {"cells": {}})
    score_suite.main(
        [*argv, "--executor", "submitit-local", "--submitit-dir", str(tmp_path / "submitit")]
    )
    assert (run / "log.txt").read_text().count("\n$ ") == 2
    assert {k: Path(p).stat().st_mtime_ns for k, p in results["checkpoints"].items()} == stamps
    again = common.load("studies/score_suite")["cells"]["embedded/s0"]
    assert again["base_final"] == cell["base_final"] and again["alpha"] == cell["alpha"]
    assert json.loads((run / "cell.json").read_text())["wall_s"] == again["wall_s"]
    assert any((tmp_path / "submitit" / "studies" / "score_suite").iterdir())  # through submitit


def test_policy_speed_harness_times_fresh_weights_and_counts_flops():
    """Each timed update gets its own autocast region (one region around the loop would keep
    matmuls on the first bfloat16 copy of the weights), and FLOPs are counted per update."""
    import torch

    from benchmarks import policy_speed

    lin = torch.nn.Linear(8, 8, bias=False)
    opt = torch.optim.SGD(lin.parameters(), 0.1)
    x, outs = torch.randn(4, 8), []

    def update(i: int) -> None:
        y = lin(x)
        outs.append(y.detach().float())
        y.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    policy_speed.timed_rate(update, steps=4, precision="bf16-mixed", warmup=1)
    assert outs[0].dtype == torch.float32 and not torch.equal(outs[-1], outs[-2])
    # forward x @ W^T and the weight gradient: 2 x (2 * 4 * 8 * 8); x needs no gradient
    assert policy_speed.update_flops(update, warmup=1, count=2) == 2 * 2 * 4 * 8 * 8


def test_meanflow_mixture_reference_map_is_the_mixtures_quantile_map():
    """The reference row's target pushes N(0, 1) onto the test's mixture: monotone, the minority
    share below the gap, each mode's mean and spread."""
    import torch

    from benchmarks.studies import meanflow_mixture

    eps = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0))
    for cv in (-0.5, 0.5):
        x = meanflow_mixture.quantile_map(torch.full_like(eps, cv), eps).squeeze(-1)
        low = x < cv / 2
        assert abs(low.float().mean().item() - (0.3 + 0.2 * cv)) < 0.005
        assert abs(x[low].mean().item() - (-1.5 + cv / 2)) < 0.01
        assert abs(x[~low].std().item() - 0.3) < 0.01
    grid = torch.linspace(-3, 3, 101)[:, None]
    assert (meanflow_mixture.quantile_map(torch.zeros_like(grid), grid).diff(dim=0) > 0).all()


def test_meanflow_mixture_oracle_velocity_is_the_conditional_mean():
    """``marginal_velocity`` is E[eps - x | z_t, c]: the residual of the sampled velocity is
    uncorrelated with functions of (z_t, c) at several t; the mean of another c is not."""
    import torch

    from benchmarks.studies import meanflow_mixture

    torch.manual_seed(0)
    c, x = meanflow_mixture.mixture(400_000)
    eps = torch.randn_like(x)
    for tv in (0.1, 0.5, 0.9):
        t = torch.full_like(x, tv)
        z = (1 - t) * x + t * eps
        res = eps - x - meanflow_mixture.marginal_velocity(z, t, c)
        for g in (torch.ones_like(z), z, z**2, torch.tanh(3 * z), c, c * z):
            assert abs((res * g).mean().item()) < 0.01, (tv, g[:2])
    wrong = eps - x - meanflow_mixture.marginal_velocity(z, t, -c)  # another condition's mean
    assert abs((wrong * c).mean().item()) > 0.05


def test_meanflow_quality_report_groups_by_dataset_and_names_each_variant(machine):
    from benchmarks import meanflow_quality

    def cell(dataset, variant, seed, rmse):
        out = {"dataset": dataset, "variant": variant, "updates": 20000, "batch": 256}
        out |= {"seed": seed, "tilt_eta": 0.25, "tilt_ess": 0.5, "machine": machine}
        for tag in meanflow_quality.TAGS:
            out[f"meanflow/{tag}"], out[f"diffusion/{tag}"] = rmse, 1.0
        return out

    cells = [
        cell("hc-m", "eta0", 0, 0.8),
        cell("hc-mr", "eta0", 0, 2.0),
        cell("hc-m", "eta0_model_velocity", 0, 0.9),
        cell("hc-m", "eta0", 1, 0.85),
    ]
    rows = meanflow_quality.report({"cells": dict(enumerate(cells))}).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| hc-m"] * 4 + ["| hc-mr"] * 2
    assert "diffusion" in rows[0] and "diffusion" in rows[4]  # once per dataset
    assert "target velocity u(z, t, t)" in rows[2] and "0.900" in rows[2]
    assert rows[3].endswith("20k x 256, seed 1 |") and rows[1].endswith("20k x 256 |")
    assert set(meanflow_quality.VARIANTS) >= {"eta0", "tilted", "eta0_model_velocity"}


def test_ascent_rate_true_objective_is_the_simulator_from_the_observed_state():
    """The J_true the ascent-rate benchmark differentiates (``lit_itpo.ascent``) sets MuJoCo to
    a real observation (x position 0) and rolls the policy H steps there: it equals a plain
    gymnasium rollout from the same state plus the critic's discounted value, which is what the
    benchmark's terminal-value share takes as J_true minus J_true without the critic."""
    import gymnasium as gym
    import numpy as np
    import torch

    from lit_itpo.ascent import TrueObjective
    from lit_itpo.nets import TanhActor, TwinCritic

    torch.manual_seed(0)
    actor, critic = TanhActor(17, 6, [-1.0] * 6, [1.0] * 6, [16]), TwinCritic(17, 6, [16])
    spec, horizon, gamma = gym.spec("HalfCheetah-v5").to_json(), 4, 0.9
    j, no_value = (TrueObjective(spec, actor, c, horizon, gamma) for c in (critic, None))
    env = gym.make("HalfCheetah-v5").unwrapped
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    assert j.set_state(obs) < 1e-12
    params = {k: v.detach() for k, v in j.actor.named_parameters()}
    total = j(params, obs)
    s, manual = obs, 0.0
    with torch.no_grad():
        for i in range(horizon):
            a = j.actor(torch.as_tensor(s)[None])[0].numpy()
            s, r, *_ = env.step(a)
            manual += gamma**i * r
        o = torch.as_tensor(s)[None]
        q = gamma**horizon * float(j.critic(o, j.actor(o)).min(0).values)
    assert np.isclose(total, manual + q, rtol=1e-9)
    assert np.isclose(total - no_value(params, obs), q, rtol=1e-6)


def test_simulator_step_jacobian_predicts_a_small_step():
    """The simulator's one-step derivatives in (state, action) predict where a small joint
    perturbation of both lands, to first order (columns in the right order, both parts)."""
    import gymnasium as gym
    import numpy as np

    from lit_itpo.ascent import TrueObjective
    from lit_itpo.nets import TanhActor

    actor = TanhActor(17, 6, [-1.0] * 6, [1.0] * 6, [16])
    sim = TrueObjective(gym.spec("HalfCheetah-v5").to_json(), actor, None, 1, 1.0)
    env = gym.make("HalfCheetah-v5").unwrapped
    obs, _ = env.reset(seed=5)
    for _ in range(10):
        obs, *_ = env.step(env.action_space.sample())
    a = np.full(6, 0.3)
    j, jr = sim.step_jacobian(obs, a, h=1e-6)
    assert j.shape == (17, 23) and jr.shape == (23,)
    rng = np.random.default_rng(0)
    d = 1e-5 * rng.standard_normal(23)

    def step(x):
        sim.set_state(x[:17])
        s, r, *_ = sim.sim.step(x[17:])
        return s, r

    x0 = np.concatenate([obs, a])
    (s0, r0), (s1, r1) = step(x0), step(x0 + d)
    assert np.linalg.norm(s1 - s0 - j @ d) < 0.05 * np.linalg.norm(s1 - s0)
    assert abs(r1 - r0 - jr @ d) < 0.05 * abs(r1 - r0)


def test_action_jacobian_layout_and_scores():
    """A model's derivatives come out in the simulator's layout (state columns, then action),
    and the scores are exact for a model equal to the simulator, lower for a wrong one."""
    import numpy as np
    import torch

    from benchmarks.studies.action_jacobian import compare, model_jacobians

    torch.manual_seed(0)
    A, B, w = torch.randn(3, 2), torch.randn(3, 3), torch.randn(2)
    j, jr = model_jacobians(
        lambda o, a: o + B @ o + A @ a, lambda o, a: (w * a).sum(), torch.ones(3), torch.zeros(2)
    )
    assert torch.allclose(j, torch.cat([torch.eye(3) + B, A], 1)) and torch.allclose(jr[3:], w)
    scale = np.array([1.0, 2.0, 0.5])
    j64 = j.double().numpy()
    same = compare(j, jr, j64, jr.numpy(), scale)
    assert np.array_equal(j64, j.double().numpy())  # the caller's arrays stay as they were
    assert np.isclose(same["action_cosine"], 1) and np.isclose(same["state_cosine"], 1)
    assert same["action_relative_error"] < 1e-6 and np.isclose(same["reward_cosine"], 1)
    flipped = compare(torch.cat([torch.eye(3) - B, -A], 1), -jr, j.numpy(), jr.numpy(), scale)
    assert np.isclose(flipped["action_cosine"], -1) and np.isclose(flipped["state_cosine"], -1)
    assert np.isclose(flipped["reward_cosine"], -1) and np.isnan(
        compare(j, None, j, jr, scale)["reward_cosine"]
    )


def test_ascent_rate_table_names_each_world_models_updates_and_lr():
    from benchmarks.studies import ascent_rate

    row = {
        "ascent_rate": 0.6,
        "states": 200,
        "random_direction_sign_agreement": 0.5,
        "predicted_over_true_slope_median": 0.3,
        "terminal_value_share_of_j_true": 0.8,
    }
    cell = {"dataset_id": "d", "policy_updates": 10000, "settings": {"sample_steps": 5,
            "particles": 64, "h": 1e-3}, "lr": {"diffusion": 1e-3, "meanflow": 3e-4},
            "world_model_updates": {"diffusion": 20000, "meanflow": 5000}, "policy_algo": "IQL",
            "rows": {"diffusion": row | {"action_change_per_unit_alpha_median": 1234.5},
                     "meanflow": row}}  # fmt: skip
    lines = ascent_rate.report({"cells": {"k": cell}}).splitlines()
    assert (
        "| d | IQL 10000 | diffusion (K = 5), lr 0.001 | 20000 | 64 | 200 | 60% (53-67%) |"
        in lines[2]
    )
    assert "| 0.30 | 1.23e+03 | 80% |" in lines[2]  # the step's action change per unit alpha
    assert "| meanflow | 5000 |" in lines[3] and "| 0.30 | n/a | 80% |" in lines[3]
    old = ascent_rate.report(
        {"cells": {"k": {k: v for k, v in cell.items() if k != "world_model_updates"}}}
    )
    assert "| diffusion (K = 5), lr 0.001 | ? |" in old  # a cell recorded before the column
    cell["settings"]["horizon"] = 2
    assert "| diffusion (K = 5), lr 0.001, H 2 | 20000 |" in ascent_rate.report(
        {"cells": {"k": cell}}
    )


def test_behaviour_scores_keep_those_of_datasets_not_on_this_machine(monkeypatch):
    from benchmarks import policy_quality

    recorded = {"behaviour": {"hopper-medium": 38.8, "walker2d-medium": 69.2}, "cells": {}}
    monkeypatch.setattr(policy_quality, "load", lambda out: recorded)
    here = {"lit_itpo/halfcheetah/medium-replay-v0": 19.1}  # the only dataset on this machine
    monkeypatch.setattr(policy_quality, "behaviour_score", here.get)
    scores = policy_quality.behaviour_scores("x", ["halfcheetah-medium-replay", "hopper-medium"])
    assert scores == {
        "hopper-medium": 38.8,
        "walker2d-medium": 69.2,
        "halfcheetah-medium-replay": 19.1,
    }


def test_precision_report_pairs_by_seed():
    from benchmarks import policy_quality

    def cell(seed, prec, final):
        return {"dataset": "d", "algorithm": "A", "seed": seed, "precision": prec, "final": final}

    cells = [cell(0, "32-true", 40.0), cell(0, "bf16-mixed", 38.0), cell(1, "32-true", 50.0),
             cell(1, "bf16-mixed", 54.0), cell(2, "bf16-mixed", 1.0)]  # fmt: skip
    text = policy_quality.paired_precision_report({"cells": dict(enumerate(cells))})
    row = next(ln for ln in text.splitlines() if ln.startswith("| d | A |"))
    assert "| 2 |" in row and "+1.0 [-2.0, +4.0]" in row  # seed 2 has no float32 partner
    one = policy_quality.paired_precision_report({"cells": dict(enumerate(cells[:2]))})
    assert "-2.0 no CI from one pair" in one


def test_main_job_record_and_table(tiny_pipeline):
    """The main job's record (run times from the runs' metrics.json, the results) renders."""
    from benchmarks import main_job

    out, _ = tiny_pipeline
    runs = ["world_model", "policy", "meanflow", "itpo/alpha"]
    runs += [f"itpo/final_{a}" for a in main_job.ARMS]  # Pendulum: the exact arm too
    t0 = min((out / r / "metrics.json").stat().st_mtime for r in runs) - 5.0
    rec = main_job.summarise(out, t0, 100.0, 0.1)
    assert set(rec["run_s"]) == set(runs) and rec["run_s"]["world_model"] >= 5.0
    assert sum(rec["run_s"].values()) <= 100.0
    table = main_job.report({"cells": {"machine x": rec}})
    assert "| ReBRAC (base) |" in table and "MeanFlow WM" in table and "1.7 min" in table
    assert "ITPO, exact dynamics" in table and "share of exact gain" in table


def test_itpo_bases_table():
    from benchmarks.studies import itpo_bases

    cell = {"base": "IQL (20k x 256)", "seed": 0, "alpha": 5e-6, "base_score": 44.1,
            "itpo_score": 45.0, "gain": 0.9, "gain_ci": [-0.2, 2.0],
            "ascent_rate": 0.61}  # fmt: skip
    cells = {"a": cell, "b": cell | {"seed": 1, "alpha": 0, "gain": 0.0, "ascent_rate": None},
             "c": cell | {"base": "BC", "ascent_rate": None}}  # fmt: skip
    table = itpo_bases.report({"cells": cells})
    assert "| IQL (20k x 256) | 0 | 5e-06 | 44.1 | 45.0 | +0.90 [-0.20, +2.00] | 61% |" in table
    assert "| IQL (20k x 256) | 1 | 0 | 44.1 | 45.0 | +0.00 [-0.20, +2.00] | n/a |" in table
    assert "| IQL (20k x 256) | 2 | +0.45 [+0.00, +0.90] | 1 |" in table  # mean over seeds
    assert table.endswith("| BC | 1 | +0.90 (one seed) | 0 |")
    assert set(itpo_bases.BASES) >= {"IQL (20k x 256)"} and itpo_bases.SEEDS == (0, 1, 2)


def test_itpo_horizon_pairs_episodes_with_the_paper_horizon():
    from benchmarks.studies import itpo_horizon

    def cell(seed, h, itpo_returns):
        return {"seed": seed, "horizon": h, "alpha": 5e-5, "base_score": 40.0,
                "itpo_score": 41.0, "gain": 1.0, "gain_ci": [0.0, 2.0], "ascent_rate": 0.7,
                "episode_returns": {"base": [0.0] * 3, "itpo": itpo_returns}}  # fmt: skip

    span = itpo_horizon.REF[1] - itpo_horizon.REF[0]  # 1 normalised point = span / 100
    paper = {f"{itpo_horizon.BASE} s{s}": cell(s, 5, [0.0, 0.0, 0.0]) for s in (0, 1)}
    short = {f"s{s}": cell(s, 2, [span / 100 * x for x in (1, 2, 3)]) for s in (0, 1)}
    text = itpo_horizon.report({"cells": short}, paper)
    assert "| 0 | 5 | 5e-05 |" in text and "| 1 | 2 | 5e-05 |" in text
    assert "over 2 seeds (6 episodes): +2.00 [" in text and "H = 2 wins" in text
    worse = {k: cell(c["seed"], 2, [0.0, -0.01, 0.01]) for k, c in short.items()}
    assert "the paper's H = 5 stays" in itpo_horizon.report({"cells": worse}, paper)
    assert "per episode" not in itpo_horizon.report({"cells": short}, {})  # no H = 5 arm yet


def _gain_cell(
    ds: str, seed: int, diffusion: float, meanflow: float, mf_ms=90.0, d_ms=300.0
) -> dict:
    itpo = {
        m: {"gain": g, "fell_back": g == 0.0, "ms_per_step": ms, "score": 50.0 + g, "alpha": 5e-5}
        for m, g, ms in (("diffusion", diffusion, d_ms), ("meanflow", meanflow, mf_ms))
    }
    return {"dataset": ds, "seed": seed, "base": {"score": 50.0}, "itpo": itpo}


def test_gain_suite_aggregates_paired_gains_per_dataset_and_checks_the_targets():
    """Per dataset and over all cells: the mean gain, its bootstrap interval (stratified over
    datasets), the IQM and fallbacks; each protocol target gets a verdict from those numbers."""
    from benchmarks import gain_suite
    from lit_itpo.stats import stratified_bootstrap_ci

    cells = [_gain_cell("hopper-medium", s, 4.0 + s, 3.5 + s) for s in range(3)]
    cells += [_gain_cell("walker2d-medium", s, -2.0, -0.5, mf_ms=180.0) for s in range(2)]
    agg = gain_suite.aggregate(cells, "diffusion")
    assert agg["hopper-medium"]["mean"] == pytest.approx(5.0)
    assert agg["walker2d-medium"]["mean"] == pytest.approx(-2.0)
    strata = {"hopper-medium": [4.0, 5.0, 6.0], "walker2d-medium": [-2.0, -2.0]}
    assert agg["all"]["ci"] == pytest.approx(list(stratified_bootstrap_ci(strata)))
    assert agg["all"]["mean"] == pytest.approx(11.0 / 5) and agg["all"]["fallbacks"] == 0
    with_fallback = [*cells, _gain_cell("hopper-medium", 3, 1.0, 0.0)]
    assert gain_suite.aggregate(with_fallback, "meanflow")["all"]["fallbacks"] == 1

    proto = gain_suite.load_protocol()
    rows = gain_suite.verdicts(cells, proto["targets"])
    assert [met for _, _, met in rows] == [False, False, False]  # CI crosses 0; walker -2; 42%
    good = [_gain_cell("hopper-medium", s, 4.0 + 0.1 * s, 3.6 + 0.1 * s) for s in range(3)]
    assert [met for _, _, met in gain_suite.verdicts(good, proto["targets"])] == [True] * 3
    # a fallback's final run acted as the base (a few ms): the cost compares the cells where
    # both models ran ITPO, and a model's mean ms leaves out the cells where it fell back
    fell = _gain_cell("walker2d-medium", 0, 0.0, 0.0, mf_ms=2.0, d_ms=3.0)
    assert gain_suite.verdicts([*good, fell], proto["targets"])[2][1].endswith("(90 vs 300 ms)")
    half = _gain_cell("walker2d-medium", 1, 1.0, 0.0, mf_ms=2.0, d_ms=600.0)
    assert gain_suite.ms_per_step([*good, half], "diffusion") == 375.0
    assert gain_suite.ms_per_step([*good, half], "meanflow") == 90.0
    assert gain_suite.verdicts([*good, half], proto["targets"])[2][1].endswith("(90 vs 300 ms)")
    assert "cost n/a" in gain_suite.verdicts([fell], proto["targets"])[2][1]
    text = gain_suite.report({"protocol": proto, "cells": {str(i): c for i, c in enumerate(cells)}})
    assert "| hopper-medium | 3 | 50.0 (102.0) | +5.00 [" in text
    assert "| halfcheetah-medium | 0 | not run yet |" in text
    assert "<sup>ep</sup>" not in text  # every dataset run has several seeds
    one = _gain_cell("halfcheetah-medium", 0, 1.5, 0.5)
    one["itpo"]["diffusion"]["gain_ci"] = [0.25, 2.75]
    one["itpo"]["meanflow"]["gain_ci"] = [None, None]  # too few episodes for one
    text = gain_suite.report({"protocol": proto, "cells": {"a": one}})
    row = next(ln for ln in text.splitlines() if ln.startswith("| halfcheetah-medium |"))
    assert "+1.50 [+0.25, +2.75]<sup>ep</sup>; +1.50 | +0.50; +0.50 |" in row
    assert "over that cell's 20 paired episodes" in text
    # one cell per dataset: no interval over the suite (a point would never cross 0), and the
    # targets wait for the whole suite
    two = {"a": one, "b": _gain_cell("walker2d-medium", 0, 9.0, 8.0)}
    assert gain_suite.aggregate(list(two.values()), "diffusion")["all"]["ci"] is None
    assert gain_suite.verdicts(list(two.values()), proto["targets"])[0][2] is None
    text = gain_suite.report({"protocol": proto, "cells": two})
    assert "(no interval: a dataset has one cell) | pending (2 of 12 cells; so far: n/a) |" in text


def test_gain_suite_cell_counts_the_runs_it_took(tmp_path):
    """A cell resumed by later runs says so: its wall time is the last run's alone."""
    from benchmarks import gain_suite

    log = tmp_path / "log.txt"
    assert gain_suite.invocations(log) == 1  # no log: the one run that recorded it
    log.write_text("\n$ python -m lit_itpo collect --config c.yaml\n"
                   + "\n$ python -m lit_itpo pipeline --a 1\nstep 3\n" * 3)  # fmt: skip
    assert gain_suite.invocations(log) == 3


def test_gain_suite_runs_its_protocol_and_refuses_another(tmp_path, monkeypatch):
    """A one-cell protocol (embedded sample, tiny budgets) runs through the real pipeline and is
    recorded in the suite's schema with the protocol; the same results under a changed protocol
    are refused."""
    import yaml

    from benchmarks import common, gain_suite
    from benchmarks.studies import score_suite
    from lit_itpo.data.minari_io import EMBEDDED_ROOT

    monkeypatch.chdir(common.REPO)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setitem(score_suite.DATASETS, "embedded", "lit_itpo/halfcheetah/medium-small-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(EMBEDDED_ROOT))
    proto = yaml.safe_load(gain_suite.PROTOCOL.read_text())
    proto["datasets"], proto["seeds"] = ["embedded"], [0]
    proto["budget"] |= {"world_model_steps": 2, "policy_steps": 2, "meanflow_steps": 2}
    proto["budget"] |= {"policy_batch_size": 32, "policy_eval_every": 2, "policy_eval_episodes": 1}
    proto["itpo"] |= {"particles": 4, "alpha_grid": [5e-5], "alpha_episodes": 1}
    proto["evaluation"] = {"episodes": 2, "max_episode_steps": 5}
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(proto))
    argv = ["--protocol", str(path), "--runs", str(tmp_path / "runs")]
    gain_suite.main(argv)

    payload = common.load("gain_suite")
    cell = payload["cells"]["embedded/s0"]
    res = json.loads((tmp_path / "runs" / "embedded-s0" / "results.json").read_text())
    assert payload["protocol"] == gain_suite.load_protocol(path)
    assert cell["base"] == {
        "algo": "rebrac", "score": res["base"]["normalized_score"], "updates": 2, "batch": 32,
        "length_mean": res["base"]["length_mean"],
    }  # fmt: skip
    for m in ("diffusion", "meanflow"):
        assert cell["itpo"][m]["gain"] == res[f"itpo_{m}"]["gain"]
        assert cell["itpo"][m]["alpha"] == res[f"itpo_{m}"]["alpha"]
    assert res["config"]["num_episodes"] == 2 and res["config"]["alpha_grid"] == [5e-5]
    assert "--pipeline.policy_batch_size 32" in cell["command"]
    # every arm of the protocol, the reset arm on its own rule, the same base episodes
    assert set(cell["itpo"]) == {"diffusion", "meanflow", "meanflow_reset"}
    assert res["itpo_meanflow_reset"]["reset_every_step"] is True
    assert res["itpo_meanflow"]["reset_every_step"] is False
    assert set(cell["configs"]) >= {"conf/embedded/itpo.yaml"}
    # the threads the cell ran with (not the driver's), in one run
    assert cell["machine"]["torch_threads"] == int(os.environ.get("OMP_NUM_THREADS", 1))
    assert cell["invocations"] == 1

    # stopped after its stages, before its results: the same command finishes it, the
    # trained stages reused, the same result recorded
    run = tmp_path / "runs" / "embedded-s0"
    stamps = {k: Path(p).stat().st_mtime_ns for k, p in res["checkpoints"].items()}
    for name in ("cell.json", "results.json"):
        (run / name).unlink()
    common.save("gain_suite", {k: v for k, v in payload.items() if k != "cells"} | {"cells": {}})
    gain_suite.main(argv)
    assert {k: Path(p).stat().st_mtime_ns for k, p in res["checkpoints"].items()} == stamps
    again = common.load("gain_suite")["cells"]["embedded/s0"]
    assert again["itpo"] == cell["itpo"] and again["base"] == cell["base"]
    res = json.loads((run / "results.json").read_text())  # rewritten by the resumed run

    # the rules study on the recorded cell: the same trained stages, its own ITPO runs
    from benchmarks.studies import itpo_rules

    rules = yaml.safe_load(itpo_rules.PROTOCOL.read_text()) | {"suite": str(path)}
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    stages = {s: (tmp_path / "runs" / "embedded-s0" / s) for s in ("world_model", "policy")}
    before = {s: sorted(p.stat().st_mtime_ns for p in d.rglob("*.ckpt")) for s, d in stages.items()}
    itpo_rules.main(["--protocol", str(rules_path), "--runs", str(tmp_path / "runs")])
    study = common.load("studies/itpo_rules")
    assert list(study["cells"]) == ["embedded/s0/reset every step", "embedded/s0/proximity 1e3"]
    for key, folder, option in (
        ("embedded/s0/reset every step", "itpo_reset", ("reset_every_step", True)),
        ("embedded/s0/proximity 1e3", "itpo_proximity", ("proximity", 1000.0)),
    ):
        rule = json.loads((tmp_path / "runs" / "embedded-s0" / folder / "results.json").read_text())
        assert rule["checkpoints"] == res["checkpoints"]  # the suite cell's stages, reused
        assert rule["config"][option[0]] == option[1] and "itpo_diffusion" not in rule
        assert rule["base"] == res["base"]  # the same base episodes
        c = study["cells"][key]["itpo"]["meanflow"]
        assert c["difference"] == rule["itpo_meanflow"]["gain"] - res["itpo_meanflow"]["gain"]
    after = {s: sorted(p.stat().st_mtime_ns for p in d.rglob("*.ckpt")) for s, d in stages.items()}
    assert after == before  # nothing retrained
    assert json.loads((tmp_path / "runs" / "embedded-s0" / "results.json").read_text()) == res
    assert "Decision: reset every step:" in itpo_rules.report(study)

    proto["evaluation"]["episodes"] = 3
    path.write_text(yaml.safe_dump(proto))
    with pytest.raises(SystemExit, match="another protocol"):
        gain_suite.main(argv)
    with pytest.raises(SystemExit, match="another protocol"):  # its suite's protocol changed
        itpo_rules.main(["--protocol", str(rules_path), "--runs", str(tmp_path / "runs")])


def test_itpo_rules_decides_by_its_protocol():
    """A rule replaces the paper's only with its interval above 0 and no dataset below the floor;
    of two that qualify, the larger mean difference wins."""
    from benchmarks.studies import itpo_rules

    proto = itpo_rules.load_protocol()

    def cells(diffs: dict[str, dict[str, list[float]]]) -> list[dict]:
        return [
            {"rule": rule, "dataset": ds, "itpo": {"meanflow": {"difference": d}}}
            for rule, per_ds in diffs.items()
            for ds, ds_diffs in per_ds.items()
            for d in ds_diffs
        ]

    good = {"hopper-medium": [2.0, 3.0, 2.5], "walker2d-medium": [1.0, 1.5, 2.0]}
    better = {"hopper-medium": [4.0, 5.0, 4.5], "walker2d-medium": [3.0, 3.5, 4.0]}
    mixed = {"hopper-medium": [6.0, 7.0, 6.5], "walker2d-medium": [-2.0, -1.5, -2.5]}
    assert itpo_rules.decide(cells({"reset every step": good, "proximity 1e3": mixed}), proto) == (
        "reset every step",
        {"reset every step": True, "proximity 1e3": False},
    )
    assert (
        itpo_rules.decide(cells({"reset every step": good, "proximity 1e3": better}), proto)[0]
        == "proximity 1e3"
    )
    noisy = {"hopper-medium": [5.0, -4.0, 1.0], "walker2d-medium": [-3.0, 4.0, 0.0]}
    assert (
        itpo_rules.decide(cells({"reset every step": noisy, "proximity 1e3": mixed}), proto)[0]
        is None
    )


def test_world_model_vs_mlp_trains_the_regression_and_scores_every_predictor(tiny_root):
    """The MLP baseline learns on the training split (its held-out error falls below the
    trivial predictor's), and ``errors`` reports raw and per-dimension standardised RMSE."""
    import torch

    from benchmarks.studies import world_model_vs_mlp as wvm
    from lit_itpo.data.datamodule import MinariDataModule
    from lit_itpo.world_models.parts import Conditioning
    from tests.conftest import DID

    dm = MinariDataModule(DID, data_dir=str(tiny_root[0]), val_fraction=0.2)
    dm.setup("fit")
    # a world model's conditioning with a mean head: the MLP takes its normalisers, not its head
    cond = Conditioning(dm.obs_dim, dm.action_dim, dm.action_low, dm.action_high, [8])
    cond.set_stats(dm.stats)
    val, scale = dm.val_data, dm.stats["obs_std"]
    exact = wvm.errors(lambda o, a, _: val["next", "observation"][: o.shape[0]], val, scale)
    assert exact == {"raw": 0.0, "standardised": 0.0}
    shift = wvm.errors(lambda o, a, _: val["next", "observation"] + scale, val, scale)
    assert shift["standardised"] == pytest.approx(1.0, rel=1e-5)
    trivial = wvm.errors(lambda o, a, _: o + cond.delta_mean, val, scale)
    mlp, _ = wvm.train_mlp(dm, cond, steps=300, batch=64, seed=0)
    with torch.no_grad():
        learned = wvm.errors(lambda o, a, _: mlp(o, a), val, scale)
    assert learned["raw"] < 0.8 * trivial["raw"], (learned, trivial)


def test_critic_check_returns_to_go_bootstrap_nothing_and_drop_cut_tails():
    """A terminated episode's returns are complete everywhere; a cut one's last 1/(1-gamma)
    steps are left out (their return-to-go is cut short)."""
    import numpy as np

    from benchmarks.studies.critic_check import returns_to_go

    g, valid = returns_to_go(np.array([1.0, 1.0, 1.0]), terminated=True, gamma=0.5)
    assert np.allclose(g, [1.75, 1.5, 1.0]) and valid.all()
    g, valid = returns_to_go(np.ones(5), terminated=False, gamma=0.5)
    assert valid.tolist() == [True, True, True, False, False]


def test_reference_returns_of_a_uniform_random_policy_are_seeded():
    """The command behind Pendulum's reference minimum: seeded, full-length episodes."""
    from benchmarks.reference_returns import random_returns

    a, b = random_returns("Pendulum-v1", 3), random_returns("Pendulum-v1", 3)
    assert a.shape == (3,) and (a == b).all() and (a < 0).all()
    assert len(set(a.tolist())) == 3  # each episode its own reset seed


def test_a_study_measures_no_recorded_cell_and_out_measures_it_again_beside_it(
    tmp_path, monkeypatch, capsys
):
    """A study on trained checkpoints whose cell is recorded says so and measures nothing (its
    checkpoints need not be here); ``--out NAME`` measures it again into
    ``results/studies/NAME.json`` beside the committed file, once its inputs are here: a
    missing checkpoint stops it before anything is measured, naming the command that makes it."""
    from benchmarks import common
    from benchmarks.studies import ascent_rate

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "REPO", tmp_path)
    monkeypatch.chdir(tmp_path)  # relative checkpoint paths are the repository's
    dataset = "lit_itpo/halfcheetah/medium-small-v0"  # embedded: always here
    argv = ["--policy", "p.ckpt", "--world-model", "w.ckpt", "--dataset_id", dataset]
    key = f"{dataset}|p.ckpt|w.ckpt|None|K5|M64|h0.001"
    common.save("studies/ascent_rate", {"cells": {key: {"rows": {}}}, "command": "recorded"})
    committed = (tmp_path / "results" / "studies" / "ascent_rate.json").read_text()
    measured = []

    def cell(args):
        measured.append(args.out)
        return {"rows": {"diffusion": {"ascent_rate": 0.7}}}

    monkeypatch.setattr(ascent_rate, "cell", cell)
    ascent_rate.main(argv)
    assert measured == []
    assert "studies/ascent_rate: 1 of 1 cells recorded, 0 to run" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        ascent_rate.main([*argv, "--out", "ascent_rate_rerun"])
    assert str(exc.value).startswith("ascent_rate: --policy p.ckpt is missing; make it with: ")
    assert f"lit-itpo pipeline --pipeline.dataset_id {dataset}" in str(exc.value)
    rerun_file = tmp_path / "results" / "studies" / "ascent_rate_rerun.json"
    assert measured == [] and not rerun_file.exists()

    for name in ("p.ckpt", "w.ckpt"):
        (tmp_path / name).write_bytes(b"")
    ascent_rate.main([*argv, "--out", "ascent_rate_rerun"])
    assert measured == ["studies/ascent_rate_rerun"]
    assert "studies/ascent_rate_rerun: 0 of 1 cells recorded, 1 to run" in capsys.readouterr().out
    rerun = common.load("studies/ascent_rate_rerun")
    assert rerun["cells"][key]["rows"] == {"diffusion": {"ascent_rate": 0.7}}
    assert "machine" in rerun["cells"][key]
    assert (tmp_path / "results" / "studies" / "ascent_rate.json").read_text() == committed


def test_a_study_checks_every_cells_inputs_before_its_first_cell_runs(
    tmp_path, monkeypatch, capsys
):
    """A study of many cells (ITPO on each base and seed) runs none of its recorded cells; with
    ``--out`` it checks the world model and every base checkpoint of the cells to run before the
    first cell starts, each missing one named with the command that makes it, and the cells'
    runs go under ``runs/studies/<NAME>/``, not the committed cells'."""
    from benchmarks import common
    from benchmarks.studies import itpo_bases

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "REPO", tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    (tmp_path / "minari" / itpo_bases.DATASET).mkdir(parents=True)
    keys = [itpo_bases.key(b, s) for s in itpo_bases.SEEDS for b in itpo_bases.BASES]
    common.save("studies/itpo_bases", {"cells": {k: {} for k in keys}})
    measured = []
    fake = lambda base, run, seed, name: measured.append((base, seed, name)) or {}  # noqa: E731
    monkeypatch.setattr(itpo_bases, "measure", fake)
    monkeypatch.setattr(itpo_bases, "report", lambda payload: "table")
    itpo_bases.main([])
    assert measured == [] and "9 of 9 cells recorded, 0 to run" in capsys.readouterr().out

    def ckpt(run: str) -> None:
        path = tmp_path / run / itpo_bases.CKPT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    with pytest.raises(SystemExit, match=r"the world model runs/ascent/mf/.* lit-itpo pipeline"):
        itpo_bases.main(["--out", "bases_rerun"])
    ckpt(itpo_bases.WORLD_MODEL)
    for seed in itpo_bases.SEEDS:
        for base, run in itpo_bases.BASES.items():
            if (base, seed) != ("TD3+BC (60k x 256)", 2):  # the last cell's base is missing
                ckpt(run.format(seed=seed))
    with pytest.raises(SystemExit) as exc:
        itpo_bases.main(["--out", "bases_rerun"])
    assert "the base TD3+BC (60k x 256) s2 runs/td3bc_budget/" in str(exc.value)
    assert "python -m benchmarks.policy_quality --out td3bc_budget" in str(exc.value)
    assert "--algos td3bc --seeds 2" in str(exc.value) and measured == []

    ckpt(itpo_bases.BASES["TD3+BC (60k x 256)"].format(seed=2))
    itpo_bases.main(["--out", "bases_rerun"])
    assert len(measured) == 9 and {n for *_, n in measured} == {"studies/bases_rerun"}
    assert list(common.load("studies/bases_rerun")["cells"]) == keys
    assert common.load("studies/itpo_bases")["cells"] == {k: {} for k in keys}


def test_a_study_finds_its_recorded_cell_however_its_checkpoints_are_typed(capsys):
    """A study keyed by its checkpoints finds the committed cell whether the paths are given
    relative to the repository (as recorded) or absolute: nothing is measured again."""
    from benchmarks import common
    from benchmarks.studies import ascent_rate

    run = "runs/ascent/{}/tb/version_0/checkpoints/last.ckpt"
    argv = ["--dataset_id", "lit_itpo/halfcheetah/medium-v0"]
    for flag, part in (("--policy", "pol"), ("--world-model", "wm"), ("--meanflow", "mf")):
        argv += [flag, str(common.REPO / run.format(part))]
    ascent_rate.main(argv)  # the committed cell: not measured (its checkpoints are not here)
    assert "studies/ascent_rate: 1 of 1 cells recorded, 0 to run" in capsys.readouterr().out


def test_the_recorded_line_names_the_benchmarks_own_rerun_option():
    from benchmarks.common import recorded_line

    assert "--out NAME runs them again here into benchmarks/results/studies/NAME.json" in (
        recorded_line("studies/x", 1, 2)
    )
    line = recorded_line("studies/score_suite", 3, 3, "--rerun runs them again here")
    assert line.endswith("holds them; --rerun runs them again here)") and "--out" not in line
    assert recorded_line("x", 0, 2) == "x: 0 of 2 cells recorded, 2 to run"


def test_a_cell_records_the_commit_its_command_started_from(tmp_path, monkeypatch):
    """A cell's record names the commit checked out when its command started (the code its
    process loaded), not a later one checked out while it ran; the rest of the machine record
    (date, load) is taken at its end."""
    from benchmarks import cells

    seen = iter([{"commit": "start", "date": "d0"}, {"commit": "later", "date": "d1"}])
    monkeypatch.setattr(cells, "machine", lambda: dict(next(seen)))
    done = cells.run(cells.Cell("c", ("--help",), tmp_path / "c"), threads=1)
    assert done["machine"] == {"commit": "start", "date": "d1", "torch_threads": 1}
