"""Diffusion world model: differentiable fixed-noise sampling, fit on a known system, rollout
API, the Lightning stage and its checkpoint guards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_itpo.cli import lightning_main
from lit_itpo.errors import CheckpointError, DivergenceError
from lit_itpo.modules import WorldModelModule, load_world_model
from lit_itpo.world_models import DiffusionTransition, DiffusionWorldModel, RewardModel
from tests.conftest import DID, cli_args


def _tiny_wm(obs_dim=3, act_dim=2, K=4, dtype=torch.float64, seed=0, mean_hidden=None):
    torch.manual_seed(seed)
    tr = DiffusionTransition(
        obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim, steps=K, hidden=(16, 16),
        clip_x0=None, mean_hidden=mean_hidden,
    )  # fmt: skip
    rw = RewardModel(obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim, hidden=(16, 16))
    return DiffusionWorldModel(tr, rw).to(dtype)


@pytest.mark.parametrize("mean_hidden", [None, (16,)])
def test_sampling_gradients_match_finite_differences(mean_hidden):
    wm = _tiny_wm(mean_hidden=mean_hidden)
    s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    a = (torch.rand(5, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    noise = torch.randn(5, 4, 3, dtype=torch.float64)
    w = torch.randn(5, 3, dtype=torch.float64)

    def f(s_, a_):
        return (wm.next(s_, a_, noise) * w).sum()

    gs, ga = torch.autograd.grad(f(s, a), (s, a))
    eps = 1e-6
    for x, g, which in ((s, gs, 0), (a, ga, 1)):
        fd = torch.zeros_like(x)
        for idx in range(x.numel()):
            d = torch.zeros_like(x).view(-1)
            d[idx] = eps
            d = d.view_as(x)
            args_p = (s + d, a) if which == 0 else (s, a + d)
            args_m = (s - d, a) if which == 0 else (s, a - d)
            fd.view(-1)[idx] = (f(*args_p) - f(*args_m)) / (2 * eps)
        rel = (g - fd).norm() / fd.norm()
        assert rel < 1e-4, rel
        assert g.abs().sum() > 0


def test_fixed_noise_is_deterministic_and_noise_matters():
    wm = _tiny_wm(dtype=torch.float32)
    s, a = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
    noise = torch.randn(8, 4, 3)
    assert torch.equal(wm.next(s, a, noise), wm.next(s, a, noise.clone()))
    assert not torch.allclose(wm.next(s, a, noise), wm.next(s, a, torch.randn(8, 4, 3)))


def _fit_transition(m, s, a, sn, steps: int, batch: int, cosine: bool = False) -> None:
    """Fit ``m`` to transitions (s, a) -> sn with its data statistics, Adam 1e-3 (and cosine
    decay to 0 when ``cosine``)."""
    d = sn - s
    m.set_stats(
        {"obs_mean": s.mean(0), "obs_std": s.std(0), "delta_mean": d.mean(0), "delta_std": d.std(0)}
    )
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    for _ in range(steps):
        idx = torch.randint(0, s.shape[0], (batch,))
        loss, _ = m.loss(s[idx], a[idx], sn[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_learns_linear_gaussian_mean_and_spread():
    torch.manual_seed(0)
    A = torch.tensor([[0.9, 0.2], [-0.1, 0.8]])
    Bm = torch.tensor([[0.5], [-0.3]])
    sig = torch.tensor([0.1, 0.3])
    n = 20_000
    s = torch.randn(n, 2)
    a = torch.rand(n, 1) * 2 - 1
    sn = s @ A.T + a @ Bm.T + sig * torch.randn(n, 2)
    m = DiffusionTransition(2, 1, [-1.0], [1.0], steps=10, hidden=(128, 128))
    _fit_transition(m, s, a, sn, steps=4000, batch=512, cosine=True)
    s0, a0 = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3]])
    with torch.no_grad():
        out = m.sample(s0.expand(8000, 2), a0.expand(8000, 1), torch.randn(8000, 10, 2))
    true_mean = (s0 @ A.T + a0 @ Bm.T)[0]
    assert torch.allclose(out.mean(0), true_mean, rtol=0.1), (out.mean(0), true_mean)
    assert torch.allclose(out.std(0), sig, rtol=0.1), (out.std(0), sig)


def test_mean_head_learns_the_mean_and_the_residual_its_spread():
    """With a mean head the diffusion models the residual: the samples keep the system's mean
    and spread, the head alone predicts the mean, and both parts get gradients."""
    torch.manual_seed(0)
    A = torch.tensor([[0.9, 0.2], [-0.1, 0.8]])
    sig = torch.tensor([0.1, 0.3])
    n = 20_000
    s, a = torch.randn(n, 2), torch.rand(n, 1) * 2 - 1
    sn = s @ A.T + 0.5 * a + sig * torch.randn(n, 2)
    m = DiffusionTransition(2, 1, [-1.0], [1.0], steps=10, hidden=(64, 64), mean_hidden=(64, 64))
    loss, info = m.loss(s[:64], a[:64], sn[:64])
    loss.backward()
    assert m.mean_net[0].weight.grad.abs().sum() > 0 and "transition/mean_mse" in info
    assert m.denoiser.net[0].weight.grad.abs().sum() > 0
    _fit_transition(m, s, a, sn, steps=3000, batch=512, cosine=True)
    s0, a0 = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3]])
    true_mean = (s0 @ A.T + 0.5 * a0)[0]
    with torch.no_grad():
        out = m.sample(s0.expand(8000, 2), a0.expand(8000, 1), torch.randn(8000, 10, 2))
        head = m.to_next_obs(s0, torch.zeros(1, 2), m.cond(s0, a0))[0]
    assert torch.allclose(out.mean(0), true_mean, rtol=0.1), (out.mean(0), true_mean)
    assert torch.allclose(out.std(0), sig, rtol=0.15), (out.std(0), sig)
    assert torch.allclose(head, true_mean, rtol=0.1), (head, true_mean)


def test_rollout_keys_shapes_and_graph():
    wm = _tiny_wm(dtype=torch.float32)
    policy = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
    B, M, H = 4, 6, 5
    g = torch.Generator().manual_seed(0)
    td = wm.rollout(torch.randn(B, 3), policy, horizon=H, particles=M, generator=g)
    assert td.batch_size == torch.Size([B, M, H])
    assert td["observation"].shape == (B, M, H, 3) and td["action"].shape == (B, M, H, 2)
    assert td["next", "observation"].shape == (B, M, H, 3)
    assert td["next", "reward"].shape == (B, M, H, 1)
    # states chain: next observation of step j is the observation of step j + 1
    assert torch.equal(td["next", "observation"][:, :, :-1], td["observation"][:, :, 1:])
    # particles differ (own noise), and the graph reaches the policy parameters
    assert not torch.allclose(td["next", "observation"][:, 0], td["next", "observation"][:, 1])
    td["next", "reward"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert wm.noise_shape(B, M, H) == (B, M, H, 4, 3)
    with pytest.raises(ValueError, match="noise has shape"):
        wm.rollout(torch.randn(B, 3), policy, H, M, noise=torch.randn(B, M, H, 3))


def test_non_finite_loss_is_a_clear_error(tiny_root):
    m = WorldModelModule(11, 3, [-1.0] * 3, [1.0] * 3, hidden=[8], reward_hidden=[8])
    from lit_itpo.data.datamodule import MinariDataModule

    dm = MinariDataModule(DID, data_dir=str(tiny_root[0]))
    dm.setup()
    batch = dm.train_data[:16].clone()
    batch["next", "observation"][3, 0] = float("nan")
    with pytest.raises(DivergenceError, match="loss became nan"):
        m.training_step(batch, 0)


@pytest.fixture(scope="module")
def wm_ckpt(tiny_root, tmp_path_factory):
    root, _ = tiny_root
    out = tmp_path_factory.mktemp("wm")
    cli = lightning_main(
        cli_args(
            "fit",
            "conf/embedded/world_model.yaml",
            root,
            out,
            20,
            "--model.init_args.hidden",
            "[32, 32]",
            "--model.init_args.reward_hidden",
            "[32, 32]",
        )
    )
    metrics = dict(cli.trainer.callback_metrics)
    return next(Path(cli.trainer.logger.log_dir).glob("checkpoints/*.ckpt")), metrics, cli


def test_fit_smoke_logs_metrics_figure_and_loadable_checkpoint(wm_ckpt):
    ckpt, metrics, cli = wm_ckpt
    for key in ("val/state_rmse", "val/reward_rmse", "val/open_loop_rmse_h5"):
        assert key in metrics and torch.isfinite(metrics[key])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(Path(cli.trainer.logger.log_dir)), size_guidance={"images": 0})
    ev.Reload()
    assert "val/imagined_vs_real" in ev.Tags()["images"]
    wm = load_world_model(ckpt, obs_dim=11, action_dim=3, dataset_id=DID)
    assert not any(p.requires_grad for p in wm.parameters())
    assert wm.transition.obs_std.ne(1).any()  # normaliser from the data travelled along
    td = wm.rollout(torch.zeros(2, 11), lambda s: torch.zeros(*s.shape[:-1], 3), 3, 4)
    assert td.batch_size == torch.Size([2, 4, 3])


def test_loader_rejects_wrong_stage_dims_and_dataset(wm_ckpt, tmp_path):
    ckpt, _, _ = wm_ckpt
    with pytest.raises(CheckpointError, match="obs_dim=11 but the data has obs_dim=17"):
        load_world_model(ckpt, obs_dim=17)
    with pytest.raises(CheckpointError, match="trained on 'test/hopper/random-v0'"):
        load_world_model(ckpt, dataset_id="lit_itpo/halfcheetah/medium-v0")
    blob = torch.load(ckpt, weights_only=True)
    blob["lit_itpo"]["stage"] = "policy"
    torch.save(blob, tmp_path / "policy.ckpt")
    with pytest.raises(CheckpointError, match="stage 'policy', not 'world_model'"):
        load_world_model(tmp_path / "policy.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_world_model(tmp_path / "missing.ckpt")


def test_respaced_sampling_uses_fewer_steps_of_the_same_model():
    wm = _tiny_wm(K=8, dtype=torch.float32)
    s, a = torch.randn(6, 3), torch.rand(6, 2) * 2 - 1
    full = wm.next(s, a, torch.zeros(6, 8, 3))
    wm.transition.set_sample_steps(2)
    assert wm.nfe_per_step == 2 and wm.noise_shape(6, 1, 1) == (6, 1, 1, 2, 3)
    short = wm.next(s, a, torch.zeros(6, 2, 3))
    assert torch.isfinite(short).all() and not torch.allclose(full, short)
    assert "coef_x0" not in wm.state_dict()  # derived, not saved: checkpoints serve any K
    wm.transition.set_sample_steps(8)
    assert torch.equal(full, wm.next(s, a, torch.zeros(6, 8, 3)))
    with pytest.raises(ValueError, match="sample_steps=9"):
        wm.transition.set_sample_steps(9)


def test_termination_model_learns_a_threshold_and_appears_in_rollouts():
    from lit_itpo.world_models import TerminationModel

    torch.manual_seed(0)
    m = TerminationModel(2, 1, [-1.0], [1.0], hidden=(32,), pos_weight=1.0)
    s, a = torch.randn(4000, 2), torch.rand(4000, 1) * 2 - 1
    s2 = s + 0.1 * torch.randn(4000, 2)
    term = s2[:, :1] > 1.0  # falls when the first coordinate passes 1
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(300):
        loss, info = m.loss(s, a, s2, term)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["termination/accuracy"] > 0.97
    wm = _tiny_wm(obs_dim=2, act_dim=1, dtype=torch.float32)
    wm.termination_model = m
    td = wm.rollout(torch.randn(3, 2), lambda x: torch.zeros(*x.shape[:-1], 1), 4, 2)
    p = td["next", "terminated"]
    assert p.shape == (3, 2, 4, 1) and ((p >= 0) & (p <= 1)).all()


def test_module_with_termination_trains_it(tiny_root):
    from lit_itpo.data.datamodule import MinariDataModule

    dm = MinariDataModule(DID, data_dir=str(tiny_root[0]))
    dm.setup()
    m = WorldModelModule(
        11, 3, [-1.0] * 3, [1.0] * 3, hidden=[8], reward_hidden=[8], termination=True
    )
    loss = m.training_step(dm.train_data[:64], 0)
    loss.backward()
    assert m.world_model.termination_model.net[0].weight.grad.abs().sum() > 0


def _fit_linear_system(prediction: str, K: int = 20, steps: int = 600, seed: int = 0):
    """A small diffusion model fitted to ``s' = 0.9 s + 0.5 a + 0.1 N(0, 1)`` (2-d state)."""
    torch.manual_seed(seed)
    n = 4096
    s, a = torch.randn(n, 2), torch.rand(n, 1) * 2 - 1
    sn = 0.9 * s + 0.5 * a + 0.1 * torch.randn(n, 2)
    m = DiffusionTransition(2, 1, [-1.0], [1.0], steps=K, hidden=(64, 64), prediction=prediction)
    _fit_transition(m, s, a, sn, steps=steps, batch=256)
    return m, s[:512], a[:512]


