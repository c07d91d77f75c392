"""Training speed of every stage as a user runs it (``lit-itpo fit --config conf/embedded/<stage>
.yaml``, the shipped configs, TensorBoard logger on), beside CORL-style single-file PyTorch
updates of the same algorithm and, optionally, another checkout of the project (today's main).

    OMP_NUM_THREADS=1 python -m benchmarks.stage_speed [--threads 1] [--steps 400] \\
        [--baseline-src /tmp/main-base --baseline-label "main 0289f5f"] [--compile] [--out NAME]

Each cell is a fresh process (``python -m lit_itpo.cli fit ...`` with ``--data.batch_size``,
``--trainer.precision`` and ``--trainer.max_steps`` overridden, validation off), timed from
its 50th to its last training batch by :class:`StepTimer`, which also counts the matmul FLOPs
of two training batches (``torch.utils.flop_counter``: forward, backward and the delayed
actor) so each rate is also a share of the machine's measured matmul peak in the precision
used. Cells of one run alternate between the checkouts and the peers, so a drift of the VM's
speed shows in all of them alike. ``--compile`` adds, for the policy stages, the same command
with ``--model.init_args.compile true`` twice per row: on an empty Inductor cache (cold: the
first run on a machine) and on the cache that run filled (warm: every later run); its compile
time is the extra time of the first 50 batches over the eager cell's, and its FLOPs are the
eager cell's (the counter does not see inside compiled kernels). ``--baseline-src`` is a
checkout of an earlier commit (``git worktree add /tmp/main-base <commit>``); it runs with that
tree first on PYTHONPATH (and this one after it, for the ``benchmarks.stage_speed.StepTimer``
callback).
Writes benchmarks/results/stage_speed_<machine>.json (one file per CPU model and thread count:
:func:`results_name`), with the stage configs it ran (``configs``), once: where that file exists
nothing runs, and ``--out NAME`` runs it again into results/NAME.json (naming the config values
that changed since the machine's file); the results page renders the machines' own files only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    REPO,
    GlobalOnly,
    add_out_arg,
    cpu_flags,
    machine,
    matmul_peak,
    run_once,
    shown_command,
)

POLICIES = ("rebrac", "td3bc", "iql")
WORLD_MODELS = ("world_model", "meanflow")
PRECISIONS = ("32-true", "bf16-mixed")
CORL = {"td3bc": "corl_td3bc", "iql": "corl_iql", "rebrac": "corl_rebrac"}
COMPILED = ("compiled, cold cache", "compiled, warm cache")  # row keys of --compile cells


class StepTimer(pl.Callback):
    """Times training batches ``[skip, end)`` and counts the FLOPs of batches
    ``[flops_at, flops_at + 2)``; writes ``{"updates_per_s", "flops_per_update"}`` as JSON to
    ``$STAGE_SPEED_OUT`` when training ends."""

    def __init__(self, skip: int = 50, flops_at: int = 10):
        self.skip, self.flops_at = skip, flops_at
        self.t_start = self.t0 = self.t1 = None
        self.n, self.flops, self.fc = 0, None, None

    def on_train_start(self, trainer, *args) -> None:
        self.t_start = time.perf_counter()

    def on_train_batch_start(self, trainer, *args) -> None:
        step = trainer.global_step
        if step == self.flops_at:
            self.fc = FlopCounterMode(display=False)
            self.fc.mod_tracker = GlobalOnly()
            self.fc.__enter__()
        if step == self.skip:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        step = trainer.global_step  # already advanced by this batch's counted step
        if self.fc is not None and step == self.flops_at + 2:
            self.fc.__exit__(None, None, None)
            self.flops, self.fc = self.fc.get_total_flops() / 2, None
        if self.t0 is not None:
            self.t1, self.n = time.perf_counter(), step - self.skip

    def on_train_end(self, trainer, *args) -> None:
        out = {
            "updates_per_s": self.n / (self.t1 - self.t0),
            "flops_per_update": self.flops,
            "first_batches_s": self.t0 - self.t_start,  # batches [0, skip): compiles included
        }
        Path(os.environ["STAGE_SPEED_OUT"]).write_text(json.dumps(out))


def _run(cmd: list[str], env: dict, out: Path, cwd: Path = REPO) -> dict:
    # ``python -m`` puts the working directory first on sys.path: run in the tree measured
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"stage_speed: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def fit_cell(src: Path, stage: str, batch: int, precision: str, steps: int, threads: int,
             work: Path, extra: list[str], env_extra: dict | None = None) -> dict:  # fmt: skip
    """One ``lit-itpo fit`` of ``src``'s ``conf/embedded/<stage>.yaml`` in a fresh process."""
    run = Path(tempfile.mkdtemp(dir=work))
    out = run / "rate.json"
    env = (
        os.environ
        | {
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(src), str(REPO)]),
            "STAGE_SPEED_OUT": str(out),
        }
        | (env_extra or {})
    )
    cmd = [
        sys.executable, "-m", "lit_itpo.cli", "fit",
        "--config", str(src / "conf" / "embedded" / f"{stage}.yaml"),
        "--data.batch_size", str(batch),
        "--trainer.precision", precision,
        "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps),
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.callbacks+=benchmarks.stage_speed.StepTimer",
        *extra,
    ]  # fmt: skip
    return _run(cmd, env, out, cwd=src)


