"""Render every study's page (``docs/studies/<page>.md``) and the studies' index
(``docs/studies/README.md``) from ``benchmarks/results/studies/*.json``:
``python -m benchmarks.studies.render``. A study is a one-off investigation that explained a
result; the tables that describe the product today are ``docs/RESULTS.md``
(``python -m benchmarks.render_results``)."""

from __future__ import annotations

import json
import sys

from benchmarks import policy_quality
from benchmarks.common import REPO, RESULTS
from benchmarks.render_results import provenance
from benchmarks.studies import (
    action_jacobian,
    alpha_selection,
    ascent_rate,
    cost_study,
    critic_check,
    diffusion_target,
    itpo_bases,
    itpo_horizon,
    itpo_options,
    itpo_precision,
    itpo_rules,
    meanflow_mixture,
    pendulum_exact,
    score_suite,
    td3bc_reference,
    world_model_vs_mlp,
)
from benchmarks.studies.index import INDEX
from lit_itpo.utils import atomic_write_text

OUT = REPO / "docs" / "studies"

# (section title, page, results name, report function, note)
STUDY_SECTIONS = [
    (
        "Why exact-dynamics ITPO lost on Pendulum: rule, horizon, alpha, critic budget",
        "pendulum_exact",
        "studies/pendulum_exact",
        pendulum_exact.report,
        "`python -m benchmarks.pendulum_exact` (protocol in its docstring): ReBRAC checkpoints "
        "of training seeds 1 and 2 (the main job is seed 0) at 5k and 30k updates; ITPO with "
        "Pendulum's exact dynamics on 20 episodes (env seeds 2000000+i) for every rule (psi "
        "carried over, the paper's; or reset before every real step), horizon and alpha. A cell: "
        "the mean paired gain over the base in normalised points [95% bootstrap interval] "
        "(episodes that collapsed: a return more than 500 below the base's on the same "
        "episode). A diagnosis, not a gain claim: the alphas are not chosen on held-out "
        "episodes here.",
    ),
    (
        "ITPO's update rule on the gain suite: psi carried over vs reset vs proximity "
        "(protocol fixed before the runs)",
        "itpo_rules",
        "studies/itpo_rules",
        itpo_rules.report,
        "The protocol (`conf/suite/itpo_rules.yaml`) runs after the gain suite, on its recorded "
        "cells: each cell's own pipeline command with the rule's options and its own ITPO "
        "folder, so the checkpoints, the alpha grid, the held-out and the evaluation episodes "
        "are the suite cell's. Difference: the rule's gain minus the paper rule's (psi carried "
        "over) on the same cell, over all cells with rliable's stratified bootstrap (strata: "
        "datasets); the decision rule is the protocol's.",
    ),
    (
        "Scores: ReBRAC vs ITPO (diffusion world model) vs ITPO (tilted one-step MeanFlow)",
        "score_suite",
        "studies/score_suite",
        score_suite.report,
        "D4RL-normalised score (PointMaze: the dataset's reference returns), mean ± std over the "
        "finished training seeds; final = the last checkpoint on 10 episodes with fixed seeds, "
        "best = the best of the policy's evaluations during training (10 episodes each); ITPO "
        "runs on the final policy with alpha chosen per world model on a held-out env seed. The "
        "paper column is D4RL data at 1M updates: not comparable in budget or data.",
    ),
    (
        "Does ITPO beat its base? Gain over the same seed's ReBRAC policy",
        "score_suite",
        "studies/score_suite",
        score_suite.gain_report,
        "The cells above, paired by training seed: ITPO's score minus the final ReBRAC policy's "
        "score on the same 10 episodes, mean ± std over seeds; up / same / down counts the seeds "
        "whose gain is above 0.05, within ±0.05 (alpha = 0 fell back, or a step too small to "
        "change an action much) or below -0.05 normalised points.",
    ),
    (
        "Reproduction: score-suite cells rerun on another machine",
        "score_suite",
        "studies/score_suite_rerun",
        score_suite.rerun_report,
        "The same command per cell (`--rerun`: same configs, seeds and budgets) in a later sitting "
        "on the machine named, with the local dataset regenerated there by `lit-itpo collect` "
        "(same recipe and seed; on another CPU model the float rounding of the behaviour actor "
        "differs, so the MuJoCo rollouts and hence the dataset differ, and so does every stage "
        "trained on it: a reproduction within seed noise, not bit for bit).",
    ),
    (
        "Choosing alpha on one held-out episode vs several (score-suite cells)",
        "alpha_selection",
        "studies/alpha_selection",
        alpha_selection.report,
        "A score-suite run's own checkpoints (on the machine of the reproduction table above "
        "where the cell was rerun); alpha from the same grid chosen on the mean return of N "
        "held-out episodes (env seeds 999 + i) instead of one (seed 999), then scored on the "
        "suite's 10 evaluation episodes (a choice equal to that run's takes its recorded score; "
        "alpha = 0 is the base policy's).",
    ),
    (
        "World-model accuracy at the score suite's budgets (its MeanFlow stage's validation)",
        "score_suite",
        "studies/score_suite",
        score_suite.accuracy_report,
        "The suite's cells as above: per dataset and seed the diffusion world model (stage 1) and "
        "the tilted MeanFlow model (stage 3, eta calibrated to ESS 0.5) scored by the same code "
        "on the same held-out transitions (10% of the episodes) and on 5 real episodes of that "
        "seed's ReBRAC policy; RMSE in raw env state units (the MeanFlow stage's `state_rmse`, "
        "not normalised: large-range dimensions such as joint velocities dominate it), mean ± "
        "std over seeds.",
    ),
    (
        "Cost study: score gain vs ms per env step",
        "cost_study",
        "studies/cost_study",
        cost_study.report,
        "The main job's checkpoints (embedded dataset, weak 5k-update policy): the gain is the "
        "return difference over 5 episodes of 200 steps, same seeds (a cost study, not a score).",
    ),
    (
        "Cost study on a score-suite run: halfcheetah-medium seed 0",
        "cost_study",
        "studies/cost_study_halfcheetah-medium-s0",
        cost_study.report,
        "That cell's own checkpoints (its rerun, see the reproduction table), alpha per world "
        "model as that run chose it on its held-out episode; 5 episodes x 200 steps, the same "
        "seeds for base and ITPO. Normalised gain = 100 x (return gain over those 200 steps) / "
        "(D4RL max - min).",
    ),
    (
        "Precision: bfloat16 autocast vs float32 for the offline policies",
        "precision_study",
        "studies/precision_study",
        policy_quality.paired_precision_report,
        "The protocol in `benchmarks/policy_quality.py` (fixed before the runs): each cell "
        "trained in float32 and in bf16-mixed with the same seed, data, budget (20k x 256) and "
        "evaluation episodes (10 x 1000 steps); final normalised score; pairs by seed. "
        "bf16-mixed becomes the default if the CI over all pairs stays above -2 points and no "
        "row's mean is below -5.",
    ),
    (
        "One-step MeanFlow on a known conditional Gaussian mixture (stage 3's test case)",
        "meanflow_mixture",
        "studies/meanflow_mixture",
        meanflow_mixture.report,
        "The target tolerance: weights within 0.1, means within 0.1, spreads within 20%. EM fit "
        "of 4000 one-step samples per c; training as tests/test_meanflow.py's `_fit_mixture` "
        "(seed 0, batch 1024, Adam 3e-3 with cosine decay, plain MSE).",
    ),
    (
        "Ascent rate: does ITPO's gradient raise the real objective?",
        "ascent_rate",
        "studies/ascent_rate",
        ascent_rate.report,
        "Held-out real states; per state, ITPO's gradient g of the imagined objective (M "
        "particles, H = 5 unless named, fixed noise) and the directional derivative of J_true "
        "(the same objective with MuJoCo set to the state) along g by central differences: the "
        "ascent rate is the share of states where it is positive (chance 50%). Sign agreement: how "
        "often g . d has the sign of J_true's slope along random unit directions d (50% = no "
        "information); central differences with step h = 1e-3 unless named. Action change "
        "per unit alpha: the median over states of |da/dpsi . g|, how far ITPO's plain step "
        "moves the action per unit of alpha (first order). Checkpoints: "
        "`lit-itpo fit` of the dataset's conf/ stage configs, seed 0, for the updates "
        "shown; halfcheetah: ReBRAC 10k x 256 (mean head: the same with "
        "`--model.init_args.mean_hidden '[200, 200, 200, 200]'`; lr 0.001: both world models at "
        "Adam 1e-3 instead of the paper's 3e-4, which the locomotion configs take since the 20k "
        "study; ReBRAC 20000 with the diffusion model alone: the 20k checkpoint of the "
        "ReBRAC-coefficient run, 1024 a batch, D4RL's beta1; ReBRAC 20000 / TD3+BC 60000 / "
        'IQL 20000 with MeanFlow: the seed-0 bases of "ITPO on different bases" with its '
        "world model); walker2d: ReBRAC 10k x 256; hopper: the pipeline run of the hopper "
        "options study (ReBRAC 5k x 1024).",
    ),
    (
        "One-step derivatives: world models vs the simulator",
        "action_jacobian",
        "studies/action_jacobian",
        action_jacobian.report,
        "Held-out real states (200, seed 0) at the policy's action; the simulator's derivatives "
        "by central differences (step 1e-4, float64), the models' by autograd; states in "
        "standardised units, the state Jacobian that of s' - s; medians over states. MLP: 4 x "
        "200, Adam 1e-3, trained for the diffusion model's updates at its batch. Checkpoints "
        "as in the ascent-rate table (same policy, world models and updates).",
    ),
    (
        "World models vs a deterministic MLP (one-step next-state error)",
        "world_model_vs_mlp",
        "studies/world_model_vs_mlp",
        world_model_vs_mlp.report,
        "Held-out transitions of the stage's own episode split (first 20,000); the MLP (4 x 200 "
        "ReLU, Adam 1e-3) trained here on the same training split, representation and budget "
        "(updates x batch) as the diffusion model; the world models at their stage's Adam 3e-4 "
        "with cosine decay (cells named `-lr1e-3`: both world models at Adam 1e-3, the MLP's "
        "rate, with the same decay; otherwise the same command and seed). Raw: RMSE over all "
        "state dimensions in env units; standardised: each dimension's error over its std in "
        "the training split. Mean of 16: the world "
        "model's estimate of the mean next state (what the MLP predicts); mean head alone: "
        "the deterministic part of a world model trained with `model.mean_hidden`.",
    ),
    (
        "ReBRAC's BC coefficient at the configs' budget",
        "rebrac_coefficients",
        "studies/rebrac_coefficients",
        policy_quality.curve_report,
        "Each dataset's `conf/<dataset>/rebrac.yaml` as shipped (100k updates x 1024, float32, "
        "seed 0) with beta1 (`beta_actor`) at D4RL's (and CORL's) value and at 10x it "
        "(hopper-medium: 0.01 and 0.1; halfcheetah-medium: 0.001 and 0.01; walker2d-medium: 0.05 "
        "and 0.5; halfcheetah-medium-replay: 0.01 and 0.1); evaluation every 10k "
        "updates on 10 full-length episodes. Protocol (fixed before the runs): per dataset, the "
        "coefficient with the higher mean over the last three evaluations becomes the config's; "
        "the D4RL value stays the one for 1M-update runs.",
    ),
    (
        "Is the critic a value function yet? (ReBRAC on hopper-medium)",
        "critic_check",
        "studies/critic_check",
        critic_check.report,
        "Held-out episodes of the policy's dataset: Q(s, a) (min over the critics) at the "
        "dataset's action against the discounted Monte-Carlo return that followed (gamma 0.99, "
        "no bootstrap at a fall; the last 100 steps before a time-limit cut left out).",
    ),
    (
        "Diffusion world model: eps vs v target, and the noisiest reverse step",
        "diffusion_target",
        "studies/diffusion_target",
        diffusion_target.report,
        "Stage 1 trained twice per dataset as its shipped config (same seed, data and budget), "
        "once per denoiser target, then sampled with K respaced steps (K = 1 starts at the "
        "noisiest trained step). Held-out transitions (10% of the episodes). Raw units: the "
        "env's state units; normalised: each dimension's error over the dataset's std of that "
        "dimension. Clipped: share of the first reverse step's x0-estimate entries beyond the "
        "+-5 clip (those carry no signal and no gradient).",
    ),
    (
        "ITPO's imagined rollout in bfloat16 vs float32 (trained checkpoints)",
        "itpo_precision",
        "studies/itpo_precision",
        itpo_precision.report,
        "`itpo.precision: bf16-mixed`: the imagined rollout and its gradient under bfloat16 "
        "autocast; parameters, the ascent step and the acting forward pass stay float32. Held-out "
        "real states as episodes (M = 64, H = 5, E = 1). Cost: one ITPO env step for 10 episodes "
        "batched, one torch thread. Move: the action's change off the base action; bf16's "
        "against float32's on the same noise, and float32's Monte-Carlo error (its move's shift "
        "under another draw of the M noise sequences). Tolerance (tests/test_itpo.py): cosine "
        ">= 0.98 and the distance within 10% of the move or under half the Monte-Carlo error. "
        "Checkpoints as in the ascent-rate table (hopper: world models 3k, ReBRAC 5k x 1024; "
        "halfcheetah: world models 5k, ReBRAC 10k x 256).",
    ),
    (
        "TD3+BC on halfcheetah-medium: the plateau is the budget",
        "td3bc_reference",
        "studies/td3bc_budget",
        td3bc_reference.budget_report,
        "TD3+BC scores 3.6 on halfcheetah-medium at 20k x 256 (offline policies table). The "
        "module through `lit-itpo fit` (seed 0, batch 256, 10 episodes of 1000 steps per "
        "evaluation) beside CORL's TD3+BC math written out on the same data, normaliser and "
        "episodes (`python -m benchmarks.td3bc_reference --steps 60000`, 2026-11-24, one run), "
        "score by updates. The module follows the reference at every budget: the plateau near "
        "3 up to 20k updates is TD3+BC's own on this data (it takes off between 30k and 40k), "
        "not a fault of the module; 20k x 256 is too short a budget for it here.",
    ),
    (
        "ITPO on different bases (halfcheetah-medium, training seeds 0-2)",
        "itpo_bases",
        "studies/itpo_bases",
        itpo_bases.report,
        "The same tilted MeanFlow world model and episodes for every base and seed; alpha "
        "from the grid 5e-7 .. 5e-4 on 2 held-out episodes (0: no alpha beat the base there, "
        "ITPO falls back to it); 10 full-length evaluation episodes; normalised scores; gain "
        "paired by episode with its 95% bootstrap interval; per base, the mean over seeds "
        "with a bootstrap interval over the seeds (protocol: benchmarks/itpo_bases.py).",
    ),
    (
        "ITPO's horizon on halfcheetah-medium: H = 2 vs the paper's 5 (protocol fixed before "
        "the runs)",
        "itpo_horizon",
        "studies/itpo_horizon",
        itpo_horizon.report,
        "ReBRAC bases 20k x 256 (training seeds 0-2) and the tilted MeanFlow world model of "
        "the bases table; H = 5 rows are that table's ReBRAC cells; alpha from the grid on 2 "
        "held-out episodes per arm; 10 full-length evaluation episodes, the same for both "
        "arms; normalised scores (protocol: benchmarks/itpo_horizon.py).",
    ),
    (
        "ITPO options beyond the paper",
        "itpo_options",
        "studies/itpo_options",
        itpo_options.report,
        "Embedded smoke-run policy and world models, 5 episodes x 200 steps, one seed: indicative.",
    ),
    (
        "ITPO options on hopper-medium, paired with the paper's rule",
        "itpo_options",
        "studies/itpo_options_hopper",
        itpo_options.report,
        "The hopper-medium pipeline run of seed 0 (world model 3k, ReBRAC 5k x 1024, MeanFlow "
        "3k updates), alpha 5e-5 for every option, MeanFlow world model, the same 10 full-length "
        "episodes; returns; "
        "'vs paper': the mean per-episode return difference to the paper's rule (psi carried "
        "over, plain ascent) with its 95% bootstrap interval. Protocol fixed before the runs "
        "(benchmarks/itpo_options.py); one training seed: it can show an option hurting or "
        "helping on these episodes, not across seeds.",
    ),
    (
        "ITPO carry-over vs reset vs proximity at alpha 5e-4 (hopper-medium)",
        "itpo_options",
        "studies/itpo_carry_over_hopper_5e-4",
        itpo_options.report,
        "The same run, world model and episodes as the table above, at the grid's largest step "
        "size, 5e-4: the paper's rule (psi carried over from step to step), psi reset to the "
        "base policy before every real step, and the proximity term (1e3) pulling psi back.",
    ),
    (
        "ITPO carry-over vs reset at alpha 5e-4 (halfcheetah-medium)",
        "itpo_options",
        "studies/itpo_carry_over_halfcheetah_5e-4",
        itpo_options.report,
        "The ascent-rate checkpoints of halfcheetah-medium (seed 0: world model and MeanFlow 5k "
        "updates, ReBRAC 10k x 256), MeanFlow world model, the same 10 full-length episodes: "
        "the paper's rule and psi reset before every real step (proximity not run).",
    ),
]


