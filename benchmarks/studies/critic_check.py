"""Is a policy's critic a value function yet? Its Q on held-out dataset transitions against the
discounted Monte-Carlo return that followed them, and how far the actor left the data.

For each policy checkpoint, on the held-out episodes of its dataset (the training split's
complement, as the stage made it):

- ``mc``: the discounted return-to-go of each transition (``gamma`` of the policy), with no
  bootstrap at a termination; transitions fewer than ``1 / (1 - gamma)`` steps before a
  truncation (time limit or dataset cut) are left out, their return-to-go is cut short;
- ``q_data``: min over the critics of Q(s, a) at the dataset's action, in the same reward units
  (the policy's reward transform applied to the returns); its mean over ``mc``'s mean and its
  Pearson correlation with ``mc`` (a behaviour value function would be close to 1 and 1);
- ``q_gap``: Q(s, pi(s)) - Q(s, a), what the actor believes it gains over the data;
- ``action_mse``: ||pi(s) - a||^2 per action dimension.

    python -m benchmarks.studies.critic_check --name NAME --policy P.ckpt \\
        --dataset-id lit_itpo/hopper/medium-v0 [--out NAME]
    python -m benchmarks.studies.critic_check --report

One cell per ``--name`` in benchmarks/results/studies/critic_check.json; a recorded one is not
measured again (``--out NAME`` measures it again into results/studies/NAME.json). A missing
dataset or checkpoint stops the run before it starts, naming the command that makes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.common import (
    add_out_arg,
    load,
    require_checkpoints,
    require_dataset,
    run_in_process,
)
from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.modules import load_policy

NAME = "studies/critic_check"


def returns_to_go(
    reward: np.ndarray, terminated: bool, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted return-to-go of one episode ``[T]`` and which steps it is complete for (all
    if the episode terminated; else those at least ``1 / (1 - gamma)`` steps before its end)."""
    g, out = 0.0, np.empty(len(reward))
    for t in range(len(reward) - 1, -1, -1):
        g = reward[t] + gamma * g
        out[t] = g
    valid = np.ones(len(reward), dtype=bool)
    if not terminated:
        valid[max(0, len(reward) - int(round(1 / (1 - gamma)))) :] = False
    return out, valid


@torch.no_grad()
def check(policy_path: str, dataset_id: str, data_dir: str | None, max_transitions: int) -> dict:
    module = load_policy(policy_path, dataset_id=dataset_id)
    parts = module.policy_parts()
    gamma = float(module.hparams.get("gamma", 0.99))
    dm = MinariDataModule(dataset_id, data_dir=data_dir)
    dm.setup("fit")
    obs, act, mc = [], [], []
    for ep in dm.val_episodes():
        r = ep["next", "reward"].reshape(-1).double().numpy()
        r = r * parts.reward_scale + parts.reward_bias
        g, valid = returns_to_go(r, bool(ep["next", "terminated"][-1]), gamma)
        obs.append(ep["observation"][valid])
        act.append(ep["action"][valid])
        mc.append(g[valid])
    n = max_transitions
    obs, act, mc = torch.cat(obs)[:n], torch.cat(act)[:n], np.concatenate(mc)[:n]
    q_data = parts.critic(obs, act).min(0).values.reshape(-1).double().numpy()
    pi = parts.actor(obs)
    q_pi = parts.critic(obs, pi).min(0).values.reshape(-1).double().numpy()
    out = {
        "transitions": int(len(mc)),
        "gamma": gamma,
        "mc_mean": float(mc.mean()),
        "q_data_mean": float(q_data.mean()),
        "q_over_mc": float(q_data.mean() / mc.mean()),
        "corr_q_mc": float(np.corrcoef(q_data, mc)[0, 1]),
        "q_gap_mean": float((q_pi - q_data).mean()),
        "action_mse": float((pi - act).pow(2).mean()),
        "step": int(torch.load(policy_path, map_location="cpu", weights_only=False)["global_step"]),
    }
    return out


def report(payload: dict) -> str:
    lines = [
        "| policy | updates | held-out transitions | MC return (mean) | Q(s, a) (mean) | Q / MC | "
        "corr(Q, MC) | Q(s, pi) - Q(s, a) | action MSE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, c in payload["cells"].items():
        lines.append(
            f"| {key} | {c['step']} | {c['transitions']} | {c['mc_mean']:.1f} | "
            f"{c['q_data_mean']:.1f} | {c['q_over_mc']:.2f} | {c['corr_q_mc']:.2f} | "
            f"{c['q_gap_mean']:+.2f} | {c['action_mse']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", help="the cell's key")
    p.add_argument("--policy", help="a policy checkpoint (ReBRAC, TD3+BC, IQL)")
    p.add_argument("--dataset-id")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--transitions", type=int, default=50_000)
    add_out_arg(p, NAME)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        print(report(load(args.out)))
        return
    if not (args.name and args.policy and args.dataset_id):
        p.error("--name, --policy and --dataset-id are required to measure")
    cmd = (
        f"python -m benchmarks.studies.critic_check --name {args.name} --policy {args.policy} "
        f"--dataset-id {args.dataset_id}"
    )

    def measure() -> dict:
        res = check(args.policy, args.dataset_id, args.data_dir, args.transitions)
        print(args.name, res, flush=True)
        return res | {"policy": args.policy, "command": cmd}

    def inputs(_) -> None:
        require_dataset("critic_check", args.dataset_id, args.data_dir)
        require_checkpoints("critic_check", args.dataset_id, {"--policy": args.policy})

    meta = {"command": "python -m benchmarks.studies.critic_check"}
    run_in_process(args.out, [(args.name, measure)], meta, check=inputs)


if __name__ == "__main__":
    main()
