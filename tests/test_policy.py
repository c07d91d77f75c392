"""ReBRAC losses and module, the evaluation engine and callback."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensordict import TensorDict

from lit_itpo.cli import lightning_main
from lit_itpo.errors import CheckpointError, EnvSpecError
from lit_itpo.evaluation import run_episodes
from lit_itpo.modules import ReBRACModule, load_policy, load_world_model
from lit_itpo.nets import TanhActor, TwinCritic
from lit_itpo.policies import iql_losses, rebrac_actor_loss, rebrac_critic_loss
from tests.conftest import DID, cli_args


def _batch(B=32, o=4, a=2):
    return TensorDict(
        {
            "observation": torch.randn(B, o),
            "action": torch.rand(B, a) * 2 - 1,
            "next": {
                "observation": torch.randn(B, o),
                "action": torch.rand(B, a) * 2 - 1,
                "reward": torch.randn(B, 1),
                "terminated": torch.rand(B, 1) < 0.2,
            },
        },
        [B],
    )


def _nets(o=4, a=2):
    torch.manual_seed(0)
    actor = TanhActor(o, a, [-1.0] * a, [1.0] * a, [8, 8])
    critic = TwinCritic(o, a, [8, 8])
    return actor, critic, TanhActor(o, a, [-1.0] * a, [1.0] * a, [8, 8]), TwinCritic(o, a, [8, 8])


def _grads(m):
    return [p.grad for p in m.parameters()]


def test_critic_loss_touches_only_the_critic():
    actor, critic, t_actor, t_critic = _nets()
    loss, info = rebrac_critic_loss(
        critic,
        t_critic,
        t_actor,
        _batch(),
        gamma=0.99,
        beta_critic=0.1,
        policy_noise=0.2,
        noise_clip=0.5,
        action_low=-torch.ones(2),
        action_high=torch.ones(2),
    )
    loss.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(critic))
    for m in (actor, t_actor, t_critic):
        assert all(g is None for g in _grads(m))
    assert {"critic/loss", "critic/q_mean", "critic/next_bc_penalty"} <= set(info)


def test_critic_target_uses_terminated_and_next_action_penalty():
    _, critic, t_actor, t_critic = _nets()
    b = _batch()
    kw = dict(
        gamma=0.9,
        policy_noise=0.0,
        noise_clip=0.5,
        action_low=-torch.ones(2),
        action_high=torch.ones(2),
    )
    # With every transition terminated the target is the reward: beta2 cannot matter.
    b["next", "terminated"][:] = True
    l1, _ = rebrac_critic_loss(critic, t_critic, t_actor, b, beta_critic=0.0, **kw)
    l2, _ = rebrac_critic_loss(critic, t_critic, t_actor, b, beta_critic=100.0, **kw)
    assert torch.allclose(l1, l2)
    q = critic(b["observation"], b["action"])
    assert torch.allclose(l1, (q - b["next", "reward"]).pow(2).mean(dim=(1, 2)).sum())
    b["next", "terminated"][:] = False
    l3, _ = rebrac_critic_loss(critic, t_critic, t_actor, b, beta_critic=100.0, **kw)
    assert not torch.allclose(l1, l3)


def test_actor_loss_touches_only_the_actor_and_reduces_to_bc():
    actor, critic, _, _ = _nets()
    b = _batch()
    critic.requires_grad_(False)
    loss, _ = rebrac_actor_loss(actor, critic, b, beta_actor=0.5)
    loss.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(actor))
    assert all(g is None for g in _grads(critic))
    # normalised Q term: lambda * mean(Q) has magnitude <= 1; with a huge beta the loss is BC
    big, info = rebrac_actor_loss(actor, critic, b, beta_actor=1e6)
    bc = (actor(b["observation"]) - b["action"]).pow(2).sum(-1).mean()
    assert torch.allclose(big / 1e6, bc, rtol=1e-5)
    assert info["actor/lambda"] > 0


def test_twin_critics_are_independent():
    critic = TwinCritic(4, 2, [8, 8])
    o, a = torch.randn(5, 4), torch.randn(5, 2)
    q = critic(o, a)
    q[0].sum().backward()
    for p in critic.parameters():  # member 1's slice of every parameter gets no gradient
        assert p.grad[1].abs().sum() == 0 and p.grad[0].abs().sum() > 0


def test_output_layers_stay_float32_under_bf16_autocast():
    """Q of a few hundred has a bfloat16 spacing of 1-2: the output layers of MLP and the
    fused critic run in float32 under autocast (hidden layers in bfloat16); outside autocast
    they are plain layers, float64 included."""
    from lit_itpo.nets import MLP

    torch.manual_seed(0)
    mlp, critic = MLP(4, 1, [16, 16]), TwinCritic(4, 2, [16, 16])
    x, a = torch.randn(8, 4) * 100, torch.rand(8, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_mlp, q_critic, hidden = mlp(x), critic(x, a), mlp[0](x)
    assert q_mlp.dtype == q_critic.dtype == torch.float32 and hidden.dtype == torch.bfloat16
    assert torch.allclose(q_mlp, mlp(x), rtol=0.05, atol=0.05)
    assert mlp.double()(x.double()).dtype == torch.float64  # no cast outside autocast


def test_run_episodes_is_seeded_and_batch_independent():
    spec = gym.spec("Hopper-v5").to_json()
    torch.manual_seed(0)
    lin = torch.nn.Linear(11, 3)

    def act(o):
        return torch.tanh(lin(o))

    a = run_episodes(act, spec, [1, 2, 3], max_episode_steps=40)
    b = run_episodes(act, spec, [1, 2, 3], max_episode_steps=40)
    c = run_episodes(act, spec, [3], max_episode_steps=40)
    assert torch.equal(a["return"], b["return"]) and torch.equal(a["length"], b["length"])
    # one at a time vs batched: the same episode, not bitwise (the matmul kernel, and so its
    # rounding at ~1e-7, may depend on the batch shape). Perturbing the actions by 3e-7
    # relative moves the return by <= 2.5e-7 relative (measured); rtol 1e-5 keeps a 40x margin,
    # while a bias of 1e-3 on the policy's pre-activation moves it by 2.7e-4 and another seed's
    # episode by ~1e-2.
    assert torch.allclose(a["return"][2], c["return"][0], rtol=1e-5)
    assert a["length"][2] == c["length"][0]
    assert len(set(a["return"].tolist())) == 3  # different seeds, different episodes
    assert (a["length"] <= 40).all()


def test_eval_bad_inputs():
    spec = gym.spec("Hopper-v5").to_json()
    with pytest.raises(EnvSpecError, match="action bounds"):
        run_episodes(lambda o: o[..., :3], spec, [0], action_bounds=([-2.0] * 3, [2.0] * 3))
    bad = json.dumps({"id": "NoSuchEnv-v9", "kwargs": {}})
    with pytest.raises(EnvSpecError, match="cannot be made"):
        run_episodes(lambda o: o, bad, [0])


def _fit_args(root, out, config="conf/embedded/rebrac.yaml"):
    return cli_args(
        "fit",
        config,
        root,
        out,
        20,
        "--model.init_args.hidden",
        "[32, 32]",
        "--trainer.callbacks.init_args.num_episodes",
        "3",
        "--trainer.callbacks.init_args.max_episode_steps",
        "30",
    )


@pytest.fixture(scope="module")
def rebrac_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rebrac")
    cli = lightning_main(_fit_args(tiny_root[0], out))
    ckpt = next(Path(cli.trainer.logger.log_dir).glob("checkpoints/*.ckpt"))
    return cli, ckpt, out


def test_rebrac_fit_smoke_with_evaluation(rebrac_run):
    cli, ckpt, _ = rebrac_run
    assert cli.trainer.global_step == 20  # max_steps counts critic updates (batches)
    m = cli.trainer.callback_metrics
    for key in (
        "eval/return_mean",
        "eval/normalized_score",
        "train/critic/loss",
        "train/actor/bc_mse",
        "val/q_data_mean",
    ):
        assert key in m and torch.isfinite(m[key]), key
    # training metrics are logged only on the steps the logger writes (every 5 here)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(Path(cli.trainer.logger.log_dir)))
    ev.Reload()
    assert [e.step for e in ev.Scalars("train/critic/loss")] == [4, 9, 14, 19]
    policy = load_policy(ckpt, obs_dim=11, action_dim=3, dataset_id=DID)
    assert isinstance(policy, ReBRACModule) and not policy.training
    assert not torch.allclose(policy.actor.obs_norm.std, torch.ones(11))
    with pytest.raises(CheckpointError, match="stage 'policy', not 'world_model'"):
        load_world_model(ckpt)
    # the line the evaluation prints after each evaluation
    from lit_itpo.callbacks.evaluation import summary_line

    line = summary_line("eval", 20, m)
    assert line.startswith("eval at step 20: return ")
    assert f"normalised score {float(m['eval/normalized_score']):.1f}" in line


def test_targets_move_slowly_toward_online_nets(rebrac_run):
    cli, _, _ = rebrac_run
    m = cli.model
    online = torch.cat([p.flatten() for p in m.critic.parameters()])
    target = torch.cat([p.flatten() for p in m.critic_target.parameters()])
    assert not torch.equal(online, target)
    assert not any(p.requires_grad for p in m.critic_target.parameters())


def test_standalone_validate_runs_the_eval_callback_and_matches(rebrac_run, tiny_root, tmp_path):
    cli, ckpt, _ = rebrac_run
    args = _fit_args(tiny_root[0], tmp_path)
    args[0] = "validate"
    v1 = lightning_main([*args, "--ckpt_path", str(ckpt)])
    v2 = lightning_main([*args, "--ckpt_path", str(ckpt)])
    r1 = v1.trainer.callbacks[0].last
    r2 = v2.trainer.callbacks[0].last
    assert r1 and torch.equal(r1["return"], r2["return"])  # same seeds, same policy
    assert "eval/normalized_score" in v1.trainer.callback_metrics


class SigtermAtThirdStep(Callback):
    """Sends this process a SIGTERM (or ``sig``) from inside the third env step of the
    evaluation."""

    calls: list = []
    sig = signal.SIGTERM

    def on_validation_epoch_start(self, trainer, pl_module):
        act, calls = pl_module.act, type(self).calls

        def act_and_signal(obs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), type(self).sig)  # the trainer's handler only notes it
            return act(obs)

        pl_module.act = act_and_signal


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_sigterm_stops_the_evaluation_at_the_next_env_step(
    sig, rebrac_run, tiny_root, tmp_path, capsys, monkeypatch
):
    """A scheduler's SIGTERM (or a Ctrl-C) mid-episode: Lightning alone would finish every
    episode first (it acts on SIGTERM between batches, and exits with status 0; on Ctrl-C it
    exits 1); the callback stops at the next env step and the CLI exits with 143 (130) and says
    how to resume."""
    from lit_itpo.cli import main

    _, ckpt, _ = rebrac_run
    SigtermAtThirdStep.calls.clear()
    monkeypatch.setattr(SigtermAtThirdStep, "sig", sig)
    args = _fit_args(tiny_root[0], tmp_path)
    args[0] = "validate"
    args += ["--trainer.limit_val_batches", "1", "--ckpt_path", str(ckpt)]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--trainer.callbacks+=tests.test_policy.SigtermAtThirdStep"])
    assert exc.value.code == 128 + sig
    assert len(SigtermAtThirdStep.calls) == 3  # the 4th env step never ran (30-step episodes)
    err = capsys.readouterr().err
    assert f"stopped by {sig.name}; rerun the same command to evaluate again" in err


def _td(B=16, o=4, a=2):
    b = _batch(B, o, a)
    b["next", "done"] = b["next", "terminated"].clone()
    b["next", "truncated"] = torch.zeros_like(b["next", "terminated"])
    return b


def _changed(params_before, params_after):
    return [not torch.equal(x, y) for x, y in zip(params_before, params_after, strict=True)]


class _TorchRLQ(torch.nn.Module):
    """One critic as TorchRL's losses take it (they stack N copies of its parameters)."""

    def __init__(self, obs_dim, action_dim, hidden):
        super().__init__()
        from lit_itpo.nets import MLP

        self.net = MLP(obs_dim + action_dim, 1, hidden)

    def forward(self, obs, action):
        return self.net(torch.cat([obs, action], -1))


