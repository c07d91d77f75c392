"""ITPO's imagined horizon on halfcheetah-medium: does a shorter H gain more?

On halfcheetah-medium the ascent rate of ITPO's gradient falls with the horizon (H = 1, 2: 71-81%
of states; H = 5, the paper's: 63-66%; ``benchmarks.ascent_rate --horizon``): the world models'
multi-step derivatives mislead where their one-step ones do not. This benchmark asks whether
that shows in the score. Protocol fixed before the runs:

- bases: ReBRAC 20k x 256, training seeds 0, 1, 2 (the precision study's runs, as in
  ``benchmarks.itpo_bases``); world model: the same tilted MeanFlow checkpoint; M = 64, E = 1;
- arms: H = 2 (run here) and H = 5 (the ReBRAC cells of ``benchmarks.itpo_bases``: the same
  bases, world model, alpha grid, held-out and evaluation episodes);
- per arm and seed: alpha from the grid on 2 held-out episodes, then 10 full-length evaluation
  episodes (env seeds 1000000 + i) for base and ITPO;
- comparison: per episode, ITPO's normalised score at H = 2 minus at H = 5 (the base's episodes
  are the same, so this is the difference of the gains), pooled over seeds; 95% stratified
  bootstrap interval (strata = seeds);
- rule: H = 2 becomes halfcheetah's horizon (the gain suite's per-dataset ITPO setting) only
  if that interval lies above 0; otherwise the paper's H = 5 stays. Each cell runs once.

    OMP_NUM_THREADS=1 MINARI_DATASETS_PATH=<root> python -m benchmarks.studies.itpo_horizon \\
        [--out NAME]
    python -m benchmarks.studies.itpo_horizon --report

A recorded cell is not run again; ``--out NAME`` runs them again into results/studies/NAME.json
(the H = 5 arm stays itpo_bases' committed cells). Missing inputs stop the run before any cell
starts, naming the command that makes them (as in ``benchmarks.itpo_bases``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.studies import itpo_bases
from lit_itpo.data.scores import normalized_score, reference_scores
from lit_itpo.stats import stratified_bootstrap_ci

NAME = "studies/itpo_horizon"
BASE = "ReBRAC (20k x 256)"
HORIZON = 2
REF = reference_scores("HalfCheetah-v5")


def episode_scores(cell: dict) -> np.ndarray:
    """A cell's ITPO normalised score per evaluation episode."""
    return np.array([normalized_score(r, REF) for r in cell["episode_returns"]["itpo"]])


def compare(short: dict, paper: dict) -> dict | None:
    """Pooled per-episode ITPO score difference (short horizon minus H = 5) over the seeds both
    arms have, with its stratified bootstrap interval and the rule's verdict."""
    strata = {}
    for c in short.values():
        ref = paper.get(itpo_bases.key(BASE, c["seed"]))
        if ref is None or not ref.get("episode_returns") or not c.get("episode_returns"):
            continue
        strata[str(c["seed"])] = episode_scores(c) - episode_scores(ref)
    if not strata:
        return None
    every = np.concatenate(list(strata.values()))
    lo, hi = stratified_bootstrap_ci(strata)
    return {"seeds": len(strata), "episodes": len(every), "mean": float(every.mean()),
            "ci": [lo, hi], "short_wins": bool(lo > 0)}  # fmt: skip


def report(payload: dict, paper: dict | None = None) -> str:
    """Markdown: both arms' cells per seed, then the paired difference and the verdict."""
    paper = itpo_bases.load_cells() if paper is None else paper
    lines = [
        "| seed | H | alpha chosen | base score | ITPO score | gain [95% CI] | ascent rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    short = payload["cells"]
    for c in short.values():
        for arm in (paper.get(itpo_bases.key(BASE, c["seed"])), c):
            if arm is None:
                continue
            lo, hi = arm["gain_ci"]
            asc = "n/a" if arm["ascent_rate"] is None else f"{100 * arm['ascent_rate']:.0f}%"
            lines.append(
                f"| {arm['seed']} | {arm.get('horizon', 5)} | {arm['alpha']:g} | "
                f"{arm['base_score']:.1f} | {arm['itpo_score']:.1f} | "
                f"{arm['gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {asc} |"
            )
    cmp = compare(short, paper)
    if cmp is not None:
        lo, hi = cmp["ci"]
        verdict = (
            f"H = {HORIZON} wins: it becomes halfcheetah's horizon"
            if cmp["short_wins"]
            else "the interval does not lie above 0: the paper's H = 5 stays"
        )
        lines += [
            "",
            f"ITPO score, H = {HORIZON} minus H = 5, per episode over {cmp['seeds']} seeds "
            f"({cmp['episodes']} episodes): {cmp['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]; {verdict}.",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    run = itpo_bases.BASES[BASE]
    bases = {f"{itpo_bases.key(BASE, seed)} H{HORIZON}": (BASE, seed) for seed in itpo_bases.SEEDS}
    itpo_bases.run_or_report(
        argv,
        NAME,
        __doc__,
        lambda out: [
            (
                k,
                lambda seed=seed: itpo_bases.measure(
                    BASE, run.format(seed=seed), seed, horizon=HORIZON, name=out
                ),
            )
            for k, (_, seed) in bases.items()
        ],
        report,
        bases,
    )


if __name__ == "__main__":
    main()