def _first_step_clip_fraction(m: DiffusionTransition, s, a) -> float:
    """Share of entries of the noisiest step's x0 estimate outside the +-clip_x0 range."""
    clip, m.clip_x0 = m.clip_x0, None
    try:
        with torch.no_grad():
            x0 = m.x0_estimate(torch.randn(s.shape[0], 2), m.steps - 1, m.cond(s, a))
    finally:
        m.clip_x0 = clip
    return (x0.abs() > clip).float().mean().item()


def _first_step_gradient(m: DiffusionTransition, s, a) -> torch.Tensor:
    """Gradient of the sampled next states' sum w.r.t. the first (noisiest) denoiser output."""
    outs = []
    hook = m.denoiser.register_forward_hook(lambda mod, inp, out: outs.append(out))
    try:
        out = m.sample(s, a, torch.randn(s.shape[0], m.steps, 2))
    finally:
        hook.remove()
    return torch.autograd.grad(out.sum(), outs[0])[0]


def test_noisiest_reverse_step_is_well_posed_with_v_prediction():
    """The cosine schedule ends at alpha_bar ~ 0: an eps model's x0 estimate divides by
    sqrt(alpha_bar) there and the clip fires on most entries (no signal, no gradient); the
    v model's estimate is in range and passes gradients from the noisiest step."""
    eps_model, s, a = _fit_linear_system("eps")
    v_model, _, _ = _fit_linear_system("v")
    assert _first_step_clip_fraction(eps_model, s, a) > 0.5
    assert _first_step_clip_fraction(v_model, s, a) < 0.01
    assert (_first_step_gradient(eps_model, s, a) != 0).float().mean() < 0.5
    assert (_first_step_gradient(v_model, s, a) != 0).float().mean() > 0.99


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_respaced_chain_starts_from_the_noisiest_step(k):
    tr = DiffusionTransition(3, 2, [-1.0] * 2, [1.0] * 2, steps=8, hidden=(8,), sample_steps=k)
    assert tr.ts[-1].item() == 7  # the chain's first reverse step is the noisiest trained one
    assert len(tr.ts) == k and (k == 1 or tr.ts[0].item() == 0)
    assert (tr.ts.diff() > 0).all()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adam_with_gradient_clipping_under_each_precision(
    precision, tiny_root, tmp_path, monkeypatch
):
    """The world-model stages clip gradients (configs: 1.0) with the fused Adam, also under
    bf16-mixed, where Lightning's own clipping refuses fused optimisers."""
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        norms.append(float(clip(params, max_norm, *args, **kwargs)))
        return norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    args = cli_args("fit", "conf/embedded/world_model.yaml", tiny_root[0], tmp_path, 6)
    args += ["--trainer.precision", precision, "--trainer.limit_val_batches", "0"]
    args += ["--model.init_args.hidden", "[16, 16]", "--model.init_args.reward_hidden", "[16]"]
    cli = lightning_main(args)
    assert cli.trainer.optimizers[0].defaults["fused"]
    assert len(norms) == 6 and all(n > 0 for n in norms)
