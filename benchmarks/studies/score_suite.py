"""Superseded by the gain suite (benchmarks/gain_suite.py, its protocol fixed before its runs).

Score suite: base ReBRAC vs ITPO with the diffusion world model vs ITPO with the
tilted one-step MeanFlow world model, per local dataset and training seed.

Each cell is one ``lit-itpo pipeline`` command (world model -> ReBRAC -> tilted MeanFlow -> alpha
per world model on a held-out env seed -> 10 evaluation episodes on fixed seeds, base and ITPO on
the same episodes) writing to ``runs/suite/<dataset>-s<seed>/``; cells run in parallel on this
machine or as a SLURM job array (``--executor``, see ``benchmarks.cells``), and each finished
cell goes to ``benchmarks/results/score_suite.json`` at once. Rerun the same command to go on:
recorded cells are skipped, a stopped cell's pipeline resumes at its first unfinished stage.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.score_suite [--datasets ...] [--seeds 0 1 2]
        [--policy-steps 30000] [--world-model-steps 10000] [--meanflow-steps 10000]
        [--workers 2 | --executor slurm --slurm-partition cpu --cpus-per-task 4]
    python -m benchmarks.studies.score_suite --report      # the markdown tables from the JSON
    python -m benchmarks.studies.score_suite --backfill-accuracy   # cells recorded without it
    OMP_NUM_THREADS=1 python -m benchmarks.studies.score_suite --rerun --datasets ... --seeds ...
        # finished cells again, on this machine: results/score_suite_rerun.json, set beside the
        # committed cells (--report); it reuses runs/suite/<cell>/, so start from an empty one

Needs the local datasets (``lit-itpo collect --config conf/collect/<env>.yaml``; walker2d and the
PointMaze set included): a cell to run whose dataset is missing is skipped, naming the command
that makes it; a recorded cell needs none. Budgets are CPU-sized, far below the paper's 1M
updates (README).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cells import Cell, add_executor_args, run_cells
from benchmarks.common import REPO, collect_command, load, save, scalars, side_by_side
from benchmarks.common import mean_std as ms
from benchmarks.gain_suite import DATASETS, data_record, pipeline_argv
from lit_itpo.data.minari_io import datasets_root

NAME = "studies/score_suite"
RERUN = "studies/score_suite_rerun"
# The paper's D4RL numbers (METHOD.md; D4RL data, 1M updates), for comparison only: ReBRAC ->
# ITPO where the paper summary gives both, else the published ReBRAC score.
PAPER = {
    "halfcheetah-medium": "65.9 → 70.1",
    "halfcheetah-medium-replay": "50.2 → 59.9",
    "hopper-medium": "102.0 (ReBRAC)",
    "hopper-medium-replay": "95.8 → 103.1",
    "walker2d-medium": "82.5 (ReBRAC)",
    "walker2d-medium-replay": "77.3 (ReBRAC) → 81.9",
}


ACCURACY_TAGS = ("state_rmse", "open_loop_rmse_h5", "policy_state_rmse")


RUNS = REPO / "runs" / "suite"


def run_dir(ds: str, seed: int, runs: Path = RUNS) -> Path:
    """Where the cell of ``ds`` and ``seed`` writes (its pipeline's ``out_dir``)."""
    return Path(runs) / f"{ds}-s{seed}"


def parse_cell(key: str, who: str) -> tuple[str, int]:
    """``<dataset>/s<seed>`` -> (dataset, seed); a bad key stops ``who`` with the form to use."""
    ds, _, seed = key.partition("/s")
    if ds not in DATASETS or not seed.isdigit():
        raise SystemExit(f"{who}: cell {key!r}: use <dataset>/s<seed>, e.g. pointmaze-umaze/s2")
    return ds, int(seed)


def budget(args) -> dict:
    """A cell's training and ITPO budget as recorded (a rerun must match the committed one);
    evaluation settings only where they differ from the suite's (10 full episodes, the
    pipeline's alpha grid)."""
    out = {
        "policy": f"{args.policy_steps} x {args.batch}",
        "world_model": args.world_model_steps,
        "meanflow": args.meanflow_steps,
        "particles": args.particles,
    }
    if args.episodes != 10 or args.max_episode_steps != "null":
        out["episodes"] = f"{args.episodes} x {args.max_episode_steps}"
    if args.alpha_grid:
        out["alpha_grid"] = args.alpha_grid
    return out


def accuracy(out) -> dict | None:
    """The MeanFlow stage's last validation: its own errors and the diffusion world model's on
    the same held-out transitions and policy episodes (``val/`` and ``val/diffusion/``), and the
    tilt's effective sample size; ``None`` if that stage's logs are absent."""
    res = side_by_side(out / "meanflow", ACCURACY_TAGS)
    res.pop("tilt_eta")
    return None if any(v is None for k, v in res.items() if k != "tilt_ess") else res


def make_cell(ds: str, seed: int, args: argparse.Namespace) -> Cell:
    """The ``lit-itpo pipeline`` command of one dataset and training seed at ``args``' budget."""
    out = run_dir(ds, seed, args.runs)
    p = "--pipeline."
    argv = pipeline_argv(ds, out, args.world_model_steps, args.policy_steps, args.meanflow_steps)
    argv += [
        f"{p}policy_batch_size", str(args.batch),
        f"{p}policy_eval_every", str(args.eval_every),
        f"{p}policy_eval_episodes", str(args.episodes),
        f"{p}num_episodes", str(args.episodes),
        f"{p}max_episode_steps", args.max_episode_steps,
        f"{p}particles", str(args.particles),
        f"{p}seed", str(seed),
    ]  # fmt: skip
    if args.alpha_grid:
        argv += [f"{p}alpha_grid", args.alpha_grid]
    return Cell(f"{ds}/s{seed}", tuple(argv), out, {"dataset": ds, "seed": seed})


def summarise(cell: Cell, done: dict, spent: dict) -> dict:
    """A finished cell's record: the pipeline's ``results.json``, the policy's evaluation curve
    and both world models' accuracy from the logs, the dataset it trained on."""
    ds, out = cell.info["dataset"], Path(cell.run_dir)
    res = json.loads((out / "results.json").read_text())
    curve = scalars(out / "policy", "eval/normalized_score")
    wall = done["wall_s"]
    return {
        "dataset": ds,
        "seed": cell.info["seed"],
        "budget": spent,
        "base_final": res["base"]["normalized_score"],
        "base_best": max((v for _, v in curve), default=None),
        "base_curve": curve,
        "itpo_diffusion": res["itpo_diffusion"]["normalized_score"],
        "itpo_meanflow": res["itpo_meanflow"]["normalized_score"],
        "alpha": res["alpha"],
        "success_rate": {
            k: res[k].get("success_rate") for k in ("base", "itpo_diffusion", "itpo_meanflow")
        },
        "ms_per_step": {n: res[f"itpo_{n}"]["ms_per_step"] for n in ("diffusion", "meanflow")},
        "accuracy": accuracy(out),
        "data": data_record(ds),
        "wall_s": wall,
        "summary": (
            f"base {res['base']['normalized_score']:.1f}, ITPO diffusion "
            f"{res['itpo_diffusion']['normalized_score']:.1f}, MeanFlow "
            f"{res['itpo_meanflow']['normalized_score']:.1f} ({wall / 60:.0f} min)"
        ),
        "command": cell.command,
    }


def report(payload: dict) -> str:
    """Markdown: one row per dataset, mean +- std over the finished seeds."""
    rows: dict[str, list[dict]] = {}
    for c in payload["cells"].values():
        rows.setdefault(c["dataset"], []).append(c)
    lines = [
        "| dataset | seeds | ReBRAC final | ReBRAC best | ITPO, diffusion | ITPO, MeanFlow | "
        "alpha (diff. / MF) | success rate (base / diff. / MF) | budget (policy; WM; MF) | "
        "min / cell (last sitting) | paper (D4RL, ReBRAC → ITPO) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    for ds in DATASETS:
        cs = sorted(rows.get(ds, []), key=lambda c: c["seed"])
        if not cs:
            lines.append(f"| {ds} | 0 | not run yet | | | | | | | | {PAPER.get(ds, '')} |")
            continue
        b = cs[0]["budget"]
        alphas = ", ".join(f"{c['alpha']['diffusion']:g} / {c['alpha']['meanflow']:g}" for c in cs)
        runs = ("base", "itpo_diffusion", "itpo_meanflow")
        success = (
            " / ".join(ms([c["success_rate"][k] for c in cs], digits=2) for k in runs)
            if cs[0].get("success_rate", {}).get("base") is not None
            else ""
        )
        lines.append(
            f"| {ds} | {len(cs)} | {ms([c['base_final'] for c in cs])} | "
            f"{ms([c['base_best'] for c in cs])} | {ms([c['itpo_diffusion'] for c in cs])} | "
            f"{ms([c['itpo_meanflow'] for c in cs])} | {alphas} | {success} | "
            f"{b['policy']}; {b['world_model'] // 1000}k; {b['meanflow'] // 1000}k | "
            f"{statistics.mean(c['wall_s'] for c in cs) / 60:.0f} | {PAPER.get(ds, '')} |"
        )
    return "\n".join(lines)


def gain_report(payload: dict, same: float = 0.05) -> str:
    """Markdown: ITPO's gain over its own seed's final ReBRAC policy (paired by seed), per world
    model: mean +- std, and how many seeds went up / stayed within ``same`` / went down."""

    def cols(cs: list[dict]) -> str:
        out = []
        for wm in ("itpo_diffusion", "itpo_meanflow"):
            g = [c[wm] - c["base_final"] for c in cs]
            up, down = sum(x > same for x in g), sum(x < -same for x in g)
            out += [ms(g), f"{up} / {len(g) - up - down} / {down}"]
        return " | ".join(out)

    lines = [
        "| dataset | seeds | gain, diffusion | up / same / down | gain, MeanFlow | "
        "up / same / down |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    done = list(payload["cells"].values())
    if not done:
        return "No finished cell yet."
    for ds in DATASETS:
        cs = [c for c in done if c["dataset"] == ds]
        if cs:
            lines.append(f"| {ds} | {len(cs)} | {cols(cs)} |")
    lines.append(f"| all cells | {len(done)} | {cols(done)} |")
    return "\n".join(lines)


def accuracy_report(payload: dict) -> str:
    """Markdown: the two world models' errors at the suite's budgets, mean +- std over seeds."""
    names = {"state_rmse": "one-step", "open_loop_rmse_h5": "H=5 open-loop"}
    names["policy_state_rmse"] = "one-step on policy's (s, a)"
    lines = [
        "| dataset | seeds | "
        + " | ".join(f"{names[t]}: diffusion | MeanFlow" for t in ACCURACY_TAGS)
        + " | tilt ESS |",
        "| --- | --- |" + " --- | --- |" * len(ACCURACY_TAGS) + " --- |",
    ]
    for ds in DATASETS:
        cs = [c.get("accuracy") for c in payload["cells"].values() if c["dataset"] == ds]
        cs = [a for a in cs if a]
        if not cs:
            continue
        cols = [
            ms([a[f"{m}/{t}"] for a in cs], digits=3)
            for t in ACCURACY_TAGS
            for m in ("diffusion", "meanflow")
        ]
        ess = ms([a["tilt_ess"] for a in cs], digits=2)
        lines.append(f"| {ds} | {len(cs)} | " + " | ".join(cols) + f" | {ess} |")
    if len(lines) == 2:
        return "No finished cell has its accuracy recorded yet (`--backfill-accuracy`)."
    return "\n".join(lines)


def _fmt(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def rerun_report(payload: dict) -> str:
    """Markdown: each rerun cell beside the committed cell of the same dataset and seed (same
    command, another sitting and possibly another machine), and the paired differences."""
    committed = load(NAME)["cells"]
    columns = {  # header: (value of a cell, format)
        "ReBRAC final": (lambda c: c["base_final"], ".1f"),
        "ReBRAC best": (lambda c: c["base_best"], ".1f"),
        "ITPO, diffusion": (lambda c: c["itpo_diffusion"], ".1f"),
        "ITPO, MeanFlow": (lambda c: c["itpo_meanflow"], ".1f"),
        "alpha, diffusion": (lambda c: c["alpha"]["diffusion"], "g"),
        "alpha, MeanFlow": (lambda c: c["alpha"]["meanflow"], "g"),
        "one-step RMSE, diffusion": (
            lambda c: (c.get("accuracy") or {}).get("diffusion/state_rmse"), ".3f"),
        "one-step RMSE, MeanFlow": (
            lambda c: (c.get("accuracy") or {}).get("meanflow/state_rmse"), ".3f"),
    }  # fmt: skip
    lines = [
        "| cell | machine (committed → rerun) | rerun's dataset: mean return (normalised) | "
        + " | ".join(f"{h} (committed → rerun)" for h in columns)
        + " |",
        "| --- | --- | --- |" + " --- |" * len(columns),
    ]
    gaps: dict[str, list[float]] = {"base_final": [], "itpo_diffusion": [], "itpo_meanflow": []}
    for key, r in sorted(payload["cells"].items()):
        c = committed.get(key)
        if c is None:
            continue
        for k, v in gaps.items():
            v.append(r[k] - c[k])
        data = r.get("data") or {}
        behaviour = f"{_fmt(data.get('return_mean'), '.1f')} "
        behaviour += f"({_fmt(data.get('normalized_score_mean'), '.1f')})" if data else ""
        cols = [f"{_fmt(get(c), f)} → {_fmt(get(r), f)}" for get, f in columns.values()]
        lines.append(
            f"| {key} | {c['machine']['cpu']} → {r['machine']['cpu']} | {behaviour.strip()} | "
            + " | ".join(cols)
            + " |"
        )
    if len(lines) == 2:
        return "No cell rerun yet."
    names = {"base_final": "ReBRAC", "itpo_diffusion": "diffusion-ITPO"}
    names["itpo_meanflow"] = "MeanFlow-ITPO"
    diffs = "; ".join(f"{names[k]} {ms(v)}" for k, v in gaps.items())
    return "\n".join(lines + ["", f"Rerun minus committed score, over these cells: {diffs}."])


def backfill_accuracy(runs: Path = RUNS) -> None:
    """Record ``accuracy`` for finished cells that lack it, from their run directories."""
    payload = load(NAME)
    for key, c in payload["cells"].items():
        if c.get("accuracy") is None:
            c["accuracy"] = accuracy(run_dir(c["dataset"], c["seed"], runs))
            print(f"{key}: {'filled' if c['accuracy'] else 'no MeanFlow logs here'}")
    save(NAME, payload)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The suite's flags: budget, datasets and seeds, where cells run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--policy-steps", type=int, default=30_000)
    p.add_argument("--world-model-steps", type=int, default=10_000)
    p.add_argument("--meanflow-steps", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per policy")
    p.add_argument(
        "--max-episode-steps", default="null", help="cut evaluation episodes (null: env's limit)"
    )
    p.add_argument("--alpha-grid", default=None, help="e.g. '[5e-5]' (default: the pipeline's)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=RUNS, help="the cells' run directories go here")
    p.add_argument("--report", action="store_true", help="print the tables and exit")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="run finished cells again on this machine (into results/score_suite_rerun.json, "
        "reported beside the committed ones); it resumes from and reuses what runs/suite/<cell>/ "
        "holds, so on the machine that made a cell move that directory away first",
    )
    p.add_argument(
        "--backfill-accuracy",
        action="store_true",
        help="record the world models' accuracy for finished cells from their run directories",
    )
    add_executor_args(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.backfill_accuracy:
        backfill_accuracy(args.runs)
    if args.report or args.backfill_accuracy:
        payload = load(NAME)
        print("\n\n".join(f(payload) for f in (report, gain_report, accuracy_report)))
        print("\n" + rerun_report(load(RERUN)))
        return
    finished = load(NAME)["cells"]
    name = RERUN if args.rerun else NAME
    recorded = load(name)["cells"]
    keys = [
        (ds, seed)
        for seed in args.seeds  # seed-major: seed 0 of every dataset first
        for ds in args.datasets
        if not args.rerun or f"{ds}/s{seed}" in finished
    ]
    # a cell to run needs its dataset here; a recorded one needs nothing
    need = {ds for ds, seed in keys if f"{ds}/s{seed}" not in recorded}
    missing = [ds for ds in need if not (datasets_root() / DATASETS[ds]).is_dir()]
    for ds in sorted(missing):
        print(f"skipping {ds}: {DATASETS[ds]} is not under {datasets_root()}; make it with: "
              f"{collect_command(DATASETS[ds])}")  # fmt: skip
    cells = [
        make_cell(ds, seed, args)
        for ds, seed in keys
        if ds not in missing or f"{ds}/s{seed}" in recorded
    ]
    command = (
        "python -m benchmarks.studies.score_suite "
        f"--policy-steps {args.policy_steps} --world-model-steps {args.world_model_steps} "
        f"--meanflow-steps {args.meanflow_steps} --batch {args.batch} --particles {args.particles}"
    )
    if "episodes" in budget(args):
        command += f" --episodes {args.episodes} --max-episode-steps {args.max_episode_steps}"
    if args.alpha_grid:
        command += f" --alpha-grid '{args.alpha_grid}'"
    if args.rerun:
        for c in cells:
            if (was := finished[c.key]["budget"]) != budget(args):
                raise SystemExit(
                    f"score_suite --rerun: {c.key} was run with budget {was}, "
                    "not this command's; pass the committed cell's --policy-steps / "
                    "--world-model-steps / --meanflow-steps / --batch / --particles."
                )
    meta = {"command": command + (" --rerun" if args.rerun else "")}
    again = (
        None if args.rerun else f"--rerun runs them again here into benchmarks/results/{RERUN}.json"
    )
    payload = run_cells(
        name, cells, lambda c, d: summarise(c, d, budget(args)), meta, args, again=again
    )
    print(rerun_report(payload) if args.rerun else report(payload))


if __name__ == "__main__":
    main()
