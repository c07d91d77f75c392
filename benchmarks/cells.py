"""Suite cells: one cell is one ``lit-itpo`` command (its dataset, seed and budget in the argv)
and the directory it writes to; a suite is many cells run by an existing executor.

Running a cell (:func:`run`, the job every executor runs) runs its command in a fresh process,
appends the output to ``<run_dir>/log.txt`` and then writes ``<run_dir>/cell.json`` (command,
wall seconds, machine). A cell whose ``cell.json`` names the same command is not run again; one
stopped part-way resumes by its own command: ``lit-itpo pipeline`` skips its finished stages,
continues an interrupted one from its newest checkpoint and reuses finished ITPO runs; ``fit``
cells carry ``--ckpt_path last``. So a stopped suite is finished by running it again. Run the
suites from the repository root (``python -m benchmarks.<name>``): their jobs import
``benchmarks`` from there.

Executors (``--executor``):

- ``local``: ``--workers`` cells at a time on this machine (a thread pool, each cell its own
  process);
- ``slurm``: one SLURM job array through submitit (``map_array``), one task per cell, at most
  ``--slurm-array-parallelism`` at once; the driver waits and records the cells as they finish
  (if it is stopped, the array runs on: ``--collect`` records the finished cells later);
- ``submitit-local``: submitit's local executor (every cell at once as a local job: how the
  SLURM path is tested without a cluster); ``debug``: submitit's in-process debug executor.

The driver is the only writer of ``benchmarks/results/<name>.json``: it adds each finished cell
(the benchmark's own ``summarise(cell, done)`` reads what the command wrote) as it arrives.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    REPO,
    add_out_arg,
    configs_today,
    load,
    machine,
    record,
    recorded_line,
)
from lit_itpo.utils import atomic_write_text

EXECUTORS = ("local", "slurm", "submitit-local", "debug")


class CellError(RuntimeError):
    """A cell's command exited with an error (its log names why)."""


@dataclass(frozen=True)
class Cell:
    """One command of a suite.

    Args:
        key: the cell's name in the results file, e.g. ``hopper-medium/s0``.
        argv: the ``lit-itpo`` arguments (subcommand first).
        run_dir: where the command writes; ``log.txt`` and ``cell.json`` go there too.
        info: what the benchmark's summary needs to know of the cell (dataset, seed, ...).
        needs: ``(path, lit-itpo argv)`` pairs: a path the command reads and the command that
            makes it (e.g. a dataset and its ``collect``), run first where the path is missing
            (under a lock beside the path, so two cells never make it at once).
        reads: config files the command reads that its argv does not name (e.g. a pipeline's
            auto-resolved ITPO config); with the argv's own ``.yaml`` files they are the
            cell's configs, recorded by content.
    """

    key: str
    argv: tuple[str, ...]
    run_dir: Path
    info: dict = field(default_factory=dict, compare=False)
    needs: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), compare=False)
    reads: tuple[str, ...] = field(default=(), compare=False)

    @property
    def configs(self) -> list[str]:
        """The config files (relative to the repository) this cell's command reads."""
        named = [a for a in self.argv if a.endswith(".yaml")]
        return sorted({p for p in (*named, *self.reads) if (REPO / p).is_file()})

    @property
    def command(self) -> str:
        """The cell as a person would type it (the form recorded in the results)."""
        return "lit-itpo " + " ".join(self.argv)

    @property
    def done_file(self) -> Path:
        return Path(self.run_dir) / "cell.json"


def finished(cell: Cell) -> dict | None:
    """The cell's ``cell.json`` if this very command has finished there, else None (a run
    directory that finished another command, e.g. another budget, does not count)."""
    if not cell.done_file.is_file():
        return None
    done = json.loads(cell.done_file.read_text())
    return done if done.get("command") == cell.command else None


def run(cell: Cell, threads: int = 1) -> dict:
    """Run ``cell``'s command unless it has finished (then its ``cell.json`` is returned as it
    is); ``threads``: its ``OMP_NUM_THREADS`` unless the environment sets one. Returns the
    ``cell.json`` record; raises :class:`CellError` if the command fails."""
    done = finished(cell)
    if done is not None:
        return done
    run_dir = Path(cell.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    log = run_dir / "log.txt"

    def lit_itpo(argv: Sequence[str]) -> None:
        cmd = [sys.executable, "-m", "lit_itpo", *argv]
        with open(log, "a") as fh:
            fh.write(f"\n$ {shlex.join(cmd)}\n")
            fh.flush()
            proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            raise CellError(f"{cell.key}: exit {proc.returncode} (see {log}): lit-itpo "
                            + " ".join(argv))  # fmt: skip

    t0 = time.perf_counter()
    for path, argv in cell.needs:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                lit_itpo(argv)
    setup_s = time.perf_counter() - t0
    commit = machine()["commit"]  # the code the cell's process loads, not HEAD at its end
    lit_itpo(cell.argv)
    done = {
        "command": cell.command,
        "wall_s": time.perf_counter() - t0 - setup_s,
        "setup_s": setup_s,  # making what the cell needs (e.g. its dataset), not the cell
        # the threads the cell ran with (its OMP_NUM_THREADS), not this driver's
        "machine": machine() | {"torch_threads": int(env["OMP_NUM_THREADS"]), "commit": commit},
    }
    atomic_write_text(json.dumps(done, indent=2) + "\n", cell.done_file)
    return done


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose where a suite's cells run."""
    g = p.add_argument_group("where the cells run")
    g.add_argument("--executor", choices=EXECUTORS, default="local")
    g.add_argument("--workers", type=int, default=1, help="local: cells at a time")
    g.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each cell")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--cpus-per-task", type=int, default=None, help="SLURM (default: --threads)")
    g.add_argument("--mem-gb", type=int, default=16, help="SLURM: memory per cell")
    g.add_argument("--gpus-per-node", type=int, default=0, help="submitit: GPUs per cell")
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="SLURM: time per cell")
    g.add_argument("--slurm-array-parallelism", type=int, default=64)
    g.add_argument(
        "--submitit-dir",
        default=str(REPO / "runs" / "submitit"),
        help="submitit's job folder (pickles and logs of the jobs)",
    )
    g.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: record the cells that have finished (e.g. a SLURM array's)",
    )


