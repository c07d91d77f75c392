"""ITPO's update rule on the gain suite: psi carried over (the paper's rule) vs reset every step
vs a proximity pull back, paired on the suite's own checkpoints and episodes.

The protocol is a committed file (``conf/suite/itpo_rules.yaml``: the suite it runs on, the
world models, the rules, the statistics and the decision). It runs after the gain suite: a cell
is one recorded suite cell's own ``lit-itpo pipeline`` command plus one rule's options and its
own ITPO folder (``--pipeline.itpo_dir``), so the pipeline finds the trained stages finished
and reuses them, chooses alpha again from the suite's grid on the suite's held-out episodes and
evaluates on the suite's episodes: the base episodes are the suite cell's, and the rule's gain
is compared with the paper rule's gain of the same cell. Cells run in the suite's order
(seed-major), here or as a SLURM job array (``--executor``, see ``benchmarks.cells``); each
finished cell goes to ``benchmarks/results/itpo_rules.json`` at once, with both protocols; a
recorded cell is never run again and results made under other protocols are refused;
``--out NAME`` runs the cells again into results/studies/NAME.json, in ITPO folders of their
own (``itpo_<rule>_NAME``). A suite cell's dataset or run folder that a cell to run reads and
that is missing stops the run before it starts, naming the command that makes it.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.itpo_rules [--workers N |
        --executor slurm --slurm-partition cpu]
    python -m benchmarks.studies.itpo_rules --report
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benchmarks import gain_suite
from benchmarks.cells import Cell, protocol_args, refuse_other_protocol, run_cells
from benchmarks.common import REPO, load, require, require_dataset
from lit_itpo.stats import stratified_bootstrap_ci

NAME = "studies/itpo_rules"
PROTOCOL = REPO / "conf" / "suite" / "itpo_rules.yaml"


def load_protocol(path: Path = PROTOCOL) -> dict:
    """The rules protocol as a plain dict, with the suite's protocol under ``suite_protocol``."""
    proto = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    bad = [m for m in proto["models"] if m not in gain_suite.MODELS]
    if bad:
        raise SystemExit(f"itpo_rules: {path}: unknown models {bad}; use {list(gain_suite.MODELS)}")
    return proto | {"suite_protocol": gain_suite.load_protocol(REPO / proto["suite"])}


def folder(rule: str, out: str = NAME) -> str:
    """The rule's ITPO folder in a suite cell's run directory, e.g. ``itpo_reset``; another
    results name ``out`` (``--out``) its own, e.g. ``itpo_reset_<out>``, so its cells run
    again rather than find the committed ones' runs finished."""
    return "itpo_" + rule.split()[0] + ("" if out == NAME else f"_{Path(out).name}")


