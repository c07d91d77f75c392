"""Offline-policy quality: ReBRAC, IQL and TD3+BC x datasets x seeds, final and best
D4RL-normalised score, next to the behaviour data's score. A resumable queue: each finished
cell is written to benchmarks/results/policy_quality.json at once; rerun to continue.

    OMP_NUM_THREADS=1 python benchmarks/policy_quality.py [--steps 20000] [--batch 256]
        [--datasets halfcheetah-medium ...] [--algos rebrac iql td3bc] [--seeds 0 1 2]
        [--precision 32-true|bf16-mixed]
    python benchmarks/policy_quality.py --report      # the markdown table from the JSON

Each cell is ``lit-itpo fit --config conf/<dataset>/<algo>.yaml`` with the budget overridden
(the configs' own budget is the paper-like 100k x 1024); evaluation every ``--eval-every``
updates on 10 episodes of 1000 steps with fixed seeds. Needs the local datasets
(``lit-itpo collect --config conf/collect/<env>.yaml``).
"""

from __future__ import annotations

import argparse
import json

from cellqueue import REPO, drain, load, run_cell, scalars
from cellqueue import mean_std as ms

from lit_itpo.data.minari_io import datasets_root

NAME = "policy_quality"
DATASETS = {
    "halfcheetah-medium": "lit_itpo/halfcheetah/medium-v0",
    "halfcheetah-medium-replay": "lit_itpo/halfcheetah/medium-replay-v0",
    "hopper-medium": "lit_itpo/hopper/medium-v0",
}
ALGOS = {"rebrac": "ReBRAC", "iql": "IQL", "td3bc": "TD3+BC"}


def behaviour_score(dataset_id: str) -> float | None:
    """Mean normalised episode return of the dataset (its provenance record)."""
    prov = datasets_root() / dataset_id / "provenance.json"
    if not prov.is_file():
        return None
    return json.loads(prov.read_text()).get("normalized_score_mean")


def cell(ds: str, algo: str, seed: int, args) -> dict:
    tag = "" if args.precision == "32-true" else f"-{args.precision}"
    run_dir = REPO / "runs" / "quality" / f"{ds}-{algo}-s{seed}{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
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
        "--trainer.precision", args.precision,
    ]  # fmt: skip
    wall = run_cell(argv, run_dir, run_dir / "log.txt")
    curve = scalars(run_dir, "eval/normalized_score")
    if not curve:
        raise RuntimeError(f"no eval/normalized_score under {run_dir}")
    scores = [v for _, v in curve]
    return {
        "dataset": ds,
        "algorithm": ALGOS[algo],
        "seed": seed,
        "updates": args.steps,
        "batch": args.batch,
        "precision": args.precision,
        "final": scores[-1],
        "best": max(scores),
        "curve": curve,
        "wall_s": wall,
        "summary": f"final {scores[-1]:.1f} best {max(scores):.1f} ({wall / 60:.1f} min)",
        "command": "lit-itpo " + " ".join(argv),
    }


def report(payload: dict) -> str:
    """Markdown: one row per dataset x algorithm, mean +- std over the finished seeds."""
    rows = {}
    for c in payload["cells"].values():
        algo = c["algorithm"]
        if c.get("precision", "32-true") != "32-true":
            algo += f" ({c['precision']})"
        rows.setdefault((c["dataset"], algo), []).append(c)
    lines = [
        "| dataset | algorithm | seeds | final | best | behaviour data | budget |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    for (ds, algo), cs in sorted(rows.items()):
        beh = behaviour_score(DATASETS[ds])
        lines.append(
            f"| {ds} | {algo} | {len(cs)} | {ms([c['final'] for c in cs])} | "
            f"{ms([c['best'] for c in cs])} | {'' if beh is None else f'{beh:.1f}'} | "
            f"{cs[0]['updates'] // 1000}k x {cs[0]['batch']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--precision",
        default="32-true",
        choices=["32-true", "bf16-mixed"],
        help="Lightning precision of the training runs (cells of bf16-mixed are kept apart)",
    )
    p.add_argument("--report", action="store_true", help="print the table and exit")
    args = p.parse_args()
    if args.report:
        print(report(load(NAME)))
        return
    suffix = "" if args.precision == "32-true" else f"@{args.precision}"
    cells = [
        (
            f"{ds}/{algo}/s{seed}{suffix}",
            lambda ds=ds, algo=algo, seed=seed: cell(ds, algo, seed, args),
        )
        for seed in args.seeds  # seed-major: one seed of every cell first
        for ds in args.datasets
        for algo in args.algos
    ]
    meta = {
        "command": "python benchmarks/policy_quality.py "
        f"--steps {args.steps} --batch {args.batch} --eval-every {args.eval_every}",
        "behaviour": {ds: behaviour_score(did) for ds, did in DATASETS.items()},
    }
    payload = drain(NAME, cells, meta)
    print(report(payload))


if __name__ == "__main__":
    main()
