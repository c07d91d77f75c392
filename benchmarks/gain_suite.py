"""Gain suite: does ITPO improve its own ReBRAC base? Paired gains over datasets x seeds with a
stratified bootstrap interval and the IQM, under a protocol fixed before the runs.

The protocol is a committed file (``conf/suite/gain_suite.yaml``: datasets, seeds, budgets,
ITPO settings and alpha grid, evaluation episodes, selection rule, statistics, targets). A cell
is one ``lit-itpo pipeline`` command of one dataset and training seed; cells run seed-major in
the protocol's order, here or as a SLURM job array (``--executor``, see ``benchmarks.cells``),
and each finished cell goes to ``benchmarks/results/gain_suite.json`` at once, with the
protocol itself. There is no way to pick cells: a recorded cell is never run again, a stopped
one resumes by the same command, and a results file made under another protocol is refused.

    python -m benchmarks.gain_suite --make-data --workers 2     # this machine, both cores
    python -m benchmarks.gain_suite --make-data --workers 1 --threads 2   # one cell, both cores
    python -m benchmarks.gain_suite --executor slurm --slurm-partition gpu --cpus-per-task 4
    python -m benchmarks.gain_suite --report

Run directories go to ``--runs`` (default ``$LIT_ITPO_RUNS/gain_suite``, else
``~/lit_itpo_runs/gain_suite``) and datasets to Minari's root (``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets``): both outside the work tree, so a later checkout on the same machine
continues the cells where they stopped. ``--make-data`` first makes every missing dataset of the
protocol (``lit-itpo collect`` with that dataset's recipe only, ``--workers`` at a time).
On a 2-core machine: two cells at once on one thread each go faster in all, one cell on two
threads finishes its cell sooner (the choice when the machine may stop before two would finish).

A cell's gain is ITPO's mean normalised score minus its base's on the same evaluation episodes
(0 where the held-out episodes chose the base: a fallback). Over cells: the mean and IQM of the
gains, with rliable's stratified bootstrap (strata = datasets, units = seeds;
:func:`lit_itpo.stats.stratified_bootstrap_ci`).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benchmarks.cells import Cell, protocol_args, refuse_other_protocol, run_cells
from benchmarks.common import DATASETS, REPO, load
from lit_itpo.data.minari_io import datasets_root
from lit_itpo.pipeline import arm_rule, auto_config
from lit_itpo.stats import bootstrap_ci, iqm, stratified_bootstrap_ci

NAME = "gain_suite"
PROTOCOL = REPO / "conf" / "suite" / "gain_suite.yaml"
RUNS = Path(os.environ.get("LIT_ITPO_RUNS") or Path.home() / "lit_itpo_runs") / NAME
MODELS = ("diffusion", "meanflow")  # the learned world models (the cost target compares them)
# ReBRAC's published D4RL scores (ReBRAC paper, 10 seeds, 1M updates; docs/METHOD.md)
PUBLISHED_BASE = {
    "halfcheetah-medium": 65.6,
    "halfcheetah-medium-replay": 51.0,
    "hopper-medium": 102.0,
    "hopper-medium-replay": 98.1,
    "walker2d-medium": 82.5,
    "walker2d-medium-replay": 77.3,
}


def data_record(ds: str) -> dict | None:
    """What the local dataset the cell trains on holds (its ``provenance.json``: size, behaviour
    return, when it was made): datasets are regenerated per machine, so a cell names its own."""
    path = datasets_root() / DATASETS[ds] / "provenance.json"
    if not path.is_file():
        return None
    prov = json.loads(path.read_text())
    keys = ("num_episodes", "num_steps", "return_mean", "normalized_score_mean", "created")
    return {k: prov.get(k) for k in keys}


def pipeline_argv(ds: str, out: Path, world_model: int, policy: int, meanflow: int) -> list[str]:
    """The start of a suite cell's ``lit-itpo pipeline`` command: the dataset (found through
    ``$MINARI_DATASETS_PATH``), its ``conf/<dataset>/`` stage configs, the three budgets."""
    p = "--pipeline."
    return [
        "pipeline",
        f"{p}dataset_id", DATASETS[ds], f"{p}data_dir", "null", f"{p}out_dir", str(out),
        f"{p}world_model_config", f"conf/{ds}/world_model.yaml",
        f"{p}policy_config", f"conf/{ds}/rebrac.yaml",
        f"{p}meanflow_config", f"conf/{ds}/meanflow.yaml",
        f"{p}world_model_steps", str(world_model),
        f"{p}policy_steps", str(policy),
        f"{p}meanflow_steps", str(meanflow),
    ]  # fmt: skip


def load_protocol(path: Path = PROTOCOL) -> dict:
    """The protocol file as a plain dict; an unknown dataset stops with the names to use."""
    proto = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = [ds for ds in proto["datasets"] if ds not in DATASETS]
    if unknown:
        raise SystemExit(f"gain_suite: {path}: unknown datasets {unknown}; use {list(DATASETS)}")
    bad = [a for a in proto["itpo"]["arms"] if arm_rule(a, False)[0] not in MODELS]
    if bad or not set(MODELS) <= set(proto["itpo"]["arms"]):
        raise SystemExit(
            f"gain_suite: {path}: itpo.arms {proto['itpo']['arms']} must hold {list(MODELS)} "
            "(the cost target compares them), each other arm a world model with a rule suffix"
        )
    return proto


def arms(proto: dict) -> list[str]:
    return list(proto["itpo"]["arms"])


def collect_argv(ds: str, runs: Path) -> tuple[str, ...]:
    """The ``lit-itpo collect`` command that makes dataset ``ds`` alone under Minari's root:
    its env's committed collect config and that one recipe. ``medium`` rolls out the committed
    behaviour actor (no training); ``medium-replay`` needs the SAC run's replay stream, so it
    trains the agent into ``runs/behaviour`` and leaves the committed actors as they are."""
    env, recipe = DATASETS[ds].split("/")[1], DATASETS[ds].split("/")[2].rsplit("-v", 1)[0]
    argv = ("collect", "--config", f"conf/collect/{env}.yaml", "--collect.recipes", f"[{recipe}]")
    if recipe == "medium-replay":
        run_dir = str(Path(runs) / "behaviour" / f"{env}-s0")
        argv += ("--collect.run_dir", run_dir, "--collect.export_dir", "null")
    return argv


def make_cell(ds: str, seed: int, proto: dict, runs: Path = RUNS, make_data: bool = False) -> Cell:
    """The ``lit-itpo pipeline`` command of one dataset and seed under ``proto``
    (``make_data``: with the collect command of its dataset, run first where it is missing)."""
    b, it, ev = proto["budget"], proto["itpo"], proto["evaluation"]
    out = Path(runs) / f"{ds}-s{seed}"
    p = "--pipeline."
    steps = (b["world_model_steps"], b["policy_steps"], b["meanflow_steps"])
    argv = pipeline_argv(ds, out, *steps) + [
        f"{p}policy_batch_size", str(b["policy_batch_size"]),
        f"{p}policy_eval_every", str(b["policy_eval_every"]),
        f"{p}policy_eval_episodes", str(b["policy_eval_episodes"]),
        f"{p}itpo_models", "[" + ", ".join(it["arms"]) + "]",
        f"{p}reset_every_step", "false",  # an arm without a suffix: the paper's rule
        f"{p}particles", str(it["particles"]),
        f"{p}horizon", str(it["horizon"]),
        f"{p}inner_steps", str(it["inner_steps"]),
        f"{p}sample_steps", str(it["sample_steps"]),
        f"{p}alpha_grid", "[" + ", ".join(f"{a:g}" for a in it["alpha_grid"]) + "]",
        f"{p}alpha_episodes", str(it["alpha_episodes"]),
        f"{p}num_episodes", str(ev["episodes"]),
        f"{p}max_episode_steps", "null" if ev["max_episode_steps"] is None
        else str(ev["max_episode_steps"]),
        f"{p}seed", str(seed),
    ]  # fmt: skip
    needs = ((str(datasets_root() / DATASETS[ds]), collect_argv(ds, runs)),) if make_data else ()
    itpo, _ = auto_config(DATASETS[ds], "itpo.yaml")  # the pipeline's "auto" ITPO config
    info = {"dataset": ds, "seed": seed}
    return Cell(f"{ds}/s{seed}", tuple(argv), out, info, needs, reads=(str(itpo),))


def invocations(log: Path) -> int:
    """How many times the cell's pipeline command was started (``$ ... pipeline ...`` lines in
    its ``log.txt``): a cell stopped part-way and resumed by a later run spans several,
    and its ``wall_s`` is the last one's alone."""
    if not log.is_file():
        return 1
    lines = log.read_text(errors="replace").splitlines()
    return max(1, sum(ln.startswith("$ ") and " pipeline " in ln for ln in lines))