def _qvalue_module(o=4, a=2, hidden=(8, 8)):
    from tensordict.nn import TensorDictModule

    return TensorDictModule(
        _TorchRLQ(o, a, list(hidden)),
        in_keys=["observation", "action"],
        out_keys=["state_action_value"],
    )


def _copy_twin_critic(params, critic) -> None:
    """Our fused ``TwinCritic`` weights into TorchRL's stacked ``[N, ...]`` critic params."""
    from lit_itpo.nets import EnsembleLinear

    linears = [m for m in critic.q.net if isinstance(m, EnsembleLinear)]
    with torch.no_grad():
        for idx, lin in zip(("0", "2", "4"), linears, strict=True):
            params["module", "net", idx, "weight"].data.copy_(lin.weight.transpose(1, 2))
            params["module", "net", idx, "bias"].data.copy_(lin.bias.squeeze(1))


def _critic_grads_as_torchrl(critic) -> list[torch.Tensor]:
    """Our critic's gradients in TorchRL's layout and order (weight, bias per layer)."""
    from lit_itpo.nets import EnsembleLinear

    out = []
    for lin in (m for m in critic.q.net if isinstance(m, EnsembleLinear)):
        out += [lin.weight.grad.transpose(1, 2), lin.bias.grad.squeeze(1)]
    return out


