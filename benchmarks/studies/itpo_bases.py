"""ITPO on different bases: does its gain depend on the policy it starts from?

The same world model and episodes with each policy stage's halfcheetah-medium checkpoints as
the base, training seeds 0, 1 and 2 (ReBRAC and IQL at 20k x 256 from the precision study,
TD3+BC at 60k x 256 from its budget runs: the runs named in ``BASES``), one after another in
this process, seed-major. Per base and seed: alpha chosen from the grid on 2 held-out episodes
(one batch), then base vs ITPO on 10 full-length episodes (seeds 1000000 + i), the paired
gain with its 95% bootstrap interval over the episodes and the ascent rate. Per base over
seeds: the mean gain with a 95% bootstrap interval over the seeds (3 values: a coarse
interval). World model: the tilted MeanFlow model of the ascent-rate benchmark's run
(``runs/ascent/mf``: 5k updates, tilted toward a ReBRAC policy), M = 64, H = 5, E = 1, the same
for every base and seed, so bases are compared on one world model. Protocol fixed before the
runs (seed 0's cells first, seeds 1 and 2 added later under the same settings); no cell is
rerun.

The TD3+BC bases of seeds 1 and 2 are trained by

    OMP_NUM_THREADS=1 python -m benchmarks.policy_quality --out td3bc_budget --steps 60000 \
        --batch 256 --eval-every 10000 --datasets halfcheetah-medium --algos td3bc --seeds 1 2 \
        --precision 32-true

    OMP_NUM_THREADS=1 MINARI_DATASETS_PATH=<root> python -m benchmarks.studies.itpo_bases \\
        [--out NAME]
    python -m benchmarks.studies.itpo_bases --report

A cell recorded in benchmarks/results/studies/itpo_bases.json is not run again; ``--out NAME``
runs them again into results/studies/NAME.json (its ITPO runs under runs/studies/NAME/). A
missing dataset, world model or base checkpoint stops the run before any cell starts, naming
the command that makes it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence

import numpy as np

from benchmarks.common import (
    REPO,
    add_out_arg,
    checkpoint_run,
    load,
    require,
    require_dataset,
    run_in_process,
    stage_checkpoint,
)
from lit_itpo.itpo import ITPOConfig
from lit_itpo.stages import EvalSpec, evaluate
from lit_itpo.stats import bootstrap_ci

NAME = "studies/itpo_bases"
DATASET = "lit_itpo/halfcheetah/medium-v0"
CKPT = "tb/version_0/checkpoints/last.ckpt"
BASES = {  # base -> its run directory for a training seed
    "ReBRAC (20k x 256)": "runs/precision_study/halfcheetah-medium-rebrac-s{seed}",
    "IQL (20k x 256)": "runs/precision_study/halfcheetah-medium-iql-s{seed}",
    "TD3+BC (60k x 256)": "runs/td3bc_budget/halfcheetah-medium-td3bc-s{seed}",
}
# base -> the command that trains its run directory for a training seed
MADE_BY = {
    "ReBRAC (20k x 256)": "python -m benchmarks.policy_quality --out precision_study --steps 20000 "
    "--batch 256 --eval-every 5000 --datasets halfcheetah-medium --algos rebrac --seeds {seed} "
    "--precision 32-true",
    "IQL (20k x 256)": "python -m benchmarks.policy_quality --out precision_study --steps 20000 "
    "--batch 256 --eval-every 5000 --datasets halfcheetah-medium --algos iql --seeds {seed} "
    "--precision 32-true",
    "TD3+BC (60k x 256)": "python -m benchmarks.policy_quality --out td3bc_budget --steps 60000 "
    "--batch 256 --eval-every 10000 --datasets halfcheetah-medium --algos td3bc --seeds {seed} "
    "--precision 32-true",
}
SEEDS = (0, 1, 2)
WORLD_MODEL = "runs/ascent/mf"
GRID = [5e-7, 5e-6, 5e-5, 5e-4]


def measure(
    base: str, run: str, seed: int, horizon: int = ITPOConfig.horizon, name: str = NAME
) -> dict:
    """One base and seed: alpha on the held-out episodes, then base vs ITPO (H = ``horizon``)
    on the evaluation episodes; run directories under ``runs/<name>/``."""
    t0 = time.time()
    slug = f"{base.split()[0].replace('+', '')}-s{seed}"
    if horizon != ITPOConfig.horizon:
        slug += f"-H{horizon}"
    common = dict(data_dir=None, seed=0, sample_steps=None)
    spec = lambda tag, **kw: EvalSpec(  # noqa: E731
        "conf/embedded/itpo.yaml", str(REPO / "runs" / name / slug / tag), DATASET,
        str(REPO / run / CKPT), {"meanflow": str(REPO / WORLD_MODEL / CKPT)}, **kw, **common,
    )  # fmt: skip
    sel = evaluate(
        spec("alpha", itpo=ITPOConfig(horizon=horizon), alpha_grid=GRID, episodes=2, env_seed=999)
    )
    alpha = sel.alpha["meanflow"]
    cfg = ITPOConfig(lr=alpha, horizon=horizon)
    final = evaluate(spec("final", itpo=cfg, episodes=10, env_seed=1_000_000))
    d = final.itpo["meanflow"]
    found = sorted((REPO / "runs" / name / slug / "final").glob("tb/*/itpo_episodes.json"))
    eps = json.loads(found[-1].read_text()) if found else None
    return {
        "base": base,
        "seed": seed,
        "horizon": horizon,
        "alpha": alpha,
        "held_out": {f"{a:g}": s.return_mean for a, s in sel.grid["meanflow"].items()}
        | {"base": sel.base.return_mean},
        "base_score": final.base.normalized_score,
        "itpo_score": d.score.normalized_score,
        "gain": d.gain,
        "gain_ci": list(d.gain_ci),
        "ascent_rate": d.ascent_rate,
        "ms_per_step": d.ms_per_step,
        # every evaluation episode's raw return (the same env seeds for base and ITPO)
        "episode_returns": None
        if eps is None
        else {"base": eps["base"], "itpo": eps["itpo"]["meanflow"]["return"]},
        "wall_s": time.time() - t0,
        "summary": f"alpha {alpha:g}: {final.base.normalized_score:.1f} -> "
        f"{d.score.normalized_score:.1f} ({d.gain:+.2f})",
    }


def key(base: str, seed: int) -> str:
    return f"{base} s{seed}"


def load_cells() -> dict:
    """The recorded cells, by :func:`key`."""
    return load(NAME)["cells"]


def report(payload: dict) -> str:
    """Markdown: each base and seed's cell, then per base the mean gain over its seeds."""
    lines = [
        "| base | seed | alpha chosen | base score | ITPO score | gain [95% CI] | ascent rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    per_base: dict[str, list[float]] = {}
    for c in payload["cells"].values():
        lo, hi = c["gain_ci"]
        asc = "n/a" if c["ascent_rate"] is None else f"{100 * c['ascent_rate']:.0f}%"
        lines.append(
            f"| {c['base']} | {c.get('seed', 0)} | {c['alpha']:g} | {c['base_score']:.1f} | "
            f"{c['itpo_score']:.1f} | {c['gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {asc} |"
        )
        per_base.setdefault(c["base"], []).append(c["gain"])
    lines += [
        "",
        "| base | seeds | mean gain over seeds [95% bootstrap CI over seeds] | "
        "seeds with alpha 0 (fallback) |",
        "| --- | --- | --- | --- |",
    ]
    for base, gains in per_base.items():
        fallbacks = sum(c["alpha"] == 0 for c in payload["cells"].values() if c["base"] == base)
        ci = "[{:+.2f}, {:+.2f}]".format(*bootstrap_ci(gains)) if len(gains) > 1 else "(one seed)"
        lines.append(f"| {base} | {len(gains)} | {np.mean(gains):+.2f} {ci} | {fallbacks} |")
    return "\n".join(lines)


def require_inputs(who: str, bases: Iterable[tuple[str, int]]) -> None:
    """Stop, one line, where the dataset, the world model or the checkpoint of one of ``bases``
    (``(base, training seed)`` pairs) is missing, naming the command that makes it."""
    require_dataset(who, DATASET)
    out, command = checkpoint_run(DATASET)
    made = stage_checkpoint(out, "meanflow")
    require(who, "the world model", f"{WORLD_MODEL}/{CKPT}", f"{command} (then copy {made} there)")
    for base, seed in bases:
        run = BASES[base].format(seed=seed)
        require(who, f"the base {base} s{seed}", f"{run}/{CKPT}", MADE_BY[base].format(seed=seed))


def run_or_report(argv, name: str, doc: str, cells, report_fn, bases) -> None:
    """The shared command line of the paired-ITPO studies: run the missing cells (``cells(out)``
    gives ``(key, thunk)`` pairs, the runs under ``runs/<out>/``; recorded ones are kept and
    said so, ``--out`` runs them again beside them), then print the report. ``bases``: each
    cell's ``(base, training seed)``, whose inputs are checked before any cell runs."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--report", action="store_true", help="print the table, run nothing")
    add_out_arg(p, name)
    args = p.parse_args(argv)
    if not args.report:
        command = "python -m benchmarks." + name.replace("/", ".")
        command += f" --out {args.out}" if args.out != name else ""

        def check(keys: list[str]) -> None:
            require_inputs(name.split("/")[-1], (bases[k] for k in keys))

        run_in_process(args.out, cells(args.out), {"command": command}, check=check)
    print(report_fn(load(args.out)))


def main(argv: Sequence[str] | None = None) -> None:
    bases = {key(b, seed): (b, seed) for seed in SEEDS for b in BASES}
    run_or_report(
        argv,
        NAME,
        __doc__,
        lambda out: [
            (k, lambda b=b, seed=seed: measure(b, BASES[b].format(seed=seed), seed, name=out))
            for k, (b, seed) in bases.items()
        ],
        report,
        bases,
    )


if __name__ == "__main__":
    main()
