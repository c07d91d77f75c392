"""D4RL's dataset recipes (Fu et al. 2020, Sec. 5) on gymnasium MuJoCo v5, written as Minari data.

- ``random``: a uniform random policy (Minari's ``mujoco/*/random`` convention; D4RL used a
  randomly initialised SAC policy, which is close to uniform after the tanh).
- ``medium``: the SAC checkpoint whose evaluated (stochastic) return sits nearest D4RL's medium
  level (halfcheetah ~41, hopper ~44, walker2d ~62 normalised), rolled out stochastically.
- ``medium-replay``: every transition the SAC agent collected until that checkpoint.
- ``expert``: the best checkpoint within the training budget (D4RL trained 1M+ steps; ours is
  shorter, so this is "best reached", and the README says how far it is from D4RL's expert).
- ``medium-expert``: ``medium`` and ``expert`` concatenated.
- ``waypoint`` (maze envs): D4RL's maze2d recipe, see :mod:`lit_itpo.collect.maze`.

Everything is seeded: with the same config (and behaviour checkpoints), datasets regenerate
identically. Behaviour checkpoints that matter are exported to ``export_dir`` so they can be
committed and the rollout recipes rerun in seconds anywhere without retraining.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from lit_itpo import __version__
from lit_itpo.collect.minari_writer import write_dataset
from lit_itpo.collect.rollout import Episode, rollout_episodes
from lit_itpo.collect.sac import (
    SACConfig,
    actor_policy_fn,
    load_behaviour_actor,
    load_stream,
    train_sac,
)
from lit_itpo.data.minari_io import datasets_root
from lit_itpo.data.scores import env_family, normalized_score, reference_scores
from lit_itpo.envs import gym_spec, is_maze, make_gym_env
from lit_itpo.errors import ConfigError, EnvSpecError
from lit_itpo.utils import atomic_write_json

log = logging.getLogger(__name__)

RECIPES = ("random", "medium", "medium-replay", "expert", "medium-expert", "waypoint")
# Medium-level targets (normalised) for the medium checkpoint: about the level of D4RL's medium
# datasets for each environment.
MEDIUM_TARGETS = {"halfcheetah": 41.0, "hopper": 44.0, "walker2d": 62.0}
ASSETS_BEHAVIOUR = Path(__file__).resolve().parent.parent / "assets" / "behaviour"


@dataclass
class CollectConfig:
    """``lit-itpo collect``: train (or reuse) a behaviour agent and write D4RL-style datasets.

    Attributes:
        env_id: gymnasium MuJoCo env, e.g. ``HalfCheetah-v5`` or ``PointMaze_UMaze-v3``.
        env_kwargs: kwargs of the data-collection env (stored in the dataset's env spec).
        eval_env_kwargs: kwargs of the evaluation env stored in the dataset (default: same).
        name: dataset family in the id (``<namespace>/<name>/<recipe>-v<version>``).
        namespace: Minari namespace of the datasets.
        version: dataset version in the id.
        recipes: which of random, medium, medium-replay, expert, medium-expert to write.
        steps: transitions per rolled-out dataset (D4RL: 1M); medium-replay has what it has.
        seed: seeds the SAC run and every rollout.
        medium_target: normalised score the medium policy should have (default: D4RL's level).
        medium_tolerance: warn when the chosen medium checkpoint is further than this.
        sac: behaviour-agent hyperparameters (its env_id and seed follow the fields above).
        run_dir: SAC run directory (default ``runs/behaviour/<name>-s<seed>``).
        data_dir: Minari root to write to (default ``$MINARI_DATASETS_PATH`` or ~/.minari/datasets).
        export_dir: where the chosen medium/expert actors are copied for committing
            (default the package's ``assets/behaviour/<name>-s<seed>``); ``null`` to skip.
        n_envs: envs stepped together during rollouts.
        overwrite: rewrite datasets that exist (otherwise they are skipped: resumable).
        id_suffix: appended to the recipe in the id (e.g. ``-small`` for a cut-down copy).
        controller_noise: Gaussian action noise of the maze waypoint controller (D4RL: 0.5).
        ref_episodes: maze envs: episodes for the random/controller reference returns.
    """

    env_id: str = "HalfCheetah-v5"
    env_kwargs: dict = field(default_factory=dict)
    eval_env_kwargs: dict | None = None
    name: str = "halfcheetah"
    namespace: str = "lit_itpo"
    version: int = 0
    recipes: list[str] = field(default_factory=lambda: ["random", "medium", "medium-replay"])
    steps: int = 1_000_000
    seed: int = 0
    medium_target: float | None = None
    medium_tolerance: float = 10.0
    sac: SACConfig = field(default_factory=SACConfig)
    run_dir: str | None = None
    data_dir: str | None = None
    export_dir: str | None = "auto"
    n_envs: int = 10
    overwrite: bool = False
    id_suffix: str = ""
    controller_noise: float = 0.5
    ref_episodes: int = 20

    def dataset_id(self, recipe: str) -> str:
        return f"{self.namespace}/{self.name}/{recipe}{self.id_suffix}-v{self.version}"


def _check(cfg: CollectConfig) -> gym.envs.registration.EnvSpec:
    bad = [r for r in cfg.recipes if r not in RECIPES]
    if bad:
        raise ConfigError(f"collect recipes {bad} are unknown; choose from {list(RECIPES)}.")
    maze = is_maze(cfg.env_id)
    allowed = (
        (["waypoint"] if cfg.env_id.startswith("PointMaze") else []) + ["random"]
        if maze
        else [r for r in RECIPES if r != "waypoint"]
    )
    wrong = [r for r in cfg.recipes if r not in allowed]
    if wrong:
        raise ConfigError(
            f"collect recipes {wrong} do not apply to '{cfg.env_id}', which takes {allowed} "
            "(PointMaze: waypoint or random; AntMaze: random; locomotion: the SAC recipes)."
        )
    if cfg.steps < 1:
        raise ConfigError(f"collect steps={cfg.steps} must be a positive number of transitions.")
    spec = gym_spec(cfg.env_id, **cfg.env_kwargs)
    env = make_gym_env(spec)
    try:
        if not isinstance(env.action_space, gym.spaces.Box):
            raise EnvSpecError(
                f"Environment '{cfg.env_id}' has action space {env.action_space}; collect needs "
                "a continuous Box action space."
            )
    finally:
        env.close()
    return spec


def uniform_policy(env_id, seed: int):
    """Seeded uniform-random actions in the env's Box, as a batched rollout policy."""
    env = make_gym_env(env_id)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    rng = np.random.default_rng(seed)

    def policy(obs) -> np.ndarray:
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        return rng.uniform(low, high, (n, len(low))).astype(np.float32)

    return policy


def _selected(evals: list[dict], target: float | None) -> tuple[dict, dict]:
    """(medium, expert) evaluation entries: nearest the target, and the best."""
    expert = max(evals, key=lambda e: e["return_mean"])
    if target is None:
        return expert, expert
    medium = min(evals, key=lambda e: abs(e["normalized"] - target))
    return medium, expert


def _stream_episodes(stream: dict[str, np.ndarray]) -> list[Episode]:
    """Split the agent's transition stream into episodes: at terminated/truncated, and where the
    next transition does not start from this one's next observation (a reset or resume point)."""
    obs, nobs = stream["observation"], stream["next_observation"]
    term, trunc = stream["terminated"].astype(bool), stream["truncated"].astype(bool)
    n = len(obs)
    cont = np.zeros(n, dtype=bool)
    cont[:-1] = (~(term | trunc))[:-1] & np.all(nobs[:-1] == obs[1:], axis=-1)
    ends = np.flatnonzero(~cont)
    episodes, start = [], 0
    for end in ends:
        sl = slice(start, end + 1)
        t_trunc = trunc[sl].copy()
        t_trunc[-1] = t_trunc[-1] or not term[end]
        episodes.append(
            Episode(
                observations=np.concatenate([obs[sl], nobs[end : end + 1]]),
                actions=stream["action"][sl],
                rewards=stream["reward"][sl].astype(np.float32),
                terminations=term[sl],
                truncations=t_trunc,
            )
        )
        start = end + 1
    return episodes


def _summary(episodes: list[Episode], ref) -> dict:
    """Size and return statistics of a dataset's episodes (all of them, the cut last one too)."""
    rets = np.array([e.ret for e in episodes])
    mean = float(rets.mean())
    return {
        "num_episodes": len(episodes),
        "num_steps": int(sum(len(e) for e in episodes)),
        "return_mean": mean,
        "return_std": float(rets.std()),
        "normalized_score_mean": normalized_score(mean, ref),
    }


def collect(cfg: CollectConfig, progress: bool = True) -> dict[str, dict]:
    """Run the recipes; returns ``{dataset_id: summary}``. Existing datasets are skipped."""
    from tqdm.auto import tqdm

    spec = _check(cfg)
    if is_maze(cfg.env_id):
        return collect_maze(cfg, spec, progress)
    torch.manual_seed(cfg.seed)
    fam = env_family(cfg.env_id)
    ref = reference_scores(cfg.env_id)
    if ref is None:
        raise ConfigError(
            f"No D4RL reference scores for env '{cfg.env_id}'; collect supports halfcheetah, "
            "hopper, walker2d and ant families."
        )
    target = cfg.medium_target if cfg.medium_target is not None else MEDIUM_TARGETS.get(fam)
    sac_cfg = SACConfig(**(asdict(cfg.sac) | {"env_id": cfg.env_id, "seed": cfg.seed}))
    run_dir = Path(cfg.run_dir or f"runs/behaviour/{cfg.name}-s{cfg.seed}")
    export = (
        ASSETS_BEHAVIOUR / f"{cfg.name}-s{cfg.seed}"
        if cfg.export_dir == "auto"
        else Path(cfg.export_dir)
        if cfg.export_dir
        else None
    )
    root = datasets_root(cfg.data_dir)
    todo = [r for r in cfg.recipes if cfg.overwrite or not (root / cfg.dataset_id(r)).exists()]
    for r in cfg.recipes:
        if r not in todo:
            log.info(
                "%s exists under %s; skipping (overwrite=true to redo)", cfg.dataset_id(r), root
            )

    needs_agent = [r for r in todo if r != "random"]
    actors: dict[str, tuple] = {}
    if needs_agent:
        committed = export is not None and (export / "behaviour.json").exists()
        if "medium-replay" in needs_agent or not committed:
            evals = train_sac(sac_cfg, run_dir, progress=progress)
            # scored against today's reference returns, not those of the run's own time (a
            # task whose reference is measured from this very run, e.g. Pendulum's expert)
            evals = [e | {"normalized": normalized_score(e["return_mean"], ref)} for e in evals]
            medium_e, expert_e = _selected(evals, target)
            for role, e in (("medium", medium_e), ("expert", expert_e)):
                actors[role] = load_behaviour_actor(run_dir / "actors" / f"{e['frames']:07d}.pt")
            if export is not None:
                export.mkdir(parents=True, exist_ok=True)
                for role, e in (("medium", medium_e), ("expert", expert_e)):
                    shutil.copyfile(
                        run_dir / "actors" / f"{e['frames']:07d}.pt", export / f"{role}.pt"
                    )
                atomic_write_json(
                    {
                        "env_id": cfg.env_id,
                        "seed": cfg.seed,
                        "sac": asdict(sac_cfg),
                        "medium_target": target,
                        "medium": medium_e,
                        "expert": expert_e,
                        "evals": evals,
                    },
                    export / "behaviour.json",
                )
        else:
            log.info("using committed behaviour actors from %s", export)
            for role in ("medium", "expert"):
                actors[role] = load_behaviour_actor(export / f"{role}.pt")
        med_entry = actors["medium"][1]["eval"]
        if target is not None and abs(med_entry["normalized"] - target) > cfg.medium_tolerance:
            log.warning(
                "medium checkpoint scores %.1f, more than %.0f from D4RL's %.1f: train longer "
                "(sac.total_frames) for a closer match",
                med_entry["normalized"],
                cfg.medium_tolerance,
                target,
            )

    make_env = lambda: make_gym_env(spec)  # noqa: E731
    results: dict[str, dict] = {}
    made: dict[str, list[Episode]] = {}

    def rollout(policy, seed_offset: int, desc: str) -> list[Episode]:
        # Reseed per rollout so a dataset does not depend on what ran before it (training).
        torch.manual_seed(cfg.seed * 1_000_003 + seed_offset)
        with tqdm(total=cfg.steps, desc=desc, disable=not progress) as bar:
            return rollout_episodes(
                make_env,
                policy,
                n_steps=cfg.steps,
                n_envs=cfg.n_envs,
                seed=cfg.seed * 1_000_003 + seed_offset,
                progress=bar,
            )

    for recipe in todo:
        behaviour: dict = {}
        if recipe == "random":
            episodes = rollout(uniform_policy(spec, cfg.seed), 0, f"{cfg.name} random")
            behaviour = {"policy": "uniform random actions"}
        elif recipe in ("medium", "expert"):
            actor, blob = actors[recipe]
            episodes = made.get(recipe) or rollout(
                actor_policy_fn(actor),
                100_000 if recipe == "medium" else 200_000,
                f"{cfg.name} {recipe}",
            )
            behaviour = {
                "policy": f"SAC actor at {blob['frames']} frames (stochastic)",
                "eval": blob["eval"],
            }
        elif recipe == "medium-replay":
            frames = actors["medium"][1]["frames"]
            episodes = _stream_episodes(load_stream(run_dir, up_to_frames=frames))
            behaviour = {
                "policy": f"SAC replay stream, frames 0..{frames}",
                "eval": actors["medium"][1]["eval"],
            }
        else:  # medium-expert
            parts = []
            for role, off in (("medium", 100_000), ("expert", 200_000)):
                actor, _ = actors[role]
                parts.append(
                    made.get(role) or rollout(actor_policy_fn(actor), off, f"{cfg.name} {role}")
                )
                made[role] = parts[-1]
            episodes = parts[0] + parts[1]
            behaviour = {
                "policy": "medium + expert rollouts concatenated",
                "medium_eval": actors["medium"][1]["eval"],
                "expert_eval": actors["expert"][1]["eval"],
            }
        if recipe in ("medium", "expert"):
            made[recipe] = episodes
        results.update(_write(cfg, recipe, spec, spec, episodes, ref, behaviour))
    return results


def _write(
    cfg: CollectConfig, recipe: str, spec, eval_spec, episodes: list[Episode], ref, behaviour: dict
) -> dict[str, dict]:
    """Write one recipe's dataset with its provenance; returns ``{dataset_id: summary}``."""
    summary = _summary(episodes, ref)
    if episodes and "success" in episodes[0].infos:
        summary["success_rate"] = float(np.mean([e.infos["success"] for e in episodes]))
    did = cfg.dataset_id(recipe)
    provenance = {
        "dataset_id": did,
        "recipe": recipe,
        "command": " ".join(["lit-itpo", *sys.argv[1:]]) if sys.argv else None,
        "config": asdict(cfg),
        "behaviour": behaviour,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "lit_itpo_version": __version__,
        **summary,
    }
    write_dataset(
        did,
        episodes,
        spec,
        eval_env=eval_spec,
        data_dir=cfg.data_dir,
        ref_min_score=ref[0],
        ref_max_score=ref[1],
        algorithm_name=f"lit_itpo collect ({recipe}, D4RL recipe)",
        description=f"D4RL-style '{recipe}' data on {cfg.env_id} made by lit_itpo "
        f"(seed {cfg.seed}); provenance.json holds the command and behaviour returns.",
        provenance=provenance,
        overwrite=cfg.overwrite,
    )
    log.info("%s: %s", did, summary)
    return {did: summary}


def collect_maze(cfg: CollectConfig, spec, progress: bool = True) -> dict[str, dict]:
    """D4RL's maze2d recipe: a noisy waypoint controller; reference returns measured on the
    evaluation env (random policy = min, noise-free controller = max), success rate recorded."""
    from tqdm.auto import tqdm

    from lit_itpo.collect.maze import WaypointController

    eval_spec = gym_spec(cfg.env_id, **(cfg.eval_env_kwargs or cfg.env_kwargs))
    probe = make_gym_env(spec)
    maze = probe.unwrapped.maze
    probe.close()
    results: dict[str, dict] = {}
    root = datasets_root(cfg.data_dir)
    for recipe in cfg.recipes:
        if not cfg.overwrite and (root / cfg.dataset_id(recipe)).exists():
            log.info("%s exists; skipping (overwrite=true to redo)", cfg.dataset_id(recipe))
            continue
        if recipe == "random":
            results.update(_collect_maze_random(cfg, spec, eval_spec, progress))
            continue
        refs = {}
        for label, policy, off in (
            ("random", uniform_policy(eval_spec, cfg.seed + 1), 300_000),
            ("controller", WaypointController(maze, noise=0.0), 400_000),
        ):
            eps = rollout_episodes(
                lambda: make_gym_env(eval_spec),
                policy,
                n_episodes=cfg.ref_episodes,
                n_envs=cfg.n_envs,
                seed=cfg.seed * 1_000_003 + off,
            )
            refs[label] = {
                "return_mean": float(np.mean([e.ret for e in eps])),
                "success_rate": float(np.mean([e.infos.get("success", False) for e in eps])),
            }
        ref = (refs["random"]["return_mean"], refs["controller"]["return_mean"])
        if ref[1] <= ref[0]:
            raise ConfigError(
                f"On '{cfg.env_id}' the controller's mean return {ref[1]:.2f} does not exceed the "
                f"random policy's {ref[0]:.2f}; raise ref_episodes or check the env kwargs."
            )
        controller = WaypointController(maze, noise=cfg.controller_noise, seed=cfg.seed)
        with tqdm(total=cfg.steps, desc=f"{cfg.name} {recipe}", disable=not progress) as bar:
            episodes = rollout_episodes(
                lambda: make_gym_env(spec),
                controller,
                n_steps=cfg.steps,
                n_envs=cfg.n_envs,
                seed=cfg.seed * 1_000_003,
                progress=bar,
            )
        behaviour = {
            "policy": f"BFS waypoint + PD controller, noise {cfg.controller_noise}",
            "reference": refs,
        }
        results.update(_write(cfg, recipe, spec, eval_spec, episodes, ref, behaviour))
    return results


def _collect_maze_random(cfg: CollectConfig, spec, eval_spec, progress: bool) -> dict[str, dict]:
    """Uniform-random actions in a maze (any behaviour: it exercises the dict-observation,
    goal and sparse-reward path, e.g. for AntMaze where no scripted controller exists). The
    reference scores are D4RL's for the env family (AntMaze: 0 and 1, i.e. a return of 1 per
    success when the evaluation env ends the episode at the goal)."""
    from tqdm.auto import tqdm

    ref = reference_scores(cfg.env_id)
    if ref is None:
        raise ConfigError(
            f"The maze 'random' recipe needs D4RL reference scores for '{cfg.env_id}' (AntMaze "
            "has them); for PointMaze use the 'waypoint' recipe, which measures its own."
        )
    with tqdm(total=cfg.steps, desc=f"{cfg.name} random", disable=not progress) as bar:
        episodes = rollout_episodes(
            lambda: make_gym_env(spec),
            uniform_policy(spec, cfg.seed),
            n_steps=cfg.steps,
            n_envs=cfg.n_envs,
            seed=cfg.seed * 1_000_003,
            progress=bar,
        )
    behaviour = {"policy": "uniform random actions"}
    return _write(cfg, "random", spec, eval_spec, episodes, ref, behaviour)
