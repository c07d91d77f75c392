"""Render docs/RESULTS.md from the committed benchmark JSON under benchmarks/results/: the
tables that describe the product today (the main job, the gain suite, offline-policy quality and
training speed, world-model accuracy, the ITPO step cost, every stage's training speed).

    python -m benchmarks.render_results

Every table comes from one benchmark's JSON, with the command that made it, the machine it ran
on and the dates of its cells; a benchmark not run yet says so. Rerun this after any benchmark.
The studies (one-off investigations) render apart: ``python -m benchmarks.studies.render``.
"""

from __future__ import annotations

import json
import sys

from benchmarks import (
    gain_suite,
    main_job,
    meanflow_quality,
    policy_quality,
    policy_speed,
    stage_speed,
)
from benchmarks.common import REPO, RESULTS, shown_command
from lit_itpo.utils import atomic_write_text

OUT = REPO / "docs" / "RESULTS.md"


def _read(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def provenance(payload: dict) -> str:
    """Command, machine(s) and date range of a results JSON (per-cell or whole-run)."""
    rows = payload.get("rows", [])  # a list (one run) or a dict (runs kept across sittings)
    runs = [*payload.get("cells", {}).values(), *(rows.values() if isinstance(rows, dict) else [])]
    machines = [c["machine"] for c in runs if "machine" in c]
    if "machine" in payload:
        machines.append(payload["machine"])
    kinds = sorted(
        {
            f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch thread"
            f"{'s' if m['torch_threads'] != 1 else ''}"
            + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU")
            + ")"
            for m in machines
        }
    )
    loads = [m["load_avg_1min"] for m in machines if "load_avg_1min" in m]
    if loads:
        kinds = [f"{k}, load average {min(loads):.1f}-{max(loads):.1f}" for k in kinds]
    dates = sorted(m["date"] for m in machines if m.get("date"))
    commits = sorted({m["commit"] for m in machines if m.get("commit")})
    when = f"{dates[0]} – {dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "?")
    return (
        f"Command: `{shown_command(payload.get('command', '?'))}`  \n"
        f"Machine: {'; '.join(kinds) or '?'}  \n"
        f"Date: {when}; commits {', '.join(commits) or '?'}"
    )


def speed_table(payload: dict) -> str:
    lines = [
        "| world model | M | E | episodes | ms / env step | net evals / step "
        "| share of matmul peak |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['world_model']} | {r['M']} | {r['E']} | {r['episodes']} | "
            f"{r['ms_per_env_step']:.1f} | {r['nfe_per_step']} | "
            f"{100 * r['share_of_matmul_peak']:.0f}% |"
        )
    peak = payload.get("matmul_peak_gflop_per_s")
    if peak:
        lines.append(f"\nfp32 matmul peak measured on that machine: {peak:.0f} GFLOP/s.")
    return "\n".join(lines)


SECTIONS = [
    (
        "The main job: the mechanism check (`lit-itpo pipeline`, defaults)",
        "main_job",
        main_job.report,
        "The README's first command, timed in one fresh process on the machine named below "
        "(float32): ITPO with Pendulum-v1's exact dynamics beside the diffusion and MeanFlow "
        "world models, on the same checkpoints and episodes (protocol, committed before the run: "
        "docs/notes/2026-12-07-pendulum-mechanism-check.md). Gain: ITPO minus the base policy "
        "per episode in normalised points, mean and 95% bootstrap interval over the evaluation "
        "episodes; share of exact gain: a learned arm's mean gain over the exact arm's; ascent "
        "rate: the share of measured ITPO steps (every 10th env step) that raised the true "
        "H-step objective (the simulator set to the real state). Two Pendulum records: protocol "
        "v1 (the paper's rule, psi carried over) and v2 (psi reset before every real step, the "
        "task's config since; fixed after v1's collapse, before its run). The older cell "
        "(halfcheetah sample, the main job until 2026-12-07) scores 200-step episodes against "
        "the 1000-step D4RL references.",
    ),
    (
        "The gain suite: ITPO over its own ReBRAC base (protocol fixed before the runs)",
        "gain_suite",
        gain_suite.report,
        "The protocol (`conf/suite/gain_suite.yaml`) fixes datasets, 3 training seeds (seeds "
        "3-4 only if its pre-declared rule asks), budgets, the alpha grid and its held-out "
        "episodes, 20 full-length evaluation episodes and the statistics before any cell runs; "
        "cells are recorded as they finish and never rerun. Gain: ITPO minus the same policy on "
        "the same episodes (normalised points); per dataset a percentile bootstrap over seeds, "
        "over all cells rliable's stratified bootstrap (strata: datasets), 10,000 resamples; "
        "IQM: the interquartile mean of the cells' gains. Each cell runs on one torch thread, "
        "two cells at a time.",
    ),
    (
        "Offline policies (stage 2)",
        "policy_quality",
        policy_quality.report,
        "Mean ± std over the finished seeds; behaviour data = the dataset's mean normalised "
        "return.",
    ),
    (
        "Offline-policy training speed (stage 2)",
        "policy_speed",
        policy_speed.report,
        "Embedded halfcheetah sample, device-resident sampling. The plain loop runs the module's "
        "own losses without the Trainer; CORL's update is ``benchmarks/corl_reference.py`` "
        "(CORL's TD3+BC / IQL math in plain PyTorch) in the same process. bf16-mixed: Lightning's "
        "bfloat16 autocast (output layers float32). Runs minutes apart on this VM vary by up to "
        "~25%, hours apart by up to 1.5x: compare within one run.",
    ),
    (
        "World-model accuracy: MeanFlow vs diffusion (stage 3)",
        "meanflow_quality",
        meanflow_quality.report,
        "RMSE in raw env state units (not normalised) on held-out episodes and on the policy's own "
        "state-actions.",
    ),
    (
        "ITPO step cost (CPU)",
        "itpo_speed_cpu",
        speed_table,
        "H = 5; untrained networks at the paper's sizes (cost does not depend on the weights).",
    ),
    (
        "ITPO step cost (GPU: ms per ITPO step at H = 5, E = 1, M up to 4096)",
        "itpo_speed_cuda",
        speed_table,
        "",
    ),
]


STAGE_SPEED_NOTE = (
    "Each stage as a user runs it: `lit-itpo fit --config conf/embedded/<stage>.yaml` (embedded "
    "halfcheetah sample, shipped configs, TensorBoard on) with the batch and precision shown, "
    "updates/s from the 50th to the last batch, one fresh process per cell. CORL-style update: "
    "`benchmarks/corl_reference.py` (CORL's single-file TD3+BC / IQL, and ReBRAC's update "
    "written the same way), float32 as CORL runs it. The earlier checkout is the same command "
    "on that commit's code and configs, in the same run. FLOPs: matmuls of two training "
    "batches (torch.utils.flop_counter); peak: an n x n matmul in the precision used. Compiled "
    "(runs with `--compile`): the same command with `--model.init_args.compile true` "
    "(torch.compile of the update's losses), its rate on a warm Inductor cache, and its compile "
    "time (extra seconds of the first 50 batches over the eager cell's) on an empty cache and "
    "on the filled one. One "
    "timing per cell: repeat runs minutes apart on these VMs differ per cell by tens of percent, "
    "so read the ratios within a row (its cells ran back to back)."
)


def render() -> str:
    parts = [
        "# Results",
        "",
        "Rendered by `python -m benchmarks.render_results` from `benchmarks/results/*.json`; do "
        "not edit by hand. Each table names the command that made it, the machine and the "
        "dates. A command runs only what its results file does not record yet (it says `N of M "
        "cells recorded`; the queues resume where they stopped); `--out NAME` runs the recorded "
        "ones again here into `benchmarks/results/NAME.json` beside the committed file, naming "
        "the config values changed since. The studies that explained past results (one page "
        "each, with an index): [studies/](studies/README.md).",
    ]
    for title, name, fn, note in SECTIONS:
        parts += ["", f"## {title}", ""]
        payload = _read(name)
        if payload is None:
            parts.append(f"Not run yet (`benchmarks/results/{name}.json` is absent).")
            if name == "itpo_speed_cuda":
                parts.append(
                    "No GPU run is recorded yet; on a GPU machine run "
                    "`python -m benchmarks.itpo_speed --device cuda`."
                )
            continue
        if note:
            parts += [note, ""]
        parts += [fn(payload), "", provenance(payload)]
    for path in sorted(RESULTS.glob("stage_speed_*.json")):
        payload = json.loads(path.read_text())
        m = payload["machine"]
        if path.stem != stage_speed.results_name(m):  # a rerun beside it (--out)
            continue
        parts += [
            "",
            f"## Training speed of every stage: {m['cpu']}, {m['torch_threads']} thread(s)",
            "",
            STAGE_SPEED_NOTE,
            "",
            stage_speed.report(payload),
        ]
    parts += [
        "",
        "## Multi-process (DDP) checks",
        "",
        "Not a benchmark: `tests/test_ddp.py` (default suite) trains the world-model, MeanFlow, "
        "ReBRAC, TD3+BC and IQL stages on 2 CPU processes (gloo) and checks the replicas stay "
        "bit-identical while their batches differ, and runs the ITPO evaluation on 2 processes "
        "against 1 (every episode once; returns equal to 1e-6 relative).",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    text = render()
    atomic_write_text(text, OUT)
    sys.stdout.write(f"wrote {OUT}\n")


if __name__ == "__main__":
    main()
