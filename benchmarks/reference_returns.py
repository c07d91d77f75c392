"""Reference returns of a task outside D4RL's table, by D4RL's rule: the mean return of a
uniform random policy (``min``; ``max`` is the behaviour run's best checkpoint, recorded in
``lit_itpo/assets/behaviour/<env>-s<seed>/behaviour.json``). The values in
``lit_itpo.data.scores.D4RL_REF_SCORES`` for such tasks (Pendulum) come from this command:

    python -m benchmarks.reference_returns [--env Pendulum-v1] [--episodes 200]

Episode ``i`` resets with seed ``10000 + i``; actions are drawn uniformly in the action box from
one ``numpy`` generator seeded 0, episode after episode, each to the env's time limit.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np


def random_returns(env_id: str, episodes: int, seed: int = 0) -> np.ndarray:
    """Per-episode returns ``[episodes]`` of the uniform random policy."""
    env = gym.make(env_id)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        env.reset(seed=10_000 + i)
        total, done = 0.0, False
        while not done:
            a = rng.uniform(low, high, low.shape).astype(np.float32)
            _, r, terminated, truncated, _ = env.step(a)
            total += r
            done = terminated or truncated
        out.append(total)
    env.close()
    return np.asarray(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--episodes", type=int, default=200)
    args = p.parse_args(argv)
    rets = random_returns(args.env, args.episodes)
    sem = rets.std() / np.sqrt(len(rets))
    print(
        f"{args.env}: uniform random policy, {len(rets)} episodes: {rets.mean():.1f} "
        f"(standard error {sem:.1f})"
    )


if __name__ == "__main__":
    main()
