"""A resumable queue of benchmark cells: each cell is one ``lit-itpo`` run in a subprocess whose
result is written to a JSON file under ``benchmarks/results/`` as soon as it finishes, so a suite
can be finished over several sittings (and on another machine, from the committed JSON).

A cell whose run directory holds a checkpoint resumes from the newest (``--ckpt_path``).
"""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import RESULTS, machine, save

REPO = Path(__file__).resolve().parent.parent


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def mean_std(xs, digits: int = 1) -> str:
    """``mean ± std`` (population std) of the values that are not None, or ``n/a``."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:  # one seed: no spread to report
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.pstdev(xs):.{digits}f}"


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint under ``run_dir`` (``last.ckpt`` or Lightning's per-epoch one)."""
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_scalars(run_dir: Path, tags) -> dict[str, list[tuple[int, float]]]:
    """Every value of each tag logged under ``run_dir`` (all TensorBoard versions), by step;
    each event file is read once whatever the number of tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    for ev_file in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev_file), size_guidance={"scalars": 0})
        acc.Reload()
        logged = acc.Tags().get("scalars", [])
        for tag in points:
            if tag in logged:
                for e in acc.Scalars(tag):
                    points[tag][e.step] = e.value
    return {tag: sorted(p.items()) for tag, p in points.items()}


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``tag`` value logged under ``run_dir`` (all TensorBoard versions), by step."""
    return read_scalars(run_dir, [tag])[tag]


def run_cell(argv: list[str], run_dir: Path, log: Path, resume: bool = True) -> float:
    """Run ``lit-itpo <argv>`` (with ``resume``, from ``run_dir``'s newest checkpoint; commands
    that resume by themselves, like ``pipeline``, pass False); wall seconds."""
    cmd = [sys.executable, "-m", "lit_itpo", *argv]
    ckpt = last_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        cmd += ["--ckpt_path", str(ckpt)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"cell failed (exit {proc.returncode}); see {log}: {' '.join(cmd)}")
    return time.perf_counter() - t0


def update(name: str, change: Callable[[dict], None]) -> dict:
    """Apply ``change`` to ``results/<name>.json`` under the queue's lock (re-read, change,
    atomic save), so concurrent workers lose none of each other's cells."""
    lock_dir = REPO / "runs" / "locks" / name
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "json.lock", "w") as json_lock:
        fcntl.flock(json_lock, fcntl.LOCK_EX)
        payload = load(name)
        change(payload)
        save(name, payload)
    return payload


def drain(
    name: str,
    cells: list[tuple[str, Callable[[], dict]]],
    meta: dict,
    only: str | None = None,
) -> dict:
    """Run every cell not yet in ``results/<name>.json``, saving after each one.

    Several workers may drain the same queue at once (e.g. one per core, with disjoint
    ``--datasets`` or ``--seeds``): a cell another worker has started (its lock file is held) is
    skipped, and each save re-reads the JSON under a lock so no worker's finished cells are lost.
    """
    lock_dir = REPO / "runs" / "locks" / name
    lock_dir.mkdir(parents=True, exist_ok=True)
    for key, fn in cells:
        if key in load(name)["cells"] or (only and only not in key):
            continue
        with open(lock_dir / (key.replace("/", "_") + ".lock"), "w") as cell_lock:
            try:
                fcntl.flock(cell_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{name}: {key} is being run by another worker; skipping", flush=True)
                continue
            if key in load(name)["cells"]:  # another worker finished it just now
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {key}", flush=True)
            res = fn()
            res["machine"] = machine()

            def add(payload: dict, key=key, res=res) -> None:
                payload.update(meta)
                payload["cells"][key] = res

            update(name, add)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {key} -> {res.get('summary')}", flush=True)
    return load(name)