def _close(ours, theirs, tol=1e-5):
    for x, y in zip(ours, theirs, strict=True):
        assert torch.allclose(x, y, atol=tol, rtol=tol), (x - y).abs().max()


def test_td3bc_losses_and_gradients_match_torchrl_td3bc_loss():
    """The fast path (plain modules, no TensorDict in the update) against TorchRL's
    ``TD3BCLoss`` on the same weights, batch and noise: losses and gradients within 1e-5."""
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.objectives import TD3BCLoss

    from lit_itpo.modules import TD3BCModule

    torch.manual_seed(0)
    m = TD3BCModule(4, 2, [-1.0] * 2, [1.0] * 2, alpha=2.5, hidden=[8, 8])
    with torch.no_grad():  # targets away from the online nets, so both roles are checked
        for p in [*m.actor_target.parameters(), *m.critic_target.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    spec = Bounded(-torch.ones(2), torch.ones(2), shape=(2,))
    actor = TensorDictModule(m.actor, in_keys=["observation"], out_keys=["action"])
    ref = TD3BCLoss(actor, _qvalue_module(), action_spec=spec, alpha=2.5, loss_function="l2")
    ref.make_value_estimator(gamma=m.hparams.gamma)
    _copy_twin_critic(ref.qvalue_network_params, m.critic)
    _copy_twin_critic(ref.target_qvalue_network_params, m.critic_target)
    with torch.no_grad():
        for k, p in m.actor_target.named_parameters():
            ref.target_actor_network_params[("module", *k.split("."))].data.copy_(p)
    b = _td(B=32)
    torch.manual_seed(1)
    ours, _ = m.critic_loss(b)
    ours.backward()
    torch.manual_seed(1)
    theirs, _ = ref.qvalue_loss(b.clone())
    theirs.backward()
    _close([ours], [theirs])
    q_params = ref.qvalue_network_params
    _close(
        _critic_grads_as_torchrl(m.critic),
        [q_params["module", "net", i, w].grad for i in ("0", "2", "4") for w in ("weight", "bias")],
    )
    m.zero_grad(set_to_none=True)
    m.critic.requires_grad_(False)
    ours, info = m.actor_loss(b)
    (g_ours,) = [torch.autograd.grad(ours, list(m.actor.parameters()))]
    theirs, meta = ref.actor_loss(b.clone())
    (g_theirs,) = [torch.autograd.grad(theirs, list(m.actor.parameters()))]
    _close(
        [ours, info["actor/bc_mse"], info["actor/lambda"]], [theirs, meta["bc_loss"], meta["lmbd"]]
    )
    _close(g_ours, g_theirs)


def test_iql_losses_and_gradients_match_torchrl_iql_loss():
    """IQL's fast path against TorchRL's ``IQLLoss`` on the same weights and batch: each of the
    three losses, and the gradients of their sum for every network, within 1e-5."""
    from tensordict.nn import InteractionType, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import IQLLoss

    from lit_itpo.modules import IQLModule

    torch.manual_seed(0)
    m = IQLModule(4, 2, [-1.0] * 2, [1.0] * 2, hidden=[8, 8])
    with torch.no_grad():
        for p in m.critic_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    spec = Bounded(-torch.ones(2), torch.ones(2), shape=(2,))
    actor = ProbabilisticActor(
        TensorDictModule(m.actor, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high},
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=False,
    )
    value = ValueOperator(m.value, in_keys=["observation"])
    hp = m.hparams
    ref = IQLLoss(
        actor,
        _qvalue_module(),
        value,
        num_qvalue_nets=2,
        expectile=hp.expectile,
        temperature=hp.temperature,
        loss_function="l2",
    )
    ref.make_value_estimator(gamma=hp.gamma)
    _copy_twin_critic(ref.qvalue_network_params, m.critic)
    _copy_twin_critic(ref.target_qvalue_network_params, m.critic_target)
    b = _td(B=32)
    total, info = iql_losses(
        m.actor,
        m.critic,
        m.critic_target,
        m.value,
        b,
        gamma=hp.gamma,
        expectile=hp.expectile,
        temperature=hp.temperature,
        action_low=m.action_low,
        action_high=m.action_high,
    )
    out = ref(b.clone())
    _close(
        [info["actor/loss"], info["critic/loss"], info["value/loss"]],
        [out["loss_actor"], out["loss_qvalue"], out["loss_value"]],
    )
    params = [*m.actor.parameters(), *m.value.parameters()]
    g_ours = torch.autograd.grad(total, params, retain_graph=True)
    theirs = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
    g_theirs = torch.autograd.grad(theirs, params, retain_graph=True)
    _close(g_ours, g_theirs)
    total.backward()
    theirs.backward()
    q_params = ref.qvalue_network_params
    _close(
        _critic_grads_as_torchrl(m.critic),
        [q_params["module", "net", i, w].grad for i in ("0", "2", "4") for w in ("weight", "bias")],
    )
    assert all(p.grad is None for p in m.critic_target.parameters())


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_baseline_losses_touch_only_their_networks(algo):
    from lit_itpo.modules import IQLModule, TD3BCModule

    b = _td()
    if algo == "td3bc":
        m = TD3BCModule(4, 2, [-1.0] * 2, [1.0] * 2, alpha=0.0, hidden=[8, 8])
        a_loss, info = m.actor_loss(b)  # alpha 0: pure behaviour cloning
        bc = (m.act(b["observation"]) - b["action"]).pow(2).mean()
        assert torch.allclose(a_loss, bc) and torch.allclose(info["actor/bc_mse"], bc)
        m.critic.requires_grad_(False)
        a_loss.backward()
        m.critic.requires_grad_(True)
        assert all(p.grad is None for p in m.critic.parameters())
        assert all(p.grad is not None for p in m.actor.parameters())
        m.zero_grad(set_to_none=True)
        m.critic_loss(b)[0].backward()
        assert all(p.grad is None for p in m.actor.parameters())
        assert all(p.grad is not None for p in m.critic.parameters())
    else:
        m = IQLModule(4, 2, [-1.0] * 2, [1.0] * 2, hidden=[8, 8])
        total, _ = iql_losses(
            m.actor, m.critic, m.critic_target, m.value, b, gamma=0.99, expectile=0.7,
            temperature=3.0, action_low=m.action_low, action_high=m.action_high,
        )  # fmt: skip
        total.backward()
        for net in (m.actor, m.critic, m.value):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None for p in m.critic_target.parameters())


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_baseline_fit_smoke(algo, tiny_root, tmp_path):
    args = _fit_args(tiny_root[0], tmp_path, f"conf/embedded/{algo}.yaml")
    cli = lightning_main(args)
    assert cli.trainer.global_step == 20
    m = cli.trainer.callback_metrics
    assert torch.isfinite(m["eval/return_mean"]) and torch.isfinite(m["train/critic/loss"])
    if algo == "td3bc":  # the critic's Q(s, a) and target, logged (was a constant 0 once)
        assert float(m["train/critic/q_mean"]) != 0.0 and "train/critic/target_mean" in m
    # the evaluated policy is the trained one, not freshly initialised weights
    import inspect

    names = inspect.signature(type(cli.model).__init__).parameters
    fresh = type(cli.model)(**{k: v for k, v in cli.model.hparams.items() if k in names})
    norms = {k: v for k, v in cli.model.state_dict().items() if "obs_norm" in k}
    fresh.load_state_dict(norms, strict=False)
    o = torch.randn(4, 11)
    assert not torch.allclose(fresh.act(o), cli.model.act(o))


