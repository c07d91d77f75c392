"""Offline-policy quality: ReBRAC, IQL and TD3+BC x datasets x seeds, final and best
D4RL-normalised score, next to the behaviour data's score. Each cell is one ``lit-itpo fit``
command (``--ckpt_path last``: a stopped cell continues from its newest checkpoint); cells run
in parallel here or as a SLURM job array (``--executor``, see ``benchmarks.cells``) and each
finished cell is written to benchmarks/results/policy_quality.json at once; rerun to continue.

    OMP_NUM_THREADS=1 python -m benchmarks.policy_quality [--steps 20000] [--batch 256]
        [--datasets halfcheetah-medium ...] [--algos rebrac iql td3bc] [--seeds 0 1 2]
        [--precision 32-true bf16-mixed] [--out policy_quality] [--workers 2]
    python -m benchmarks.policy_quality --report      # the markdown table from the JSON

The precision study (is bfloat16 autocast free of score cost?), its protocol fixed before its
runs: halfcheetah-, hopper- and walker2d-medium x ReBRAC, TD3+BC, IQL x seeds 0, 1, 2, each
cell trained in float32 and in bf16-mixed (same seed, data, budget 20k x 256 and evaluation
episodes), final score compared in pairs; seeds run in order (all cells of seed 0 first) and
no cell is rerun. bf16-mixed becomes the configs' default if the mean paired difference
(bf16 - float32) over all cells has a 95% bootstrap CI with its lower end above -2 points and
no dataset x algorithm mean difference is below -5:

    OMP_NUM_THREADS=1 python -m benchmarks.policy_quality --out precision_study \
        --datasets halfcheetah-medium hopper-medium walker2d-medium \
        --precision 32-true bf16-mixed

Each cell is ``lit-itpo fit --config conf/<dataset>/<algo>.yaml`` with the budget overridden
(the configs' own budget is the paper-like 100k x 1024); evaluation every ``--eval-every``
updates on 10 episodes of 1000 steps with fixed seeds. Needs the local datasets
(``lit-itpo collect --config conf/collect/<env>.yaml``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cells import Cell, add_executor_args, run_cells
from benchmarks.common import LOCOMOTION, REPO, add_out_arg, load, scalars
from benchmarks.common import mean_std as ms
from lit_itpo.data.minari_io import datasets_root

NAME = "policy_quality"
DATASETS = LOCOMOTION
ALGOS = {"rebrac": "ReBRAC", "iql": "IQL", "td3bc": "TD3+BC"}


def behaviour_score(dataset_id: str) -> float | None:
    """Mean normalised episode return of the dataset (its provenance record)."""
    prov = datasets_root() / dataset_id / "provenance.json"
    if not prov.is_file():
        return None
    return json.loads(prov.read_text()).get("normalized_score_mean")


def behaviour_scores(out: str, datasets: Sequence[str]) -> dict:
    """The behaviour scores to record with ``results/<out>.json``: the ones recorded there,
    updated with ``datasets``' where their data is on this machine (an absent dataset keeps
    its recorded score)."""
    here = {ds: behaviour_score(DATASETS[ds]) for ds in datasets}
    return load(out).get("behaviour", {}) | {ds: b for ds, b in here.items() if b is not None}


def make_cell(ds: str, algo: str, seed: int, precision: str, args) -> Cell:
    """The ``lit-itpo fit`` command of one dataset, algorithm, seed and precision."""
    tag = "" if precision == "32-true" else f"-{precision}"
    coefs = "".join(f"-{k}{v}" for k, v in args.model_arg)
    run_dir = REPO / "runs" / args.out / f"{ds}-{algo}-s{seed}{tag}{coefs}"
    argv = [
        "fit",
        "--config", f"conf/{ds}/{algo}.yaml",
        "--seed_everything", str(seed),
        "--trainer.max_steps", str(args.steps),
        "--trainer.val_check_interval", str(args.eval_every),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger.init_args.save_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
        "--data.batch_size", str(args.batch),
        "--trainer.precision", precision,
        "--ckpt_path", "last",
    ]  # fmt: skip
    for k, v in args.model_arg:
        argv += [f"--model.init_args.{k}", v]
    key = f"{ds}/{algo}/s{seed}" + ("" if precision == "32-true" else f"@{precision}")
    key += "".join(f"[{k}={v}]" for k, v in args.model_arg)
    info = {"dataset": ds, "algo": algo, "seed": seed, "precision": precision}
    info["model_args"] = dict(args.model_arg)
    return Cell(key, tuple(argv), run_dir, info)


def summarise(cell: Cell, done: dict, args) -> dict:
    """A finished cell's record: its evaluation curve (final and best score)."""
    curve = scalars(Path(cell.run_dir), "eval/normalized_score")
    if not curve:
        raise RuntimeError(f"no eval/normalized_score under {cell.run_dir}")
    scores, wall = [v for _, v in curve], done["wall_s"]
    return {
        "dataset": cell.info["dataset"],
        "algorithm": ALGOS[cell.info["algo"]],
        "seed": cell.info["seed"],
        "updates": args.steps,
        "batch": args.batch,
        "precision": cell.info["precision"],
        **({"model_args": cell.info["model_args"]} if cell.info["model_args"] else {}),
        "final": scores[-1],
        "best": max(scores),
        "curve": curve,
        "wall_s": wall,
        "summary": f"final {scores[-1]:.1f} best {max(scores):.1f} ({wall / 60:.1f} min)",
        "command": cell.command,
    }


