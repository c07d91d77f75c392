"""The studies' index: per page (``docs/studies/<page>.md``), its title, module, question, answer
(as its tables show it), date, commit, and what superseded it (None: current). Edit here when a
study runs again or a later measurement replaces it; ``python -m benchmarks.studies.render``
renders the pages and the index."""

from __future__ import annotations

INDEX: dict[str, dict] = {
    "pendulum_exact": {
        "title": "Why exact-dynamics ITPO lost on Pendulum: rule, horizon, alpha, critic budget",
        "module": "pendulum_exact",
        "question": "Why did ITPO with Pendulum's exact dynamics lose to its base?",
        "answer": "The rule: carried-over psi collapses episodes at alpha >= 5e-3 on every "
        "checkpoint; reset gains +0.3 to +25.7 at 5e-3. Confirmation, seeds 3-4: reset +4.2 "
        "[-1.2, +10.2], carried over -24.8 [-39.2, -11.8].",
        "date": "2026-12-07",
        "commit": "d1108e4",
        "superseded": None,
    },
    "itpo_rules": {
        "title": "ITPO's update rule on the gain suite: psi carried over vs reset vs proximity",
        "module": "itpo_rules",
        "question": "On the gain suite's cells, does reset or proximity beat carried-over psi?",
        "answer": "Not run yet: it runs after the gain suite (conf/suite/itpo_rules.yaml).",
        "date": "-",
        "commit": "-",
        "superseded": None,
    },
    "score_suite": {
        "title": "Score suite: ReBRAC vs ITPO on 7 local datasets x 3 seeds",
        "module": "score_suite",
        "question": "Does ITPO (either model) beat its ReBRAC base on 7 datasets x 3 seeds?",
        "answer": "No overall: paired gain 0.0 ± 8.4 (diffusion), -0.3 ± 11.7 (MeanFlow) over 21 "
        "cells; a rerun on another machine reproduced within seed noise only.",
        "date": "2026-11-25, rerun 2026-12-02",
        "commit": "f47ae5d, 9ae0d90",
        "superseded": "by the gain suite (conf/suite/gain_suite.yaml: ReBRAC 50k x 1024, alpha on "
        "5 held-out episodes, 20 full-length episodes): alpha on 1 held-out episode and 10 "
        "evaluation episodes were too noisy",
    },
    "alpha_selection": {
        "title": "Choosing alpha on one held-out episode vs several",
        "module": "alpha_selection",
        "question": "Does alpha chosen on 5 held-out episodes instead of 1 change the score?",
        "answer": "One cell run (pointmaze-umaze/s2): no change, both models keep alpha 0.",
        "date": "2026-12-02",
        "commit": "dc32d51",
        "superseded": "by the gain suite's rule (5 held-out episodes) and pendulum_exact "
        "(5 episodes miss rare collapses)",
    },
    "cost_study": {
        "title": "Cost study: score gain vs ms per env step over M, H, E",
        "module": "cost_study",
        "question": "How do gain and ms per env step trade off over M, H, E?",
        "answer": "MeanFlow costs ~1/3 of diffusion per step (319 vs 986 ms at M 64, H 5, E 1 on "
        "halfcheetah-medium); gains over 5 x 200 steps are not measurable (-1.6 to +1.0).",
        "date": "2026-11-25, 2026-12-02",
        "commit": "985de5b, 9ae0d90",
        "superseded": None,
    },
    "precision_study": {
        "title": "Precision: bfloat16 autocast vs float32 for the offline policies",
        "module": "policy_quality",
        "question": "Can bf16-mixed replace float32 for the offline policies at no score?",
        "answer": "No: -3.0 [-6.4, +0.4] over 27 pairs (the rule needs the interval above -2); "
        "three rows below -5. bf16 stays off.",
        "date": "2026-12-03",
        "commit": "60b0c74",
        "superseded": None,
    },
    "meanflow_mixture": {
        "title": "One-step MeanFlow on a known conditional Gaussian mixture",
        "module": "meanflow_mixture",
        "question": "Which one-step MeanFlow recipe recovers a known 1-D mixture within tolerance?",
        "answer": "The default sampled-velocity recipe misses one spread (0.37 vs 0.3); exact-map "
        "regression and oracle velocity pass at 10k, target_velocity=model at 30k.",
        "date": "2026-11-25",
        "commit": "fb24eab",
        "superseded": None,
    },
    "ascent_rate": {
        "title": "Ascent rate: does ITPO's gradient raise the real objective?",
        "module": "ascent_rate",
        "question": "Does a world-model ITPO step raise the true H-step objective?",
        "answer": "hopper 98-99%, walker2d 84-95%; halfcheetah 57-68% at H = 5 whatever K, M, "
        "lr or budget, falling with H.",
        "date": "2026-12-03/04",
        "commit": "c4a7d7d",
        "superseded": None,
    },
    "action_jacobian": {
        "title": "One-step derivatives: world models vs the simulator",
        "module": "action_jacobian",
        "question": "Do the world models' one-step derivatives match the simulator's?",
        "answer": "About as well as a same-budget MLP (median cosine of ds'/da 0.80-1.00): not "
        "the cause of halfcheetah's low ascent rate.",
        "date": "2026-12-03",
        "commit": "7099922",
        "superseded": None,
    },
    "world_model_vs_mlp": {
        "title": "World models vs a deterministic MLP (one-step next-state error)",
        "module": "world_model_vs_mlp",
        "question": "Are the world models as accurate as a same-budget deterministic MLP?",
        "answer": "At Adam 1e-3 and 20k updates diffusion matches it (0.072 vs 0.074); MeanFlow "
        "stays 22-36% worse; the configs moved to 1e-3.",
        "date": "2026-12-03/04",
        "commit": "c4a7d7d",
        "superseded": None,
    },
    "rebrac_coefficients": {
        "title": "ReBRAC's BC coefficient at the configs' budget",
        "module": "policy_quality",
        "question": "At 100k x 1024, which ReBRAC beta1 wins per dataset: D4RL's or 10x it?",
        "answer": "10x on hopper-medium (37.7 vs 29.7) and halfcheetah-medium (60.0 vs 55.8); "
        "D4RL's on walker2d-medium and halfcheetah-medium-replay. The configs follow it.",
        "date": "2026-12-03/04",
        "commit": "7b11c4c",
        "superseded": None,
    },
    "critic_check": {
        "title": "Is the critic a value function yet? (ReBRAC on hopper-medium)",
        "module": "critic_check",
        "question": "Is ReBRAC's critic a value function at short budgets?",
        "answer": "Not at 5k x 1024 (Q/MC 0.17, corr -0.34); yes at 100k (Q/MC ~1, corr 0.9).",
        "date": "2026-12-03",
        "commit": "cdedae0",
        "superseded": None,
    },
    "diffusion_target": {
        "title": "Diffusion world model: eps vs v target, and the noisiest reverse step",
        "module": "diffusion_target",
        "question": "eps or v as the denoiser's target?",
        "answer": "v: RMSE at K = 5 1.265 -> 1.079 (halfcheetah), 0.237 -> 0.166 (hopper); eps "
        "clips ~90% of the noisiest step's entries. v is the default.",
        "date": "2026-12-03",
        "commit": "a330321",
        "superseded": None,
    },
    "itpo_precision": {
        "title": "ITPO's imagined rollout in bfloat16 vs float32",
        "module": "itpo_precision",
        "question": "Does a bf16 imagined rollout move actions as float32 does, and faster?",
        "answer": "2.0-2.8x faster; within tolerance on 95-98% of hopper's states but 65-88% of "
        "halfcheetah's, so it stays off.",
        "date": "2026-12-03",
        "commit": "60b0c74",
        "superseded": None,
    },
    "td3bc_reference": {
        "title": "TD3+BC on halfcheetah-medium: the plateau is the budget",
        "module": "td3bc_reference",
        "question": "Is TD3+BC's ~3 on halfcheetah-medium at 20k a fault or the budget?",
        "answer": "The budget: the module follows CORL's math (44-52 at 40k-60k); TD3+BC takes "
        "off between 30k and 40k updates.",
        "date": "2026-11-24, 2026-12-03/04",
        "commit": "9463726, 30f0e1c",
        "superseded": None,
    },
    "itpo_bases": {
        "title": "ITPO on different bases (halfcheetah-medium, training seeds 0-2)",
        "module": "itpo_bases",
        "question": "Does ITPO's gain depend on the base (ReBRAC, TD3+BC, IQL)?",
        "answer": "Only ReBRAC gains, on 2 of 3 seeds (mean -0.15 [-7.83, +4.32]); TD3+BC falls "
        "back on all seeds, IQL -1.69.",
        "date": "2026-12-03/04",
        "commit": "762c09d",
        "superseded": None,
    },
    "itpo_horizon": {
        "title": "ITPO's horizon on halfcheetah-medium: H = 2 vs 5",
        "module": "itpo_horizon",
        "question": "Does H = 2 score better than the paper's H = 5 on halfcheetah-medium?",
        "answer": "No: +0.87 [-1.31, +4.26] over 30 episodes; H = 5 stays.",
        "date": "2026-12-03/04",
        "commit": "30f0e1c",
        "superseded": None,
    },
    "itpo_options": {
        "title": "ITPO options beyond the paper (reset, Adam, proximity, uncertainty, acceptance)",
        "module": "itpo_options",
        "question": "Does any ITPO option beat the paper's rule, paired on the same episodes?",
        "answer": "Not at alpha 5e-5 on hopper (reset +3.4 [-3.7, +8.9], Adam -349); at 5e-4 "
        "carry-over collapses and reset recovers +129 without beating the base; on halfcheetah "
        "both rules collapse at 5e-4.",
        "date": "2026-12-03",
        "commit": "3ad91bb",
        "superseded": None,
    },
    "world_model_k": {
        "title": "Diffusion sampling steps K: accuracy vs cost",
        "module": "world_model_k",
        "question": "What does each respaced sampling step count K cost and buy?",
        "answer": "K = 5 (beta_tilde) is within 0.07 of K = 10-20 at ~60% of K = 10's cost; "
        "measured with the eps target (v since: diffusion_target).",
        "date": "2026-11-25",
        "commit": "1ed73ea",
        "superseded": "in part by diffusion_target (under v, K = 1-2 no longer fail); K = 5 stays",
    },
}