def protocol_args(
    name: str,
    doc: str,
    protocol: Path,
    runs: Path,
    argv: Sequence[str] | None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The command line of a suite run under a committed protocol file: ``--protocol``,
    ``--out``, ``--runs``, ``--report``, where the cells run, and the suite's own (``extra``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--protocol", type=Path, default=protocol, help="the committed protocol")
    add_out_arg(p, name)
    p.add_argument("--runs", type=Path, default=runs, help="the suite cells' run directories")
    p.add_argument("--report", action="store_true", help="print the tables and exit")
    add_executor_args(p)
    if extra is not None:
        extra(p)
    return p.parse_args(argv)


def refuse_other_protocol(name: str, args: argparse.Namespace, proto: dict) -> None:
    """Stop (``SystemExit``) if ``results/<out>.json`` has cells made under another protocol."""
    was = load(args.out)
    if was["cells"] and was.get("protocol") != proto:
        raise SystemExit(
            f"{name}: benchmarks/results/{args.out}.json was made under another protocol than "
            f"{args.protocol}; a changed protocol is a new study: pass --out <new name>."
        )


def _submitit_executor(args: argparse.Namespace, name: str):
    import submitit

    cluster = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}[args.executor]
    try:
        ex = submitit.AutoExecutor(folder=Path(args.submitit_dir) / name / "%j", cluster=cluster)
    except RuntimeError as exc:  # no srun on this machine
        raise SystemExit(f"--executor {args.executor}: {exc} (--executor local here)") from None
    ex.update_parameters(
        name=name,
        timeout_min=args.timeout_min,
        cpus_per_task=args.cpus_per_task or args.threads,
        mem_gb=args.mem_gb,
        gpus_per_node=args.gpus_per_node,
        slurm_array_parallelism=args.slurm_array_parallelism,
    )
    if args.slurm_partition:
        ex.update_parameters(slurm_partition=args.slurm_partition)
    return ex


def launch(
    cells: Sequence[Cell], args: argparse.Namespace, name: str
) -> Iterator[tuple[Cell, dict | BaseException]]:
    """Run ``cells`` on ``args.executor``; yields ``(cell, cell.json record or the error)`` as
    each one ends."""
    if not cells:
        return
    if args.executor == "local":
        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            futures = {pool.submit(run, c, args.threads): c for c in cells}
            for fut in as_completed(futures):
                yield futures[fut], (fut.exception() or fut.result())
        return
    import submitit

    ex = _submitit_executor(args, name)
    jobs = ex.map_array(run, list(cells), [args.threads] * len(cells))
    print(f"{name}: {len(jobs)} cells submitted ({args.executor}), first job {jobs[0].job_id}")
    by_job = {id(j): c for j, c in zip(jobs, cells, strict=True)}
    poll = 0.5 if args.executor != "slurm" else 30
    for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
        yield by_job[id(job)], (job.exception() or job.result())


def run_cells(
    name: str,
    cells: Sequence[Cell],
    summarise: Callable[[Cell, dict], dict],
    meta: dict,
    args: argparse.Namespace,
    strict: bool = False,
    again: str | None = None,
) -> dict:
    """Run the cells not yet in ``results/<name>.json`` and record each finished one there
    (``summarise(cell, its cell.json record)``, then the machine it ran on and its configs'
    digests; the results file keeps each digest's values); a cell that finished earlier but
    was not recorded (a stopped driver) is recorded without running. Recorded cells whose
    configs changed since are named with the values that changed (``strict``: refused, a
    changed config is a new suite; ``again``: the option that reruns recorded cells, as
    :func:`~benchmarks.common.recorded_line` says it). Raises ``SystemExit`` naming the failed
    cells (command or summary) after the others are recorded."""
    payload = load(name)
    recorded = payload["cells"]
    paths = {p for c in cells for p in c.configs}
    digests, stored = configs_today(name, payload, [c.key for c in cells], paths, strict)
    meta = meta | {"configs": stored}
    todo = [c for c in cells if c.key not in recorded]
    print(recorded_line(name, len(cells) - len(todo), len(cells), again), flush=True)
    ready = [(c, finished(c)) for c in todo]
    to_run = [] if args.collect else [c for c, done in ready if done is None]
    ended = [(c, done) for c, done in ready if done is not None]
    failed = []
    for cell, done in itertools.chain(ended, launch(to_run, args, name)):
        try:
            if isinstance(done, BaseException):
                raise done
            result = summarise(cell, done) | {"machine": done["machine"]}
            result["configs"] = {p: digests[p] for p in cell.configs}
        except Exception as exc:  # the other cells go on; the run ends naming this one
            failed.append(f"{cell.key}: {exc}")
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {cell.key} failed: {exc}", flush=True)
            continue
        record(name, cell.key, result, meta)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {cell.key} -> {result.get('summary')}")
    if failed:
        raise SystemExit(f"{name}: {len(failed)} cell(s) failed:\n" + "\n".join(failed))
    return load(name)