def _read(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def page(name: str) -> str:
    """One study's page: its index line, then each of its tables with note and provenance."""
    entry = INDEX[name]
    parts = [f"# {entry['title']}", ""]
    if entry.get("superseded"):
        parts += [f"Superseded: {entry['superseded']}", ""]
    parts += [
        f"Question: {entry['question']}  ",
        f"Answer: {entry['answer']}",
        "",
        f"Module: `benchmarks/studies/{entry['module']}.py` (its docstring holds the protocol). "
        "Rendered by `python -m benchmarks.studies.render` from "
        "`benchmarks/results/studies/*.json`; do not edit by hand.",
    ]
    for title, pg, results, fn, note in STUDY_SECTIONS:
        if pg != name:
            continue
        parts += ["", f"## {title}", ""]
        payload = _read(results)
        if payload is None:
            parts.append(f"Not run yet (`benchmarks/results/{results}.json` is absent).")
            continue
        if note:
            parts += [note, ""]
        parts += [fn(payload), "", provenance(payload)]
    return "\n".join(parts) + "\n"


def index() -> str:
    """One line per study: the question, the answer, the date and commit, current or not."""
    lines = [
        "# Studies",
        "",
        "One-off investigations, each still runnable (`python -m benchmarks.studies.<module>`, "
        "protocol in its docstring), with its results under `benchmarks/results/studies/` and its "
        "page here. The tables that describe the product today: [../RESULTS.md](../RESULTS.md).",
        "",
        "| study | question | answer | date, commit | status |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, e in INDEX.items():
        status = f"superseded: {e['superseded']}" if e.get("superseded") else "current"
        lines.append(
            f"| [{e['title']}]({name}.md) | {e['question']} | {e['answer']} | "
            f"{e['date']}, {e['commit']} | {status} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    missing = sorted({pg for _, pg, *_ in STUDY_SECTIONS} - set(INDEX))
    if missing:
        raise SystemExit(f"studies.render: pages {missing} have no entry in studies/index.py")
    for name in INDEX:
        atomic_write_text(page(name), OUT / f"{name}.md")
    atomic_write_text(index(), OUT / "README.md")
    sys.stdout.write(f"wrote {OUT}/README.md and {len(INDEX)} study pages\n")


if __name__ == "__main__":
    main()