def summarise(cell: Cell, done: dict, proto: dict) -> dict:
    """A finished cell in the suite's schema: base and each world model's ITPO (normalised
    scores), the paired gain with its episode-level 95% CI, the chosen alpha and its cost."""
    ds, out = cell.info["dataset"], Path(cell.run_dir)
    res = json.loads((out / "results.json").read_text())
    b = proto["budget"]
    itpo = {}
    for m in arms(proto):
        r = res[f"itpo_{m}"]
        itpo[m] = {
            "score": r["normalized_score"],
            "gain": r["gain"],
            "gain_ci": r.get("gain_ci"),
            "alpha": r["alpha"],
            "fell_back": r["fell_back"],
            "ms_per_step": r["ms_per_step"],
            "nfe_per_step": r.get("nfe_per_step"),
            "ascent_rate": r.get("ascent_rate"),
            "length_mean": r["length_mean"],
        }
    base = res["base"]
    runs = invocations(out / "log.txt")
    return {
        "dataset": ds,
        "seed": cell.info["seed"],
        "base": {
            "algo": "rebrac",
            "score": base["normalized_score"],
            "updates": b["policy_steps"],
            "batch": b["policy_batch_size"],
            "length_mean": base["length_mean"],
        },
        "published_base": PUBLISHED_BASE.get(ds),
        "itpo": itpo,
        "data": data_record(ds),
        "wall_s": done["wall_s"],
        "invocations": runs,
        "summary": f"base {base['normalized_score']:.1f}, gain "
        + ", ".join(f"{m} {itpo[m]['gain']:+.2f}" for m in itpo)
        + f" ({done['wall_s'] / 60:.0f} min"
        + (f" in the last of {runs} runs, the others resumed from)" if runs > 1 else ")"),
        "command": cell.command,
    }