def corl_cell(algo: str, batch: int, precision: str, steps: int, threads: int, work: Path):
    """CORL-style update of ``algo`` in a fresh process (``--corl`` mode of this script)."""
    out = Path(tempfile.mkdtemp(dir=work)) / "rate.json"
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "STAGE_SPEED_OUT": str(out)}
    cmd = [sys.executable, "-m", "benchmarks.stage_speed", "--corl", algo, "--batch", str(batch),
           "--precision", precision, "--steps", str(steps)]  # fmt: skip
    return _run(cmd, env, out)


def corl_main(algo: str, batch: int, precision: str, steps: int) -> None:
    """Updates/s and FLOPs per update of ``corl_reference.<CORL[algo]>`` on the embedded
    data, each update in its own autocast region (as Lightning's ``bf16-mixed``)."""
    from benchmarks import corl_reference
    from lit_itpo.data.datamodule import MinariDataModule

    dm = MinariDataModule("lit_itpo/halfcheetah/medium-small-v0", data_dir="embedded")
    dm.setup()
    make = getattr(corl_reference, CORL[algo])
    _, update = make(dm.train_data, dm.stats["obs_mean"], dm.stats["obs_std"], batch=batch)
    bf16 = precision == "bf16-mixed"

    def one(i: int) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            update(i + 1)

    for i in range(10):
        one(i)
    fc = FlopCounterMode(display=False)
    fc.mod_tracker = GlobalOnly()
    with fc:
        for i in range(10, 12):
            one(i)
    t0 = time.perf_counter()
    for i in range(50, steps):
        one(i)
    rate = (steps - 50) / (time.perf_counter() - t0)
    out = {"updates_per_s": rate, "flops_per_update": fc.get_total_flops() / 2}
    Path(os.environ["STAGE_SPEED_OUT"]).write_text(json.dumps(out))