@pytest.mark.parametrize("algo", ["rebrac", "td3bc", "iql"])
def test_bf16_mixed_fit_runs_matmuls_in_bfloat16_and_keeps_float32_weights(
    algo, tiny_root, tmp_path
):
    """``--trainer.precision bf16-mixed`` (the fast CPU path of benchmarks/policy_speed.py):
    training matmuls run in bfloat16, the weights, optimiser state and checkpoint stay float32,
    and the losses stay finite."""
    from torch.overrides import TorchFunctionMode

    class MatmulDtypes(TorchFunctionMode):  # dtypes that linear layers / baddbmm produce
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.nn.functional.linear, torch.baddbmm):
                self.seen.add(out.dtype)
            return out

    args = _fit_args(tiny_root[0], tmp_path, f"conf/embedded/{algo}.yaml")[1:]  # no "fit"
    cli = lightning_main([*args, "--trainer.precision", "bf16-mixed"], run=False)
    with MatmulDtypes() as probe:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert torch.bfloat16 in probe.seen
    m = cli.trainer.callback_metrics
    assert torch.isfinite(m["train/critic/loss"]) and torch.isfinite(m["eval/return_mean"])
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())
    ckpt = torch.load(
        next(Path(cli.trainer.logger.log_dir).glob("checkpoints/*.ckpt")), weights_only=False
    )
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    floats += [  # Adam's moments
        t
        for opt in ckpt["optimizer_states"]
        for state in opt["state"].values()
        for t in state.values()
        if torch.is_tensor(t) and t.is_floating_point()
    ]
    assert floats and all(v.dtype == torch.float32 for v in floats)


