"""D4RL-normalised scores: ``100 * (R - min) / (max - min)``.

Reference returns come from the dataset's own Minari metadata first (``ref_min_score`` /
``ref_max_score``) and from D4RL's table second (Fu et al. 2020, the values D4RL and Minari use).
"""

from __future__ import annotations

import math

# D4RL reference returns (random policy, expert policy) per environment family.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    # Not a D4RL task: D4RL's rule measured here. min: a uniform random policy on Pendulum-v1
    # (-1183.5, standard error 19.4, 200 episodes: `python -m benchmarks.reference_returns`);
    # max: the best checkpoint of the behaviour SAC run of conf/collect/pendulum.yaml (-96.3
    # over 10 episodes, lit_itpo/assets/behaviour/pendulum-s0/behaviour.json).
    "pendulum": (-1183.5, -96.3),
}

# gymnasium env-id prefixes -> D4RL families.
_ENV_FAMILY = {
    "HalfCheetah": "halfcheetah",
    "Hopper": "hopper",
    "Walker2d": "walker2d",
    "Ant-": "ant",
    "AntMaze": "antmaze",
    "Pendulum": "pendulum",
}


def env_family(env_id: str | None) -> str | None:
    """Return the D4RL family of a gymnasium env id (``HalfCheetah-v5`` -> ``halfcheetah``)."""
    if not env_id:
        return None
    for prefix, family in _ENV_FAMILY.items():
        if env_id.startswith(prefix):
            return family
    return None


def reference_scores(
    env_id: str | None, ref_min: float | None = None, ref_max: float | None = None
) -> tuple[float, float] | None:
    """Reference (min, max) returns: the dataset's own if given, else D4RL's, else ``None``."""
    if ref_min is not None and ref_max is not None:
        if not (math.isfinite(ref_min) and math.isfinite(ref_max)) or ref_max == ref_min:
            return None
        return float(ref_min), float(ref_max)
    family = env_family(env_id)
    return D4RL_REF_SCORES.get(family) if family else None


def normalized_score(ret: float, ref: tuple[float, float] | None) -> float | None:
    """D4RL-normalised score of a raw return, or ``None`` when no reference scores exist."""
    if ref is None:
        return None
    lo, hi = ref
    return 100.0 * (ret - lo) / (hi - lo)
