"""Superseded by the gain suite's rule (alpha on 5 held-out episodes) and pendulum_exact.

Alpha chosen on one held-out episode (the paper's protocol, the score suite's) vs on several.

For score-suite cells run on this machine, reruns only the step-size selection with
``--episodes`` held-out episodes per grid point (env seeds 999 + i; the suite's single episode is
seed 999), on that cell's own checkpoints (``runs/suite/<dataset>-s<seed>/``, which the score
suite leaves there; a fresh machine makes them with ``score_suite --rerun``), and scores the
chosen alpha on the suite's 10 evaluation episodes. The one-episode choice is that run's own
(its ``results.json``); where the new choice equals it, its recorded score is taken (same
checkpoints, alpha and episodes); alpha = 0 is the base policy's score; only a new non-zero
choice runs the 10 episodes again. The runs live under ``runs/suite/<cell>/alpha_x<episodes>/``
and resume like the pipeline's; each finished cell is recorded at once, a rerun does the rest,
and a recorded cell is not run again (``--out NAME`` runs it again into
results/studies/NAME.json, its runs under ``alpha_x<episodes>_NAME/``). A suite run or dataset
that a cell to run reads and that is missing stops the run before any cell starts, naming the
command that makes it.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.alpha_selection \
        [--cells walker2d-medium-replay/s1 ...] [--episodes 5] [--out NAME]
    python -m benchmarks.studies.alpha_selection --report
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.common import add_out_arg, load, require_dataset, run_in_process
from benchmarks.common import mean_std as ms
from benchmarks.studies.score_suite import parse_cell, run_dir

NAME = "studies/alpha_selection"
MODELS = ("diffusion", "meanflow")
# The two large losses, the split walker2d-medium-replay seed 0, and a halfcheetah-medium gain.
CELLS = (
    "pointmaze-umaze/s2",
    "walker2d-medium-replay/s1",
    "walker2d-medium-replay/s0",
    "halfcheetah-medium/s0",
)


def evaluation(sc: dict, root: Path, world_models: dict, lr: float | None = None, **changes):
    """An ITPO evaluation (``lit_itpo.stages.evaluate``: reused when done, like the pipeline's)
    with the suite run's own settings (its ``results.json``: config and checkpoints), at step
    size ``lr`` or with ``changes`` (episodes, env seed, alpha grid)."""
    from lit_itpo.itpo import ITPOConfig
    from lit_itpo.stages import EvalSpec, evaluate

    c = sc["config"]
    itpo = ITPOConfig(horizon=c["horizon"], particles=c["particles"], inner_steps=c["inner_steps"])
    itpo = itpo if lr is None else replace(itpo, lr=lr)
    spec = EvalSpec(
        c["itpo_config"], str(root), sc["dataset_id"], sc["checkpoints"]["policy"], world_models,
        itpo, data_dir=c["data_dir"], seed=c["seed"], max_episode_steps=c["max_episode_steps"],
        sample_steps=c["sample_steps"], sample_variance=c["sample_variance"],
    )  # fmt: skip
    return evaluate(replace(spec, **changes))


def suite_run(key: str) -> tuple[str, int, Path, dict]:
    """``(dataset, seed, run directory, its results.json)`` of the suite run ``key``; stops,
    naming the command that makes it, where that run or its dataset is not on this machine."""
    ds, seed = parse_cell(key, "alpha_selection")
    src = run_dir(ds, seed)
    sc = json.loads((src / "results.json").read_text()) if (src / "results.json").is_file() else {}
    if "checkpoints" not in sc:
        why = "is absent" if not sc else "names no checkpoints (an earlier pipeline's)"
        raise SystemExit(
            f"alpha_selection: {key} needs a finished score-suite run on this machine "
            f"({src / 'results.json'} {why}); run `python -m benchmarks.studies.score_suite "
            f"--datasets "
            f"{ds} --seeds {seed}` (or with --rerun for a cell already in the committed results)."
        )
    require_dataset("alpha_selection", sc["dataset_id"], sc["config"]["data_dir"])
    return ds, seed, src, sc


def cell(key: str, episodes: int, name: str = NAME) -> dict:
    """Alpha chosen on ``episodes`` held-out episodes for the suite run ``key``, and scored;
    the runs under its ``alpha_x<episodes>`` folder (another results ``name``: its own)."""
    ds, seed, src, sc = suite_run(key)
    # The one-episode choice and scores are the run's own (the suite pipeline's results.json),
    # so both choices are made on the same checkpoints.
    ck = sc["checkpoints"]
    ckpts = {"diffusion": ck["world_model"], "meanflow": ck["meanflow"]}
    out = src / (f"alpha_x{episodes}" + ("" if name == NAME else f"_{Path(name).name}"))
    t0 = time.perf_counter()
    grid = sc["config"]["alpha_grid"]
    sel = evaluation(
        sc, out / "alpha", ckpts, alpha_grid=grid, episodes=episodes,
        env_seed=sc["config"]["alpha_seed"],
    )  # fmt: skip
    base = sc["base"]["normalized_score"]
    res = {"dataset": ds, "seed": seed, "episodes": episodes, "base": base}
    res["held_out"] = {
        f"{lr:g}": {"base": sel.base.return_mean} | {n: sel.grid[n][lr].return_mean for n in MODELS}
        for lr in grid
    }
    res["held_out_1"] = {  # the same grid on the run's one held-out episode
        lr: {"base": m["base_return"]} | {n: m[f"itpo_{n}_return"] for n in MODELS}
        for lr, m in sc["alpha_selection"].items()
    }
    for n in MODELS:
        alpha, score_1 = sel.alpha[n], sc[f"itpo_{n}"]["normalized_score"]
        if alpha == 0.0:
            score, source = base, "base policy"
        elif alpha == sc["alpha"][n]:
            score, source = score_1, "score suite's run"
        else:
            final = evaluation(
                sc, out / f"final_{n}", {n: ckpts[n]}, lr=alpha,
                episodes=sc["config"]["num_episodes"], env_seed=sc["config"]["eval_seed"],
            )  # fmt: skip
            score, source = final.itpo[n].score.normalized_score, "run here"
        res[n] = {
            "alpha_1": sc["alpha"][n],
            "score_1": score_1,
            "alpha": alpha,
            "score": score,
            "source": source,
        }
    wall = time.perf_counter() - t0
    res["wall_s"] = wall
    res["summary"] = (
        ", ".join(
            f"{n} alpha {res[n]['alpha_1']:g} -> {res[n]['alpha']:g}: {res[n]['score_1']:.1f} -> "
            f"{res[n]['score']:.1f}"
            for n in MODELS
        )
        + f" ({wall / 60:.0f} min)"
    )
    return res


def report(payload: dict) -> str:
    """Markdown: per cell, each world model's alpha and score chosen on 1 vs N episodes."""
    lines = [
        "| cell | held-out episodes | ReBRAC | diffusion: alpha (1 ep → N) | score (1 ep → N) | "
        "MeanFlow: alpha (1 ep → N) | score (1 ep → N) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    cells = sorted(payload["cells"].items())
    for key, c in cells:
        cols = []
        for n in MODELS:
            d = c[n]
            cols += [f"{d['alpha_1']:g} → {d['alpha']:g}", f"{d['score_1']:.1f} → {d['score']:.1f}"]
        lines.append(f"| {key} | {c['episodes']} | {c['base']:.1f} | " + " | ".join(cols) + " |")
    if cells:
        gains = []
        for n in MODELS:
            g1 = [c[n]["score_1"] - c["base"] for _, c in cells]
            gn = [c[n]["score"] - c["base"] for _, c in cells]
            gains.append(f"{n}: {ms(g1)} → {ms(gn)}")
        lines.append("")
        lines.append("Gain over ReBRAC on these cells, 1 held-out episode → N: " + "; ".join(gains))
        lines += ["", held_out_report(payload)]
    return "\n".join(lines)


def held_out_report(payload: dict) -> str:
    """Markdown: the held-out mean return at every grid point, on 1 episode and on N."""

    def returns(d: dict | None) -> str:
        if d is None:
            return "n/a"
        return " / ".join(f"{d[k]:.1f}" for k in ("base", *MODELS))

    lines = [
        "| cell | alpha | held-out return, 1 episode: base / diffusion / MeanFlow | "
        "N episodes (mean): base / diffusion / MeanFlow |",
        "| --- | --- | --- | --- |",
    ]
    for key, c in sorted(payload["cells"].items()):
        one, many = c.get("held_out_1", {}), c["held_out"]
        for lr in sorted(many, key=float):
            lines.append(f"| {key} | {lr} | {returns(one.get(lr))} | {returns(many[lr])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--cells",
        nargs="+",
        default=list(CELLS),
        help="score-suite cells (<dataset>/s<seed>) whose run is under runs/suite/ here; the "
        "default: the two large losses, the split walker2d-medium-replay seed 0, and a "
        "halfcheetah-medium gain",
    )
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--report", action="store_true", help="print the table and exit")
    add_out_arg(p, NAME)
    args = p.parse_args(argv)
    if args.report:
        print(report(load(args.out)))
        return
    if args.episodes < 2:
        raise SystemExit(f"alpha_selection: --episodes {args.episodes}: use 2 or more.")
    keys = {f"{k}/x{args.episodes}": k for k in args.cells}
    cells = [(key, lambda k=k: cell(k, args.episodes, args.out)) for key, k in keys.items()]
    meta = {"command": f"python -m benchmarks.studies.alpha_selection --episodes {args.episodes}"}

    def check(todo: list[str]) -> None:
        for key in todo:
            suite_run(keys[key])

    print(report(run_in_process(args.out, cells, meta, check=check)))


if __name__ == "__main__":
    main()