def test_maze_success_matches_a_plain_gymnasium_loop():
    """``run_episodes`` reports per-episode success on a maze as gymnasium's own loop sees it
    (the same seeds and open-loop actions; PointMaze, random actions succeed ~30% in 300 steps)."""
    from lit_itpo.envs import gym_spec, make_gym_env
    from lit_itpo.evaluation import run_episodes

    spec = gym_spec("PointMaze_UMaze-v3", continuing_task=True, reset_target=False)
    seeds, T = list(range(100, 108)), 300
    actions = torch.rand(T, len(seeds), 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = [0]

    def act(obs):
        a = actions[t[0]]
        t[0] += 1
        return a

    res = run_episodes(act, spec.to_json(), seeds, obs_keys=["observation", "desired_goal"])
    expected = []
    for i, s in enumerate(seeds):
        env = make_gym_env(spec)
        env.reset(seed=s)  # TorchRL's set_seed(s) resets once with the seed; the rollout's own
        env.reset()  # reset then draws the episode's start from that seeded state
        hit = False
        for k in range(T):
            _, _, term, trunc, info = env.step(actions[k, i].numpy())
            hit |= bool(info["success"])
            if term or trunc:
                break
        expected.append(float(hit))
        env.close()
    assert res["success"].tolist() == expected
    assert 0 < sum(expected) < len(seeds)  # both outcomes occur, so the check can fail