def aggregate(cells: Sequence[dict], model: str, seed: int = 0) -> dict:
    """Per dataset and over all cells: count, mean gain, its 95% (stratified) bootstrap
    interval, IQM and fallbacks of ``model``'s ITPO."""
    strata: dict[str, list[float]] = {}
    for c in cells:
        strata.setdefault(c["dataset"], []).append(c["itpo"][model]["gain"])
    out = {}
    for ds, g in strata.items():
        out[ds] = {"n": len(g), "mean": float(np.mean(g)), "iqm": iqm(g)}
        out[ds]["ci"] = list(bootstrap_ci(g, seed=seed)) if len(g) > 1 else None
    every = [x for g in strata.values() for x in g]
    # resampling within each dataset: one with a single cell adds no spread, so the interval
    # needs two cells in every dataset (with one each it would be a point, never "crossing 0")
    spread = bool(strata) and min(len(g) for g in strata.values()) > 1
    out["all"] = {
        "n": len(every),
        "mean": float(np.mean(every)) if every else float("nan"),
        "iqm": iqm(every),
        "ci": list(stratified_bootstrap_ci(strata, seed=seed)) if spread else None,
        "iqm_ci": list(stratified_bootstrap_ci(strata, stat=iqm, seed=seed)) if spread else None,
        "fallbacks": sum(c["itpo"][model]["fell_back"] for c in cells),
    }
    return out