def report(payload: dict) -> str:
    """Markdown: one row per dataset x algorithm, mean +- std over the finished seeds."""
    rows = {}
    for c in payload["cells"].values():
        algo = c["algorithm"]
        if c.get("precision", "32-true") != "32-true":
            algo += f" ({c['precision']})"
        algo += "".join(f" {k}={v}" for k, v in c.get("model_args", {}).items())
        rows.setdefault((c["dataset"], algo), []).append(c)
    lines = [
        "| dataset | algorithm | seeds | final | best | behaviour data | budget |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    for (ds, algo), cs in sorted(rows.items()):
        beh = payload.get("behaviour", {}).get(ds)  # as recorded, not from the datasets here
        lines.append(
            f"| {ds} | {algo} | {len(cs)} | {ms([c['final'] for c in cs])} | "
            f"{ms([c['best'] for c in cs])} | {'' if beh is None else f'{beh:.1f}'} | "
            f"{cs[0]['updates'] // 1000}k x {cs[0]['batch']} |"
        )
    return "\n".join(lines)


def curve_report(payload: dict) -> str:
    """Markdown: each cell's evaluation curve and the mean of its last three evaluations (the
    coefficient study's rule)."""
    lines = [
        "| dataset | algorithm | seed | budget | normalised score at each evaluation | "
        "mean of the last three | behaviour data |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["cells"].values():
        algo = c["algorithm"] + "".join(f" {k}={v}" for k, v in c.get("model_args", {}).items())
        scores = [v for _, v in c["curve"]]
        at = ", ".join(f"{(s + 1) // 1000}k: {v:.1f}" for s, v in c["curve"])
        beh = payload.get("behaviour", {}).get(c["dataset"])  # recorded with the cells
        lines.append(
            f"| {c['dataset']} | {algo} | {c['seed']} | {c['updates'] // 1000}k x {c['batch']} | "
            f"{at} | {sum(scores[-3:]) / len(scores[-3:]):.1f} | "
            f"{'' if beh is None else f'{beh:.1f}'} |"
        )
    return "\n".join(lines)


def paired_precision_report(payload: dict) -> str:
    """Markdown: bf16-mixed vs float32 final scores paired by (dataset, algorithm, seed), per
    dataset x algorithm and over all pairs (mean difference with a 95% percentile bootstrap
    CI over the pairs, 10,000 resamples, fixed seed)."""
    import random
    import statistics

    cells = payload["cells"].values()
    by = {
        (c["dataset"], c["algorithm"], c["seed"], c.get("precision", "32-true")): c for c in cells
    }
    pairs = {}
    for (ds, algo, seed, prec), c in by.items():
        other = by.get((ds, algo, seed, "32-true"))
        if prec == "bf16-mixed" and other is not None:
            pairs.setdefault((ds, algo), []).append((other["final"], c["final"]))
    if not pairs:
        return "No finished pair yet."

    def ci(diffs) -> str:
        if len(diffs) < 2:
            return "no CI from one pair"
        rng = random.Random(0)
        means = sorted(statistics.mean(rng.choices(diffs, k=len(diffs))) for _ in range(10_000))
        return f"[{means[249]:+.1f}, {means[9749]:+.1f}]"

    lines = [
        "| dataset | algorithm | pairs (seeds) | float32 final | bf16-mixed final | "
        "bf16 - float32 (mean, 95% CI) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    everything = []
    for (ds, algo), ps in sorted(pairs.items()):
        diffs = [b - f for f, b in ps]
        everything += diffs
        lines.append(
            f"| {ds} | {algo} | {len(ps)} | {ms([f for f, _ in ps])} | "
            f"{ms([b for _, b in ps])} | {statistics.mean(diffs):+.1f} {ci(diffs)} |"
        )
    lines.append(
        f"| all | all | {len(everything)} | | | {statistics.mean(everything):+.1f} "
        f"{ci(everything)} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--precision",
        nargs="+",
        default=["32-true"],
        choices=["32-true", "bf16-mixed"],
        help="Lightning precision(s) of the training runs (bf16-mixed cells are kept apart)",
    )
    p.add_argument(
        "--model-arg",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a model init argument for every cell (repeatable), e.g. --model-arg beta_actor 0.1;"
        " it joins the cell's key and run folder",
    )
    add_out_arg(p, NAME)
    p.add_argument("--report", action="store_true", help="print the table and exit")
    add_executor_args(p)
    args = p.parse_args(argv)
    if args.report:
        print(report(load(args.out)))
        return
    cells = [
        make_cell(ds, algo, seed, prec, args)
        for seed in args.seeds  # seed-major: one seed of every cell first
        for ds in args.datasets
        for algo in args.algos
        for prec in args.precision  # both precisions of a pair one after the other
    ]
    meta = {
        "command": f"python -m benchmarks.policy_quality --out {args.out} --steps {args.steps} "
        f"--batch {args.batch} --eval-every {args.eval_every} --datasets "
        f"{' '.join(args.datasets)} --precision {' '.join(args.precision)}"
        + "".join(f" --model-arg {k} {v}" for k, v in args.model_arg),
        "behaviour": behaviour_scores(args.out, args.datasets),
    }
    payload = run_cells(args.out, cells, lambda c, d: summarise(c, d, args), meta, args)
    print(report(payload))


if __name__ == "__main__":
    main()
