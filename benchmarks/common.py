"""What the benchmarks share: the machine description, results files (one JSON per benchmark under
``benchmarks/results/``), logged scalars, ``mean ± std``, timing, the matmul peak and FLOP counting.

Results files: a run never measures again what its results file holds. Cells already recorded
are said so (``N of M cells recorded, K to run``, :func:`recorded_line`) and skipped; a whole-run
benchmark (one measurement per file) whose file exists runs nothing (:func:`run_once`).
``--out NAME`` (:func:`add_out_arg`, every benchmark and study) writes
``benchmarks/results/<NAME>.json`` instead, so the recorded cells run again here into a file beside
the committed one (the renderers read the committed names only). The inputs a run reads
(datasets, checkpoints, run folders) are named with the command that makes them when missing
(:func:`require`); the config files it reads are recorded by content (:func:`configs_today`).

FLOPs are counted one way everywhere: 2 per multiply-add in a forward pass; a backward pass
through a trainable layer costs 2x its forward (input and weight gradients), through a frozen
layer 1x (input gradients only). Elementwise ops, norms and activations are not counted.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from lit_itpo.utils import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# the local D4RL-style datasets by short name (lit-itpo collect --config conf/collect/<env>.yaml)
DATASETS = {
    "halfcheetah-medium": "lit_itpo/halfcheetah/medium-v0",
    "halfcheetah-medium-replay": "lit_itpo/halfcheetah/medium-replay-v0",
    "hopper-medium": "lit_itpo/hopper/medium-v0",
    "hopper-medium-replay": "lit_itpo/hopper/medium-replay-v0",
    "walker2d-medium": "lit_itpo/walker2d/medium-v0",
    "walker2d-medium-replay": "lit_itpo/walker2d/medium-replay-v0",
    "pointmaze-umaze": "lit_itpo/pointmaze-umaze/waypoint-v0",
}
LOCOMOTION = {k: v for k, v in DATASETS.items() if not k.startswith("pointmaze")}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # runnable processes averaged over the last minute: > cores means timings are shared
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def timeit(fn, warmup: int = 3, min_time: float = 1.0, max_iters: int = 1000) -> float:
    """Median seconds per call of ``fn`` over enough calls to fill ``min_time``."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while (time.perf_counter() - start < min_time or len(times) < 5) and len(times) < max_iters:
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_peak(n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Measured FLOP/s of an ``n x n`` matmul (2 n^3 FLOPs) in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timeit(lambda: a @ b, min_time=1.0)


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed here: AVX-512, its bfloat16 extension, AMX."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    keep = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2", "fma")
    return [f for f in keep if f in flags]


class GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts as "Global"
    (its per-module tracker tests TensorDicts for truth, which they refuse)."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def linear_macs(module: nn.Module) -> int:
    """Multiply-adds of one forward pass per sample through every ``nn.Linear`` in ``module``."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def flops(module: nn.Module, samples: float, trainable: bool, backward: bool = True) -> float:
    """FLOPs of ``samples`` forward (+ backward) passes under the counting rule above."""
    fwd = 2 * linear_macs(module) * samples
    if not backward:
        return fwd
    return fwd * (3 if trainable else 2)


def add_out_arg(ap, default: str | None, computed: str = "") -> None:
    """``--out NAME``: the results file a run writes, ``benchmarks/results/<NAME>.json`` (a
    study's: a bare NAME goes under ``studies/``). The default is the committed file, whose
    recorded cells are not run again; another name runs them again here into a file beside it.
    ``computed``: the default's form where ``default`` is None (decided at run time, e.g. per
    device)."""
    studies = (default or computed).startswith("studies/")

    def name(text: str) -> str:
        text = text.removesuffix(".json")
        return f"studies/{text}" if studies and "/" not in text else text

    ap.add_argument(
        "--out",
        type=name,
        default=default,
        metavar="NAME",
        help=f"results name: benchmarks/results/<NAME>.json (default {default or computed}, the "
        "committed file: what it records is not run again; another NAME runs it again here "
        "into a file beside it)",
    )


def shown_path(path: Path | str) -> str:
    """``path`` relative to the repository where it is inside it (how a printout names it)."""
    path = Path(path)
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def checkpoint_key(args) -> str:
    """``dataset|policy|world model|meanflow``: the start of a results key of a study on the
    checkpoints of :func:`add_checkpoint_args`, each path relative to the repository where it
    lies inside it however it was typed (absolute or relative), so a recorded cell is found
    again."""
    paths = (args.policy, args.world_model, args.meanflow)
    shown = [str(None) if p is None else shown_path(Path(p).absolute()) for p in paths]
    return "|".join([args.dataset_id, *shown])


def recorded_line(name: str, recorded: int, total: int, again: str | None = None) -> str:
    """What a run finds in ``results/<name>.json``: ``N of M cells recorded, K to run``, and
    where N > 0 the option that runs them again beside it (``again``: a benchmark's own, e.g.
    the score suite's ``--rerun``; default ``--out NAME``)."""
    where = "studies/" if name.startswith("studies/") else ""  # a study's bare NAME goes there
    again = again or f"--out NAME runs them again here into benchmarks/results/{where}NAME.json"
    return f"{name}: {recorded} of {total} cells recorded, {total - recorded} to run" + (
        f" (benchmarks/results/{name}.json holds them; {again})" if recorded else ""
    )


def require(who: str, what: str, path: Path | str | None, command: str) -> None:
    """Stop (``SystemExit``, one line) where the input ``path`` is missing, naming it (``what``:
    e.g. ``--policy``) and the command that makes it; None: not asked for."""
    if path is not None and not Path(REPO / path).exists():
        raise SystemExit(f"{who}: {what} {path} is missing; make it with: {command}")


def save(name: str, payload: dict) -> Path:
    """Write ``results/<name>.json`` atomically (a stopped run leaves the previous file); a
    study's name is ``studies/<name>``."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(payload, indent=2) + "\n", path)
    return path


def load(name: str) -> dict:
    """``results/<name>.json``, or an empty one (``{"cells": {}}``) before its first cell."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def record(name: str, key: str, result: dict, meta: dict) -> dict:
    """Add one finished cell to ``results/<name>.json`` (with ``meta``, e.g. the command) and
    save it at once, so a stopped run keeps every cell it finished. Read, update and write
    happen under a lock on ``results/.<name>.lock``, so parallel runs of one benchmark keep
    each other's cells."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for d in (result, meta):  # recorded commands name no path of this machine
        if isinstance(d.get("command"), str):
            d["command"] = shown_command(d["command"])
    with open(path.with_name(f".{path.stem}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        payload = load(name)
        payload.update(meta)
        payload["cells"][key] = result
        save(name, payload)
    return payload


def run_once(
    name: str, measure: Callable[[], dict], configs: Iterable[str] = (), committed: str = ""
) -> dict | None:
    """A benchmark whose results file is one whole run: ``measure()`` and write it to
    ``results/<name>.json``, unless that file exists (then nothing runs: ``1 of 1 cells
    recorded``, and ``--out`` names another file). ``configs``: the config files it reads,
    recorded by content (``configs``) and compared with those of ``results/<committed>.json``
    (default: ``name``), naming the values that changed. Returns the payload written, or None."""
    recorded = (RESULTS / f"{name}.json").is_file()
    print(recorded_line(name, int(recorded), 1), flush=True)
    if recorded:
        return None
    snap = config_snapshot(configs)
    was = load(committed or name).get("configs") or {}
    changed = [f"{p}: {c}" for p in snap if p in was for c in config_changes(was[p], snap[p])]
    if changed:
        print(f"{name}: {committed or name} ran with other configs than today's: "
              + "; ".join(changed), flush=True)  # fmt: skip
    payload = measure() | ({"configs": snap} if snap else {})
    if isinstance(payload.get("command"), str):
        payload["command"] = shown_command(payload["command"])
    print(f"{name}: wrote {shown_path(save(name, payload))}", flush=True)
    return payload


def run_in_process(
    name: str,
    cells: Iterable[tuple[str, Callable[[], dict]]],
    meta: dict,
    configs: Iterable[str] = (),
    check: Callable[[list[str]], None] | None = None,
) -> dict:
    """Measure the cells not yet in ``results/<name>.json`` one after another in this process
    (timings that must not share the machine), recording each as it finishes; rerun to go on.
    ``configs``: the config files (relative to the repository) every cell reads, recorded by
    content; recorded cells that ran with other values are named with the values changed.
    ``check(keys)``: where any cell is to run, called with their keys before the first runs,
    to stop on a missing input (:func:`require`); recorded cells need none."""
    payload = load(name)
    done = payload["cells"]
    cells = list(cells)
    digests, stored = configs_today(name, payload, [k for k, _ in cells], configs)
    meta = meta | ({"configs": stored} if digests else {})
    print(recorded_line(name, sum(key in done for key, _ in cells), len(cells)), flush=True)
    todo = [key for key, _ in cells if key not in done]
    if todo and check is not None:
        check(todo)
    for key, measure in cells:
        if key in done:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {key}", flush=True)
        result = measure() | {"machine": machine()}
        if digests:
            result["configs"] = digests
        done = record(name, key, result, meta)["cells"]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {key} -> {result.get('summary')}", flush=True)
    print(f"{name}: results in {shown_path(RESULTS / f'{name}.json')}", flush=True)
    return load(name)


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}`` (lists kept as values)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def config_snapshot(paths: Iterable[str]) -> dict[str, dict]:
    """Each config file (relative to the repository) as the flat values a run reads."""
    import yaml

    return {p: flatten(yaml.safe_load((REPO / p).read_text()) or {}) for p in sorted(paths)}


def config_digest(flat: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every value that differs between two flat configs."""
    keys = sorted(set(old) | set(new))
    missing = "(absent)"
    return [
        f"{k}: {old.get(k, missing)} -> {new.get(k, missing)}"
        for k in keys
        if old.get(k, missing) != new.get(k, missing)
    ]


def config_drift(payload: dict, keys: Iterable[str], snap: dict[str, dict]) -> list[str]:
    """The recorded cells among ``keys`` whose configs have changed since: ``cell: file: key:
    old -> new`` (a cell records each config's digest, the results file each digest's values)."""
    stored, out = payload.get("configs", {}), []
    for key in keys:
        used = payload["cells"].get(key, {}).get("configs") or {}
        for path, digest in used.items():
            if path in snap and digest != config_digest(snap[path]):
                old = stored.get(digest)
                what = ", ".join(config_changes(old, snap[path])) if old else "its content"
                out.append(f"{key}: {path}: {what}")
    return out


def configs_today(
    name: str, payload: dict, keys: Iterable[str], paths: Iterable[str], strict: bool = False
) -> tuple[dict[str, str], dict[str, dict]]:
    """Today's content of the config files ``paths``: ``(digest by path, the results file's
    values by digest with today's added)``. Recorded cells among ``keys`` whose configs changed
    since are named with the values that changed (``strict``: refused, ``SystemExit``)."""
    snap = config_snapshot(paths)
    drift = config_drift(payload, keys, snap)
    if drift:
        msg = f"{name}: recorded cells ran with other configs than today's: " + "; ".join(drift)
        if strict:
            raise SystemExit(msg + ". A changed config is a new suite: pass --out <new name>.")
        print(msg + " (cells run now read today's; --out NAME runs the recorded ones again "
              "with them).", flush=True)  # fmt: skip
    digests = {p: config_digest(v) for p, v in snap.items()}
    return digests, payload.get("configs", {}) | {digests[p]: v for p, v in snap.items()}


def mean_std(xs, digits: int = 1) -> str:
    """``mean ± std`` (population std) of the values that are not None, or ``n/a``."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:  # one seed: no spread to report
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.pstdev(xs):.{digits}f}"


STUDIES = REPO / "benchmarks" / "studies"


def shown_command(command: str) -> str:
    """A recorded command as it is run today: results recorded before ``benchmarks`` became a
    package name their script by path (``python benchmarks/x.py``), now ``python -m
    benchmarks.x`` (same flags); a module since moved to ``benchmarks/studies/`` is named
    there, and so is a results name (``--out``) whose file moved to ``results/studies/``; paths
    under this checkout are shown relative to it, those under the home folder from ``~/``."""
    command = re.sub(r"python benchmarks/(\w+)\.py", r"python -m benchmarks.\1", command)
    command = re.sub(
        r"python -m benchmarks\.(\w+)",
        lambda m: (
            "python -m benchmarks."
            + ("studies." if (STUDIES / f"{m.group(1)}.py").is_file() else "")
            + m.group(1)
        ),
        command,
    )
    command = re.sub(
        r"--out (\w[\w.-]*)",
        lambda m: (
            "--out "
            + ("studies/" if (RESULTS / "studies" / f"{m.group(1)}.json").is_file() else "")
            + m.group(1)
        ),
        command,
    )
    return command.replace(f"{REPO}/", "").replace(f"{Path.home()}/", "~/")


def read_scalars(run_dir: Path, tags: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Every value of each tag logged under ``run_dir`` (all TensorBoard versions), by step;
    each event file is read once whatever the number of tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    for ev_file in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev_file), size_guidance={"scalars": 0})
        acc.Reload()
        logged = acc.Tags().get("scalars", [])
        for tag in points:
            if tag in logged:
                for e in acc.Scalars(tag):
                    points[tag][e.step] = e.value
    return {tag: sorted(p.items()) for tag, p in points.items()}


def side_by_side(run_dir: Path, tags: Iterable[str]) -> dict:
    """A MeanFlow stage's last logged errors, its own (``meanflow/<tag>``, from ``val/``) and
    the diffusion model's on the same data (``diffusion/<tag>``, from ``val/diffusion/``), and
    the tilt's ``tilt_ess`` / ``tilt_eta``; ``None`` where a tag was not logged."""
    names = {
        f"{model}/{tag}": prefix + tag
        for tag in tags
        for model, prefix in (("meanflow", "val/"), ("diffusion", "val/diffusion/"))
    }
    names |= {"tilt_ess": "train/tilt/ess", "tilt_eta": "train/tilt/eta"}
    series = read_scalars(run_dir, names.values())
    return {key: (series[tag][-1][1] if series[tag] else None) for key, tag in names.items()}


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``tag`` value logged under ``run_dir`` (all TensorBoard versions), by step."""
    return read_scalars(run_dir, [tag])[tag]


# The ``lit-itpo pipeline`` runs that make the stage checkpoints the studies on trained stages
# read (--policy / --world-model / --meanflow, a --run folder), per dataset, at the budgets their
# recorded cells used: halfcheetah- and walker2d-medium world model 5k, ReBRAC 10k x 256, MeanFlow
# 5k (the recorded cells read runs/ascent{,_walker}/{wm,pol,mf}, fits at those budgets);
# hopper-medium the pipeline's defaults (the recorded runs/pipeline/hopper-medium-s0 is this run);
# the embedded halfcheetah sample the defaults (runs/pipeline/embedded). Another dataset: the
# defaults into runs/pipeline/<env>-<dataset>-s0.
_ASCENT_BUDGET = (
    "--pipeline.world_model_steps", "5000", "--pipeline.policy_steps", "10000",
    "--pipeline.policy_batch_size", "256", "--pipeline.meanflow_steps", "5000",
)  # fmt: skip
CHECKPOINT_RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lit_itpo/halfcheetah/medium-v0": ("runs/ascent/halfcheetah-medium", _ASCENT_BUDGET),
    "lit_itpo/walker2d/medium-v0": ("runs/ascent/walker2d-medium", _ASCENT_BUDGET),
    "lit_itpo/hopper/medium-v0": (
        "runs/pipeline/hopper-medium-s0",
        ("--pipeline.max_episode_steps", "null"),
    ),  # fmt: skip
    "lit_itpo/halfcheetah/medium-small-v0": ("runs/pipeline/embedded", ()),
}


def checkpoint_run(dataset_id: str) -> tuple[str, str]:
    """``(out_dir, command)``: the ``lit-itpo pipeline`` run of :data:`CHECKPOINT_RUNS` that
    makes ``dataset_id``'s stage checkpoints (:func:`stage_checkpoint`) and ``results.json``."""
    from lit_itpo.pipeline import conf_folder

    out, extra = CHECKPOINT_RUNS.get(
        dataset_id, (f"runs/pipeline/{conf_folder(dataset_id)}-s0", ())
    )
    argv = ["--pipeline.dataset_id", dataset_id, *extra, "--pipeline.out_dir", out]
    return out, "lit-itpo pipeline " + " ".join(argv)


def stage_checkpoint(out_dir: str, stage: str) -> str:
    """The checkpoint ``lit-itpo pipeline --pipeline.out_dir out_dir`` leaves of ``stage``
    (world_model, policy, meanflow)."""
    return f"{out_dir}/{stage}/tb/version_0/checkpoints/last.ckpt"


def require_checkpoints(who: str, dataset_id: str, given: dict[str, str | None]) -> None:
    """Stop, one line, at the first of ``given`` (``{flag: path}``, a flag naming its stage:
    ``--policy``, ``--world-model``, ``--meanflow``, ...) that is missing, naming the pipeline
    run that makes it and where that run leaves it."""
    out, command = checkpoint_run(dataset_id)
    for flag, path in given.items():
        stage = next(s for s in ("world_model", "meanflow", "policy") if s[:5] in flag)
        require(who, flag, path, f"{command} (then pass {flag} {stage_checkpoint(out, stage)})")


def collect_command(dataset_id: str) -> str:
    """The ``lit-itpo collect`` command that makes a local dataset (its env's committed collect
    config, that recipe alone; the gain suite's rule)."""
    from benchmarks.gain_suite import collect_argv  # (imports this module: here, not on top)

    short = next((k for k, v in DATASETS.items() if v == dataset_id), None)
    if short is None:
        return "lit-itpo collect --config conf/collect/<env>.yaml"
    return "lit-itpo " + " ".join(collect_argv(short, Path("runs")))


def require_dataset(who: str, dataset_id: str, data_dir: str | None = None) -> None:
    """Stop, one line, where the Minari dataset is not there, naming the command that makes it
    (the embedded ones are always there)."""
    from lit_itpo.data.minari_io import EMBEDDED, EMBEDDED_ROOT, datasets_root

    root = EMBEDDED_ROOT if data_dir == EMBEDDED else datasets_root(data_dir)
    if not (EMBEDDED_ROOT / dataset_id).is_dir():
        require(who, "dataset", root / dataset_id, collect_command(dataset_id))


def add_checkpoint_args(ap, states: int) -> None:
    """The arguments of a benchmark on a policy and its world models' checkpoints, measured on
    ``--states`` held-out real states (:func:`load_checkpoints`); the ``lit-itpo pipeline`` runs
    that make them (:data:`CHECKPOINT_RUNS`) are listed in the help."""
    ap.add_argument("--policy", required=True)
    ap.add_argument("--world-model", default=None, help="stage 1 checkpoint (diffusion)")
    ap.add_argument("--meanflow", default=None, help="stage 3 checkpoint (MeanFlow)")
    ap.add_argument("--dataset_id", required=True)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--states", type=int, default=states)
    ap.add_argument("--particles", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=5, help="diffusion reverse steps")
    ap.add_argument("--seed", type=int, default=0)
    runs = (checkpoint_run(d) for d in CHECKPOINT_RUNS)
    ap.epilog = (ap.epilog or "") + (
        "\nThe checkpoints of the recorded cells' budgets are made by (each run leaves "
        "<out_dir>/{world_model,policy,meanflow}/tb/version_0/checkpoints/last.ckpt):\n"
        + "\n".join(f"  {command}" for _, command in runs)
    )


def require_checkpoint_args(who: str, args) -> None:
    """Stop, one line, where the dataset or a checkpoint that the arguments of
    :func:`add_checkpoint_args` name is missing, naming the command that makes it."""
    require_dataset(who, args.dataset_id, args.data_dir)
    flags = {"--policy": args.policy, "--world-model": args.world_model}
    require_checkpoints(who, args.dataset_id, flags | {"--meanflow": args.meanflow})


def load_checkpoints(args) -> tuple:
    """``(datamodule, policy module, {"diffusion"|"meanflow": world model}, states)`` from the
    arguments of :func:`add_checkpoint_args`: the diffusion model samples with
    ``--sample-steps`` respaced steps (beta_tilde); ``states [--states, obs]`` are drawn from
    the validation episodes with ``--seed``."""
    from lit_itpo.data.datamodule import MinariDataModule
    from lit_itpo.modules import load_meanflow, load_policy, load_world_model

    require_checkpoint_args(Path(sys.argv[0]).stem, args)
    dm = MinariDataModule(args.dataset_id, data_dir=args.data_dir)
    dm.setup()
    policy = load_policy(args.policy, dataset_id=args.dataset_id)
    models = {}
    if args.world_model:
        wm = load_world_model(args.world_model, dataset_id=args.dataset_id)
        wm.transition.set_sample_steps(args.sample_steps, "beta_tilde")
        models["diffusion"] = wm
    if args.meanflow:
        models["meanflow"] = load_meanflow(args.meanflow, dataset_id=args.dataset_id)
    val = dm.val_data["observation"]
    pick = torch.randperm(val.shape[0], generator=torch.Generator().manual_seed(args.seed))
    return dm, policy, models, val[pick[: args.states]]