def make_cell(suite_cell: Cell, rule: str, proto: dict, out: str = NAME) -> Cell:
    """The suite cell's command with ``rule``'s options, ITPO only for the protocol's models,
    in the rule's own folder (where its ``results.json`` and ``cell.json`` go)."""
    p = "--pipeline."
    opts = [
        (f"{p}{k}", str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in proto["rules"][rule].items()
    ]
    argv = [
        *suite_cell.argv,
        f"{p}itpo_dir", folder(rule, out),
        f"{p}itpo_models", "[" + ", ".join(proto["models"]) + "]",
        *(x for kv in opts for x in kv),
    ]  # fmt: skip
    run_dir = Path(suite_cell.run_dir) / folder(rule, out)
    return Cell(f"{suite_cell.key}/{rule}", tuple(argv), run_dir, suite_cell.info | {"rule": rule})


def summarise(cell: Cell, done: dict, proto: dict, paper: dict) -> dict:
    """A finished cell: per world model the rule's gain, alpha and fallback next to the paper
    rule's gain of the same suite cell (``paper``), and their difference."""
    res = json.loads((Path(cell.run_dir) / "results.json").read_text())
    base = res["base"]["normalized_score"]
    if base != paper["base"]["score"]:  # same policy and episode seeds: the same base episodes
        raise RuntimeError(
            f"base score {base} differs from the suite cell's {paper['base']['score']}: the "
            "runs are not paired (another policy checkpoint or other episodes)"
        )
    models = {}
    for m in proto["models"]:
        r, ref = res[f"itpo_{m}"], paper["itpo"][m]
        models[m] = {
            "gain": r["gain"],
            "alpha": r["alpha"],
            "fell_back": r["fell_back"],
            "ascent_rate": r.get("ascent_rate"),
            "ms_per_step": r["ms_per_step"],
            "paper_gain": ref["gain"],
            "paper_alpha": ref["alpha"],
            "difference": r["gain"] - ref["gain"],
        }
    return {
        "dataset": cell.info["dataset"],
        "seed": cell.info["seed"],
        "rule": cell.info["rule"],
        "base_score": base,
        "itpo": models,
        "wall_s": done["wall_s"],
        "summary": ", ".join(
            f"{m} gain {v['gain']:+.2f} vs paper {v['paper_gain']:+.2f}" for m, v in models.items()
        ),
        "command": cell.command,
    }


def differences(cells: Sequence[dict], rule: str, model: str, seed: int = 0) -> dict:
    """The rule's gain minus the paper's, per dataset (n, mean) and over all cells (n, mean,
    95% stratified bootstrap interval; ``None`` with one cell)."""
    strata: dict[str, list[float]] = {}
    for c in cells:
        if c["rule"] == rule:
            strata.setdefault(c["dataset"], []).append(c["itpo"][model]["difference"])
    every = [x for g in strata.values() for x in g]
    out = {ds: {"n": len(g), "mean": float(np.mean(g))} for ds, g in strata.items()}
    out["all"] = {
        "n": len(every),
        "mean": float(np.mean(every)) if every else float("nan"),
        "ci": list(stratified_bootstrap_ci(strata, seed=seed)) if len(every) > 1 else None,
    }
    return out


def decide(cells: Sequence[dict], proto: dict) -> tuple[str | None, dict[str, bool]]:
    """The protocol's decision: which rule qualifies (interval above 0 and no dataset below
    the floor, for every world model of the protocol) and the default it gives (``None``:
    the paper's rule stays)."""
    floor = proto["decision"]["dataset_floor"]
    ok, means = {}, {}
    for rule in proto["rules"]:
        diffs = [differences(cells, rule, m) for m in proto["models"]]
        ok[rule] = all(
            d["all"]["ci"] is not None
            and d["all"]["ci"][0] > 0
            and all(v["mean"] >= floor for ds, v in d.items() if ds != "all")
            for d in diffs
        )
        means[rule] = min(d["all"]["mean"] for d in diffs)
    winners = [r for r in proto["rules"] if ok[r]]
    return (max(winners, key=means.get) if winners else None), ok


def report(payload: dict) -> str:
    """Markdown: per rule, world model and dataset the paper's and the rule's mean gain and
    their difference, over all cells with its interval; then the decision."""
    proto, cells = payload.get("protocol"), list(payload.get("cells", {}).values())
    if not cells:
        return "No cell of the ITPO rules study has finished yet (it runs after the gain suite)."
    suite = proto["suite_protocol"]
    lines = [
        f"Protocol `conf/suite/itpo_rules.yaml` on the gain suite's cells ({len(cells)} of "
        f"{len(suite['datasets']) * len(suite['seeds']) * len(proto['rules'])} finished); "
        f"world models: {', '.join(proto['models'])}.",
        "",
        "| rule | world model | dataset | cells | paper's gain | rule's gain | "
        "difference (mean; 95% CI over all) | fallbacks (paper / rule) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule in proto["rules"]:
        for m in proto["models"]:
            d = differences(cells, rule, m)
            for ds in [*suite["datasets"], "all"]:
                cs = [c for c in cells if c["rule"] == rule and (ds == "all" or c["dataset"] == ds)]
                if not cs:
                    continue
                v = [c["itpo"][m] for c in cs]
                ci = d[ds].get("ci")
                ci = "" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                lines.append(
                    f"| {rule} | {m} | {ds} | {len(cs)} | "
                    f"{np.mean([x['paper_gain'] for x in v]):+.2f} | "
                    f"{np.mean([x['gain'] for x in v]):+.2f} | {d[ds]['mean']:+.2f}{ci} | "
                    f"{sum(x['paper_alpha'] == 0 for x in v)} / {sum(x['fell_back'] for x in v)} |"
                )
    default, ok = decide(cells, proto)
    lines += [
        "",
        "Decision: "
        + "; ".join(f"{r}: {'qualifies' if q else 'does not qualify'}" for r, q in ok.items())
        + (
            f"; '{default}' becomes the default."
            if default
            else "; the paper's rule (psi carried over) stays the default."
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = protocol_args(NAME, __doc__, PROTOCOL, gain_suite.RUNS, argv)
    if args.report:
        print(report(load(args.out)))
        return
    proto = load_protocol(args.protocol)
    refuse_other_protocol(NAME, args, proto)  # its suite's protocol is part of it
    suite = load(gain_suite.NAME)
    if not suite["cells"] or suite.get("protocol") != proto["suite_protocol"]:
        raise SystemExit(
            f"itpo_rules: benchmarks/results/{gain_suite.NAME}.json has no cell of the suite "
            f"{proto['suite']}: run python -m benchmarks.gain_suite first (this study reuses "
            "its checkpoints and episodes)."
        )
    sp = proto["suite_protocol"]
    order = [
        gain_suite.make_cell(ds, s, sp, args.runs) for s in sp["seeds"] for ds in sp["datasets"]
    ]
    done = [c for c in order if c.key in suite["cells"]]
    cells = [make_cell(c, rule, proto, args.out) for c in done for rule in proto["rules"]]
    recorded = load(args.out)["cells"]
    for c in done:  # what a cell to run reads: the suite cell's dataset and finished run
        if any(f"{c.key}/{rule}" not in recorded for rule in proto["rules"]):
            require_dataset("itpo_rules", gain_suite.DATASETS[c.info["dataset"]])
            run = Path(c.run_dir) / "results.json"
            require("itpo_rules", f"the suite cell {c.key}'s run", run, c.command)
    meta = {
        "protocol": proto,
        "command": f"python -m benchmarks.studies.itpo_rules --out {args.out}",
    }
    payload = run_cells(
        args.out,
        cells,
        lambda c, d: summarise(c, d, proto, suite["cells"][c.key.rsplit("/", 1)[0]]),
        meta,
        args,
    )
    print(report(payload))


if __name__ == "__main__":
    main()