def stage_inputs(work: Path, threads: int) -> list[str]:
    """Stage 3 (MeanFlow) reads a world-model and a policy checkpoint: make small ones (the
    world model with the eps target, which earlier checkouts can load too)."""
    made = []
    for stage, flag, more in (
        ("world_model", "world_model_ckpt", ["--model.init_args.prediction", "eps"]),
        ("rebrac", "policy_ckpt", []),
    ):
        run = work / f"input-{stage}"
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        cmd = [
            sys.executable, "-m", "lit_itpo.cli", "fit",
            "--config", str(REPO / "conf" / "embedded" / f"{stage}.yaml"),
            "--trainer.max_steps", "20", "--trainer.val_check_interval", "20",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(run), "--trainer.logger", "false", *more,
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        ckpts = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        if proc.returncode != 0 or not ckpts:
            raise SystemExit(f"stage_speed: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        made += [f"--model.init_args.{flag}", str(ckpts[-1])]
    return made


def results_name(m: dict) -> str:
    """A machine's own results name: ``stage_speed_<cpu model>_t<threads>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", m["cpu"].lower()).strip("-")[:40]
    return f"stage_speed_{slug}_t{m['torch_threads']}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--stages", default=",".join(POLICIES + WORLD_MODELS))
    ap.add_argument("--baseline-src", default=None)
    ap.add_argument("--baseline-label", default="baseline")
    ap.add_argument("--compile", action="store_true",
                    help="also the policy stages with --model.init_args.compile true, twice: "
                    "an empty Inductor cache (cold), then the filled one (warm)")  # fmt: skip
    ap.add_argument("--corl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="32-true", help=argparse.SUPPRESS)
    add_out_arg(ap, None, "stage_speed_<cpu model>_t<threads>")
    args = ap.parse_args(argv)
    if args.corl:
        return corl_main(args.corl, args.batch, args.precision, args.steps)
    own = results_name(machine() | {"torch_threads": args.threads})
    stages = args.stages.split(",")
    inputs = ("world_model", "rebrac") if "meanflow" in stages else ()
    configs = [f"conf/embedded/{s}.yaml" for s in sorted({*stages, *inputs})]
    run_once(args.out or own, lambda: measure(args), configs, committed=own)


def measure(args) -> dict:
    """Every row (each cell a fresh process), the matmul peaks and the machine."""
    torch.set_num_threads(args.threads)
    peaks = {  # string keys: as the JSON file reads back
        p: {str(n): matmul_peak(n, dtype=dt) for n in (256, 1024)}
        for p, dt in (("32-true", torch.float32), ("bf16-mixed", torch.bfloat16))
    }
    trees = [("this commit", REPO)]
    if args.baseline_src:
        trees.append((args.baseline_label, Path(args.baseline_src).resolve()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        extra = {"meanflow": stage_inputs(work, args.threads)} if "meanflow" in args.stages else {}
        for stage in args.stages.split(","):
            batches = (256, 1024) if stage in POLICIES else (256,)
            for batch in batches:
                for precision in PRECISIONS:
                    row = {"stage": stage, "batch": batch, "precision": precision}
                    for label, src in trees:
                        row[label] = fit_cell(src, stage, batch, precision, args.steps,
                                              args.threads, work, extra.get(stage, []))  # fmt: skip
                    if args.compile and stage in POLICIES:  # one fresh Inductor cache per row
                        cache = {"TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{len(rows)}")}
                        for label in COMPILED:
                            row[label] = fit_cell(
                                REPO, stage, batch, precision, args.steps, args.threads, work,
                                ["--model.init_args.compile", "true"], cache,
                            )  # fmt: skip
                    if stage in CORL:
                        row["corl"] = corl_cell(stage, batch, precision, args.steps,
                                                args.threads, work)  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return {
        "machine": machine() | {"torch_threads": args.threads, "cpu_flags": cpu_flags()},
        "matmul_peak_flops": peaks,
        "steps": args.steps,
        "trees": [label for label, _ in trees],
        "compiled": args.compile,
        "rows": rows,
        "command": f"OMP_NUM_THREADS={args.threads} python -m benchmarks.stage_speed "
        f"--threads {args.threads} --steps {args.steps}"
        + (f" --baseline-src <checkout of {args.baseline_label}>" if args.baseline_src else "")
        + (" --compile" if args.compile else ""),
    }


def report(payload: dict) -> str:
    """Markdown: per stage, batch and precision, CORL's update, the baseline checkout and this
    one in the same run (and, from ``--compile`` runs, this one compiled, with its compile time
    on a cold and a warm cache); the share of the matmul peak of the precision used."""
    trees = payload["trees"]
    base = trees[1] if len(trees) > 1 else None
    compiled = payload.get("compiled", False)
    peaks = payload["matmul_peak_flops"]
    head = ["stage", "batch", "precision", "CORL-style update, float32"]
    head += [f"{base} (updates/s)"] if base else []
    head += ["this commit (updates/s)", "vs CORL float32"]
    head += [f"vs {base}"] if base else []
    if compiled:
        head += ["compiled (updates/s)", "compiled vs CORL float32", "compile time cold / warm"]
    head += ["GFLOP/s", "share of the matmul peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    corl32 = {
        (r["stage"], r["batch"]): r["corl"]["updates_per_s"]
        for r in payload["rows"]
        if "corl" in r and r["precision"] == "32-true"
    }
    for r in payload["rows"]:
        new = r["this commit"]
        c = corl32.get((r["stage"], r["batch"]))
        cells = [r["stage"], str(r["batch"]), r["precision"], f"{c:.0f}" if c else "-"]
        if base:
            cells.append(f"{r[base]['updates_per_s']:.0f}")
        cells += [f"{new['updates_per_s']:.0f}", f"{new['updates_per_s'] / c:.2f}x" if c else "-"]
        if base:
            cells.append(f"{new['updates_per_s'] / r[base]['updates_per_s']:.2f}x")
        if compiled:
            cold, warm = (r.get(k) for k in COMPILED)
            if warm:
                extra = [
                    f"{x['first_batches_s'] - new['first_batches_s']:.0f} s" for x in (cold, warm)
                ]
                cells += [
                    f"{warm['updates_per_s']:.0f}",
                    f"{warm['updates_per_s'] / c:.2f}x" if c else "-",
                    " / ".join(extra),
                ]
            else:
                cells += ["-", "-", "-"]
        f = new.get("flops_per_update")
        if f:  # of this commit's eager rate
            gflops = f * new["updates_per_s"] / 1e9
            cells += [f"{gflops:.0f}", f"{100 * gflops * 1e9 / peaks[r['precision']]['1024']:.0f}%"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    m = payload["machine"]
    pk = ", ".join(
        f"{p}: {peaks[p]['1024'] / 1e9:.0f} GFLOP/s at 1024^3, {peaks[p]['256'] / 1e9:.0f} at 256^3"
        for p in peaks
    )
    lines += [
        "",
        f"Matmul peak measured in the run ({m['torch_threads']} thread(s)): {pk}.",
        f"Command: `{shown_command(payload['command'])}`  ",
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch thread(s), CPU "
        f"flags: {', '.join(m['cpu_flags']) or 'none of note'}), load average "
        f"{m['load_avg_1min']}  ",
        f"Date: {m['date']}; commit {m['commit']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