def ms_per_step(cells: Sequence[dict], model: str, also: Sequence[str] = ()) -> float | None:
    """The mean ms per env step of ``model``'s ITPO over the cells where it (and every arm in
    ``also``) ran ITPO; None where none did. A fallback's final run acts as the base policy
    (alpha 0 skips the ascent), so its few ms are the base's, not ITPO's."""
    ran = [c for c in cells if not any(c["itpo"][m]["fell_back"] for m in (model, *also))]
    return statistics.mean(c["itpo"][model]["ms_per_step"] for c in ran) if ran else None


def verdicts(cells: Sequence[dict], targets: dict) -> list[tuple[str, str, bool | None]]:
    """Each target of the protocol: (what, measured, met); ``None``: not measurable yet."""
    if not cells:
        return []
    names = list(cells[0]["itpo"])  # the arms, in the protocol's order
    agg = {m: aggregate(cells, m) for m in names}
    rows = []
    best = max(names, key=lambda m: agg[m]["all"]["mean"])
    a, need = agg[best]["all"], targets["mean_gain_min"]
    ci = "" if a["ci"] is None else f" [{a['ci'][0]:+.2f}, {a['ci'][1]:+.2f}]"
    rows.append((
        f"mean gain >= {need:+g} with its CI above 0 (the best arm)",
        f"{best}: {a['mean']:+.2f}{ci or ' (no interval: a dataset has one cell)'}",
        None if a["ci"] is None else a["mean"] >= need and a["ci"][0] > 0,
    ))  # fmt: skip
    floor = targets["dataset_mean_gain_floor"]
    worst = {m: min((v["mean"], ds) for ds, v in agg[m].items() if ds != "all") for m in names}
    rows.append((
        f"no dataset's mean gain below {floor:+g} (every arm)",
        "; ".join(f"{m}: lowest {v:+.2f} ({ds})" for m, (v, ds) in worst.items()),
        all(v >= floor for v, _ in worst.values()),
    ))  # fmt: skip
    d, f = agg["diffusion"]["all"], agg["meanflow"]["all"]
    share, cost = targets["meanflow_share_of_gain"], targets["meanflow_cost_share"]
    kept = f["mean"] / d["mean"] if d["mean"] > 0 else None
    # the cost on the same cells: those where both ran ITPO (neither fell back to the base)
    f_ms, d_ms = (ms_per_step(cells, a, also=MODELS) for a in ("meanflow", "diffusion"))
    ratio = None if f_ms is None else f_ms / d_ms
    rows.append((
        f"MeanFlow keeps >= {share:.0%} of the diffusion gain at <= {cost:.0%} of its ms/step",
        ("kept " + ("n/a (no diffusion gain)" if kept is None else f"{kept:.0%}"))
        + (", cost n/a (no cell where both ran ITPO)" if ratio is None
           else f", cost {ratio:.0%} ({f_ms:.0f} vs {d_ms:.0f} ms)"),
        None if kept is None or ratio is None else kept >= share and ratio <= cost,
    ))  # fmt: skip
    return rows


