"""SAC behaviour agent (Haarnoja et al. 2018) trained online with TorchRL, as D4RL made its data.

D4RL (Fu et al. 2020) trained SAC online and kept: the policy at about a third of expert
performance ("medium"), its replay buffer up to that point ("medium-replay") and the final policy
("expert"). This module trains the agent and keeps everything those recipes need in a run
directory, resumable at every evaluation point:

    <run_dir>/state.pt           losses, optimisers, counters, RNG (the resume point)
    <run_dir>/stream/NNNNNNN.npz transitions collected up to each resume point (medium-replay)
    <run_dir>/actors/NNNNNNN.pt  the actor at each evaluation
    <run_dir>/evals.json         stochastic-policy returns at each evaluation

Uses TorchRL's ``SACLoss`` (v2: twin Q, learned temperature, no V net), ``SoftUpdate`` and its
``Collector`` as they are. Deviation from D4RL's rlkit SAC: 2 x 256 networks (D4RL: 2 x 256 too),
batch 256, UTD 1, 5k random warm-up frames; the budget is far shorter than D4RL's, so "expert"
here is the best policy reached within it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tensordict.nn import InteractionType, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

from lit_itpo.collect.rollout import rollout_episodes
from lit_itpo.data.scores import normalized_score, reference_scores
from lit_itpo.errors import ConfigError
from lit_itpo.utils import atomic_torch_save, atomic_write_json, remove_stale_temps, temp_prefix

log = logging.getLogger(__name__)


@dataclass
class SACConfig:
    """Hyperparameters of the behaviour agent (rlkit / D4RL defaults where they exist)."""

    env_id: str = "HalfCheetah-v5"
    seed: int = 0
    total_frames: int = 200_000
    init_random_frames: int = 5_000
    frames_per_batch: int = 1_000
    eval_every: int = 5_000
    eval_episodes: int = 5
    batch_size: int = 256
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    num_threads: int = 1


def build_actor(obs_dim: int, act_dim: int, low, high, hidden: int = 256) -> ProbabilisticActor:
    """Tanh-Gaussian actor ``[B, obs_dim] -> [B, act_dim]`` reading ``observation``."""
    net = nn.Sequential(
        MLP(
            in_features=obs_dim,
            out_features=2 * act_dim,
            num_cells=[hidden, hidden],
            activation_class=nn.ReLU,
        ),
        NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=1e-4),
    )
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": torch.as_tensor(low), "high": torch.as_tensor(high)},
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=False,
    )


def _build_qvalue(obs_dim: int, act_dim: int, hidden: int) -> ValueOperator:
    net = MLP(
        in_features=obs_dim + act_dim,
        out_features=1,
        num_cells=[hidden, hidden],
        activation_class=nn.ReLU,
    )
    return ValueOperator(net, in_keys=["observation", "action"])


def actor_policy_fn(actor: ProbabilisticActor, deterministic: bool = False):
    """A TorchRL actor as ``np [N, obs_dim] -> np [N, act_dim]`` for :func:`rollout_episodes`."""
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    mode = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM

    @torch.no_grad()
    def fn(obs: np.ndarray) -> np.ndarray:
        td = TensorDict({"observation": torch.as_tensor(obs, dtype=torch.float32)}, [len(obs)])
        with set_exploration_type(mode):
            return actor(td)["action"].numpy()

    return fn


def load_behaviour_actor(path: str | Path) -> tuple[ProbabilisticActor, dict]:
    """Load an actor saved by :func:`train_sac` (``{"config", "dims", "state_dict", ...}``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    d = blob["dims"]
    actor = build_actor(d["obs_dim"], d["act_dim"], d["low"], d["high"], blob["config"]["hidden"])
    actor.load_state_dict(blob["state_dict"])
    actor.eval()
    return actor, blob


def train_sac(cfg: SACConfig, run_dir: str | Path, progress: bool = True) -> list[dict]:
    """Train (or resume) the behaviour agent; returns the evaluation history.

    Args:
        cfg: hyperparameters; must match the run directory's on resume.
        run_dir: where the resumable state, stream, actor checkpoints and evals live.
        progress: show a tqdm bar of frames.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    (run_dir / "stream").mkdir(parents=True, exist_ok=True)
    (run_dir / "actors").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    env = TransformedEnv(GymEnv(cfg.env_id, device="cpu"), DoubleToFloat())
    env.set_seed(cfg.seed)
    obs_dim = env.observation_spec["observation"].shape[-1]
    act_dim = env.action_spec.shape[-1]
    low, high = env.action_spec.space.low.clone(), env.action_spec.space.high.clone()
    dims = {"obs_dim": obs_dim, "act_dim": act_dim, "low": low.tolist(), "high": high.tolist()}

    actor = build_actor(obs_dim, act_dim, low, high, cfg.hidden)
    qvalue = _build_qvalue(obs_dim, act_dim, cfg.hidden)
    with torch.no_grad():  # materialise lazy shapes
        actor(env.fake_tensordict())
    loss = SACLoss(
        actor_network=actor,
        qvalue_network=qvalue,
        num_qvalue_nets=2,
        loss_function="l2",
        action_spec=env.action_spec,
        alpha_init=1.0,
    )
    loss.make_value_estimator(gamma=cfg.gamma)
    updater = SoftUpdate(loss, tau=cfg.tau)
    opt_actor = torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=cfg.lr)
    opt_q = torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=cfg.lr)
    opt_alpha = torch.optim.Adam([loss.log_alpha], lr=cfg.lr)
    buffer = ReplayBuffer(storage=LazyTensorStorage(cfg.total_frames), batch_size=cfg.batch_size)

    frames, evals = 0, []
    for folder in (run_dir, run_dir / "stream", run_dir / "actors"):  # a killed run's temps
        remove_stale_temps(folder)
        remove_stale_temps(folder, ".*.tmp")  # atomic_torch_save's (one writer per run dir)
    state_path = run_dir / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st["config"] != asdict(cfg) | {"total_frames": st["config"]["total_frames"]}:
            raise ConfigError(
                f"Run directory {run_dir} was made with config {st['config']}, not {asdict(cfg)}; "
                "use a fresh --run_dir or the same settings to resume."
            )
        loss.load_state_dict(st["loss"])
        opt_actor.load_state_dict(st["opt_actor"])
        opt_q.load_state_dict(st["opt_q"])
        opt_alpha.load_state_dict(st["opt_alpha"])
        frames, evals = st["frames"], st["evals"]
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["np_rng"])
        # Drop anything written after the resume point, then refill the buffer from the stream.
        for p in list((run_dir / "stream").glob("[0-9]*.npz")) + list(
            (run_dir / "actors").glob("[0-9]*.pt")
        ):
            if int(p.stem) > frames:
                p.unlink()
        for chunk in sorted((run_dir / "stream").glob("[0-9]*.npz")):
            buffer.extend(_chunk_to_td(np.load(chunk)))
        log.info("resumed %s at %d frames", run_dir, frames)
    if frames >= cfg.total_frames:
        return evals

    collector = Collector(
        env,
        actor,
        frames_per_batch=cfg.frames_per_batch,
        total_frames=cfg.total_frames - frames,
        init_random_frames=max(0, cfg.init_random_frames - frames),
    )
    ref = reference_scores(cfg.env_id)
    pending: list[dict] = []
    bar = tqdm(
        total=cfg.total_frames, initial=frames, desc=f"SAC {cfg.env_id}", disable=not progress
    )
    t0 = time.perf_counter()
    # After a resume the env starts a fresh episode: the stream is discontinuous there, which
    # recipes._stream_episodes detects (next observation != following observation).
    for batch in collector:
        batch = batch.reshape(-1)
        buffer.extend(batch.exclude("collector"))
        pending.append(_td_to_arrays(batch))
        frames += batch.numel()
        bar.update(batch.numel())
        if frames >= cfg.init_random_frames:
            for _ in range(batch.numel()):
                sample = buffer.sample()
                losses = loss(sample)
                opt_q.zero_grad()
                opt_actor.zero_grad()
                opt_alpha.zero_grad()
                (losses["loss_qvalue"] + losses["loss_actor"] + losses["loss_alpha"]).backward()
                opt_q.step()
                opt_actor.step()
                opt_alpha.step()
                updater.step()
        if frames % cfg.eval_every == 0 or frames >= cfg.total_frames:
            collector.update_policy_weights_()
            eps = rollout_episodes(
                lambda: gym.make(cfg.env_id),
                actor_policy_fn(actor),
                n_episodes=cfg.eval_episodes,
                n_envs=cfg.eval_episodes,
                seed=10_000 + frames,
            )
            rets = np.array([e.ret for e in eps])
            entry = {
                "frames": frames,
                "return_mean": float(rets.mean()),
                "return_std": float(rets.std()),
                "normalized": normalized_score(float(rets.mean()), ref),
                "alpha": float(loss.log_alpha.detach().exp()),
                "wall_s": time.perf_counter() - t0,
            }
            evals.append(entry)
            bar.set_postfix(ret=f"{entry['return_mean']:.0f}")
            log.info("SAC %s frames=%d return=%.1f", cfg.env_id, frames, entry["return_mean"])
            _save_chunk(run_dir / "stream" / f"{frames:07d}.npz", pending)
            pending = []
            atomic_torch_save(
                {
                    "config": asdict(cfg),
                    "dims": dims,
                    "state_dict": actor.state_dict(),
                    "frames": frames,
                    "eval": entry,
                },
                run_dir / "actors" / f"{frames:07d}.pt",
            )
            atomic_write_json(evals, run_dir / "evals.json")
            atomic_torch_save(
                {
                    "config": asdict(cfg),
                    "loss": loss.state_dict(),
                    "opt_actor": opt_actor.state_dict(),
                    "opt_q": opt_q.state_dict(),
                    "opt_alpha": opt_alpha.state_dict(),
                    "frames": frames,
                    "evals": evals,
                    "torch_rng": torch.get_rng_state(),
                    "np_rng": np.random.get_state(),
                },
                state_path,
            )
    bar.close()
    collector.shutdown()
    return evals


_STREAM_KEYS = ("observation", "action", "next_observation", "reward", "terminated", "truncated")


def _td_to_arrays(td) -> dict[str, np.ndarray]:
    return {
        "observation": td["observation"].numpy(),
        "action": td["action"].numpy(),
        "next_observation": td["next", "observation"].numpy(),
        "reward": td["next", "reward"].reshape(-1).numpy(),
        "terminated": td["next", "terminated"].reshape(-1).numpy(),
        "truncated": td["next", "truncated"].reshape(-1).numpy(),
    }


def _save_chunk(path: Path, parts: list[dict[str, np.ndarray]]) -> None:
    import os
    import tempfile

    arrays = {k: np.concatenate([p[k] for p in parts]) for k in _STREAM_KEYS}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(), suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _chunk_to_td(chunk):
    from tensordict import TensorDict

    n = len(chunk["action"])
    t = lambda k: torch.as_tensor(chunk[k])  # noqa: E731
    return TensorDict(
        {
            "observation": t("observation"),
            "action": t("action"),
            "next": {
                "observation": t("next_observation"),
                "reward": t("reward").unsqueeze(-1),
                "terminated": t("terminated").unsqueeze(-1),
                "truncated": t("truncated").unsqueeze(-1),
                "done": (t("terminated") | t("truncated")).unsqueeze(-1),
            },
        },
        [n],
    )


def load_stream(run_dir: str | Path, up_to_frames: int | None = None) -> dict[str, np.ndarray]:
    """The behaviour agent's online transitions in order, up to ``up_to_frames`` (medium-replay)."""
    chunks = sorted(Path(run_dir, "stream").glob("[0-9]*.npz"))
    parts = [
        dict(np.load(c)) for c in chunks if up_to_frames is None or int(c.stem) <= up_to_frames
    ]
    if not parts:
        raise FileNotFoundError(f"No replay stream under {run_dir}/stream; train the agent first.")
    return {k: np.concatenate([p[k] for p in parts]) for k in _STREAM_KEYS}
