"""The main job as a user runs it, timed: ``lit-itpo pipeline`` on the embedded dataset (the
README's first command, defaults: Pendulum-v1 medium, ITPO with the exact dynamics beside the
diffusion and MeanFlow world models), in a fresh output directory, one fresh process.

    python -m benchmarks.main_job [--out-dir runs/main_job] [--out NAME] [-- <extra pipeline
        arguments>]
    python -m benchmarks.main_job --report

Records in benchmarks/results/main_job.json, per dataset, machine and ITPO rule (one cell): the
wall time of the whole job and of each run in it (from the runs' ``metrics.json`` write times),
and its results table (base vs ITPO with each world model on the same episodes: paired gain with
its 95% interval, ascent rate, ms per env step), with the stage configs it read by content. A
cell recorded there is not run again (``--out NAME`` times it again into results/NAME.json, and
names the config values changed since). Its input, the embedded dataset, ships with the package.
Time it on a quiet machine: ``load_avg_1min`` is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import REPO, add_out_arg, load, machine, run_in_process, shown_path
from lit_itpo.lightning_cli import parse_dataclass_command
from lit_itpo.pipeline import STAGE_CONFIGS, PipelineConfig

NAME = "main_job"
ARMS = ("exact", "diffusion", "meanflow")
LABELS = {"exact": "exact dynamics", "diffusion": "diffusion WM", "meanflow": "MeanFlow WM"}


def run(out_dir: str, extra: Sequence[str]) -> dict:
    """The job in a fresh ``out_dir`` (relative to the repository, as the pipeline records it)."""
    shutil.rmtree(REPO / out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "lit_itpo", "pipeline", "--pipeline.out_dir", out_dir, *extra]
    before = machine()  # the load before the job: what the timing shared the machine with
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    return summarise(REPO / out_dir, t0, time.time() - t0, before["load_avg_1min"])


def job_config(out_dir: str, extra: Sequence[str]) -> PipelineConfig:
    """The pipeline's configuration of the job (its "auto" values decided), before it runs."""
    cfg, _ = parse_dataclass_command(
        "pipeline", PipelineConfig, "", ["--pipeline.out_dir", out_dir, *extra]
    )
    return cfg


def summarise(out_dir: Path, t0: float, wall: float, load_before: float) -> dict:
    """A finished job's record: wall times (whole, per run) and its results."""
    res = json.loads((out_dir / "results.json").read_text())
    arms = [a for a in ARMS if f"itpo_{a}" in res]
    runs = ["world_model", "policy", "meanflow", "itpo/alpha", *(f"itpo/final_{a}" for a in arms)]
    ends = {r: (out_dir / r / "metrics.json").stat().st_mtime - t0 for r in runs}
    spans, last = {}, 0.0
    for r in runs:  # the pipeline runs them in this order
        spans[r] = round(ends[r] - last, 1)
        last = ends[r]
    keep = ("dataset_id", "alpha", "alpha_selection", "base", "config") + tuple(
        f"itpo_{a}" for a in arms
    )
    return {
        "wall_s": round(wall, 1),
        "run_s": spans,
        "results": {k: res[k] for k in keep},
        "precision": "32-true",
        "load_avg_before": load_before,
        "summary": f"{wall / 60:.1f} min",
    }


def report(payload: dict) -> str:
    """Per recorded job: the time of each run and the results table."""
    out = []
    for key, c in payload["cells"].items():
        r, cfg = c["results"], c["results"]["config"]
        t = c["run_s"]
        arms = [a for a in ARMS if f"itpo_{a}" in r]
        finals = " + ".join(f"{t[f'itpo/final_{a}']:.0f} s ({a})" for a in arms)
        date = c.get("machine", {}).get("date", "undated")
        rule = "psi reset every step" if cfg.get("reset_every_step") else "psi carried over"
        out += [
            f"**{key}** ({r.get('dataset_id', cfg['dataset_id'])}, {date}; ITPO rule: {rule}): "
            f"{c['wall_s'] / 60:.1f} min in all (load average before: {c['load_avg_before']}); "
            f"world model {t['world_model']:.0f} s ({cfg['world_model_steps']} updates), "
            f"ReBRAC {t['policy']:.0f} s ({cfg['policy_steps']} updates), MeanFlow "
            f"{t['meanflow']:.0f} s ({cfg['meanflow_steps']} updates), alpha grid "
            f"{t['itpo/alpha']:.0f} s ({len(cfg['alpha_grid'])} step sizes x "
            f"{cfg['alpha_episodes']} held-out episode(s), per arm in one batch), final "
            f"evaluations {finals} ({cfg['num_episodes']} episodes of "
            f"{cfg['max_episode_steps']} steps).",
            "",
            "| policy | normalised score | return | gain in normalised score [95% CI] | "
            f"share of exact gain | ascent rate | ms / env step ({cfg['num_episodes']} episodes "
            "batched) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| ReBRAC (base) | {r['base']['normalized_score']:.1f} | "
            f"{r['base']['return_mean']:.1f} | | | | |",
        ]
        for name in arms:
            d, label = r[f"itpo_{name}"], LABELS[name]
            share = d.get("share_of_exact_gain")
            if name == "exact" or "itpo_exact" not in r:
                share = ""
            else:
                share = "n/a" if share is None else f"{100 * share:.0f}%"
            if d["fell_back"]:
                out.append(
                    f"| ITPO, {label}: no alpha beat the base on the held-out episodes, fell "
                    f"back | {d['normalized_score']:.1f} | {d['return_mean']:.1f} | +0.0 | "
                    f"{share} | - | - |"
                )
                continue
            asc = "n/a" if d.get("ascent_rate") is None else f"{100 * d['ascent_rate']:.0f}%"
            lo, hi = d["gain_ci"]
            ci = "n/a" if lo is None or hi is None else f"{lo:+.2f}, {hi:+.2f}"
            out.append(
                f"| ITPO, {label} (alpha {d['alpha']:g}) | {d['normalized_score']:.1f} | "
                f"{d['return_mean']:.1f} | {d['gain']:+.2f} [{ci}] | {share} | "
                f"{asc} | {d['ms_per_step']:.0f} |"
            )
        out.append("")
    return "\n".join(out).rstrip()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", default="runs/main_job")
    add_out_arg(p, NAME)
    p.add_argument("--report", action="store_true")
    p.add_argument("extra", nargs="*", help="more `lit-itpo pipeline` arguments (after --)")
    args = p.parse_args(argv)
    if not args.report:
        m, cfg = machine(), job_config(args.out_dir, args.extra)
        key = (
            f"{cfg.dataset_id}: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"
        )
        if cfg.reset_every_step:  # another rule: its own record
            key += ", psi reset every step"
        cmd = " ".join(
            ["python -m benchmarks.main_job", *(["--", *args.extra] if args.extra else [])]
        )
        configs = [shown_path(getattr(cfg, f)) for f in STAGE_CONFIGS]
        job = [(key, lambda: run(args.out_dir, args.extra))]
        run_in_process(args.out, job, {"command": cmd}, configs)
    print(report(load(args.out)))


if __name__ == "__main__":
    main()