def report(payload: dict) -> str:
    """Markdown: the protocol's line, per-dataset cells (base vs published, gains), the
    aggregate per world model, and each target's verdict."""
    proto, cells = payload.get("protocol"), list(payload.get("cells", {}).values())
    if not cells:
        return "No cell of the gain suite has finished yet."
    names = list(cells[0]["itpo"])
    b, ev = proto["budget"], proto["evaluation"]
    lines = [
        f"Protocol `conf/suite/gain_suite.yaml`: {len(proto['datasets'])} datasets x "
        f"{len(proto['seeds'])} seeds; ReBRAC {b['policy_steps'] // 1000}k x "
        f"{b['policy_batch_size']}, world model {b['world_model_steps'] // 1000}k, MeanFlow "
        f"{b['meanflow_steps'] // 1000}k; {ev['episodes']} evaluation episodes per cell; "
        f"{len(cells)} of {len(proto['datasets']) * len(proto['seeds'])} cells finished.",
        "",
        "| dataset | seeds | ReBRAC (published) | "
        + " | ".join(f"gain, {m} (mean, 95% CI; IQM)" for m in names)
        + f" | fallbacks ({' / '.join(names)}) |",
        "| --- | --- | --- | " + "--- | " * len(names) + "--- |",
    ]
    agg = {m: aggregate(cells, m) for m in names}

    def gain(v: dict, episodes: list | None = None) -> str:
        if v["ci"] is not None:
            ci = f" [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]"
        elif episodes and None not in episodes:  # one seed: its episodes' interval, marked
            ci = f" [{episodes[0]:+.2f}, {episodes[1]:+.2f}]<sup>ep</sup>"
        else:
            ci = ""
        return f"{v['mean']:+.2f}{ci}; {v['iqm']:+.2f}"

    one_seed = False
    for ds in proto["datasets"]:
        cs = [c for c in cells if c["dataset"] == ds]
        if not cs:
            lines.append(f"| {ds} | 0 | not run yet | " + "| " * len(names) + "|")
            continue
        one_seed |= len(cs) == 1
        base = statistics.mean(c["base"]["score"] for c in cs)
        falls = " / ".join(str(sum(c["itpo"][m]["fell_back"] for c in cs)) for m in names)
        gains = " | ".join(
            gain(agg[m][ds], cs[0]["itpo"][m].get("gain_ci") if len(cs) == 1 else None)
            for m in names
        )
        lines.append(
            f"| {ds} | {len(cs)} | {base:.1f} ({PUBLISHED_BASE.get(ds, 'n/a')}) | {gains} | "
            f"{falls} |"
        )
    falls = " / ".join(str(agg[m]["all"]["fallbacks"]) for m in names)
    gains = " | ".join(gain(agg[m]["all"]) for m in names)
    lines.append(f"| all (stratified) | {len(cells)} | | {gains} | {falls} |")
    if one_seed:
        lines += [
            "",
            f"<sup>ep</sup> one seed so far: the 95% interval over that cell's {ev['episodes']} "
            "paired episodes (same checkpoints, same starts), not over training seeds.",
        ]
    total = len(proto["datasets"]) * len(proto["seeds"])
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for what, measured, met in verdicts(cells, proto["targets"]):
        verdict = "n/a" if met is None else "yes" if met else "no"
        if len(cells) < total:  # the targets are over the whole suite
            verdict = f"pending ({len(cells)} of {total} cells; so far: {verdict})"
        lines.append(f"| {what} | {measured} | {verdict} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    def extra(p) -> None:
        p.add_argument(
            "--make-data",
            action="store_true",
            help="make a missing dataset (lit-itpo collect, its recipe only) before its cells",
        )

    args = protocol_args(NAME, __doc__, PROTOCOL, RUNS, argv, extra)
    if args.report:
        print(report(load(args.out)))
        return
    proto = load_protocol(args.protocol)
    refuse_other_protocol(NAME, args, proto)
    missing = [ds for ds in proto["datasets"] if not (datasets_root() / DATASETS[ds]).is_dir()]
    if missing and not args.make_data:
        raise SystemExit(
            f"gain_suite: datasets {missing} are not under {datasets_root()}: pass --make-data "
            "(or make them with lit-itpo collect --config conf/collect/<env>.yaml)."
        )
    cells = [
        make_cell(ds, s, proto, args.runs, args.make_data)
        for s in proto["seeds"]
        for ds in proto["datasets"]
    ]
    meta = {"protocol": proto, "command": f"python -m benchmarks.gain_suite --out {args.out}"}
    payload = run_cells(
        args.out, cells, lambda c, d: summarise(c, d, proto), meta, args, strict=True
    )  # a stage config edited between cells would corrupt the suite: refused
    print(report(payload))


if __name__ == "__main__":
    main()
