"""``model.compile``: the policy stages' updates through ``torch.compile`` against the eager
update they replace (same weights, batches and random draws)."""

from __future__ import annotations

import pytest
import torch
from torch._inductor import config as inductor_config

from lit_itpo.cli import lightning_main
from lit_itpo.errors import ConfigError
from lit_itpo.modules import IQLModule, ReBRACModule, TD3BCModule
from tests.conftest import cli_args

CLASSES = {"rebrac": ReBRACModule, "td3bc": TD3BCModule, "iql": IQLModule}


@pytest.fixture
def eager_random():
    """Inductor draws ``randn`` with its own generator; this makes compiled code call
    eager's, so both paths see the same target-policy noise."""
    with inductor_config.patch(fallback_random=True):
        yield


def _batch(B=64, o=4, a=2):
    from tests.test_policy import _batch as batch

    return batch(B, o, a)


@pytest.mark.parametrize("algo", list(CLASSES))
def test_compiled_losses_and_gradients_match_eager(algo, eager_random):
    """Each compiled loss method (the update's hot path) gives the eager loss and the same
    gradients within 1e-5, on the first call (the compile) and on later ones (the cache)."""
    cls = CLASSES[algo]
    torch.manual_seed(0)
    eager = cls(4, 2, [-1.0, -1.0], [1.0, 1.0], hidden=[32, 32])
    fast = cls(4, 2, [-1.0, -1.0], [1.0, 1.0], hidden=[32, 32], compile=True)
    fast.load_state_dict(eager.state_dict())
    fast.configure_model()
    fast.configure_model()  # a second trainer call does not wrap twice
    assert all(name in vars(fast) for name in cls.compiled_losses)
    assert not any(name in vars(eager) for name in cls.compiled_losses)
    for call in range(3):
        batch = _batch()
        for name in cls.compiled_losses:
            grads = []
            for m in (eager, fast):
                m.zero_grad(set_to_none=True)
                if name == "actor_loss":  # as the update calls it: the critic frozen
                    m.critic.requires_grad_(False)
                torch.manual_seed(call)
                loss, info = getattr(m, name)(batch)
                loss.backward()
                m.requires_grad_(True)
                grads.append((loss, info, {k: p.grad for k, p in m.named_parameters()}))
            (le, ie, ge), (lf, if_, gf) = grads
            torch.testing.assert_close(lf, le, rtol=1e-5, atol=1e-5)
            assert ie.keys() == if_.keys()
            for k in ie:
                torch.testing.assert_close(if_[k], ie[k], rtol=1e-5, atol=1e-5)
            assert ge.keys() == gf.keys()
            for k in ge:
                if ge[k] is None:
                    assert gf[k] is None, k
                else:
                    torch.testing.assert_close(gf[k], ge[k], rtol=1e-5, atol=1e-5, msg=k)


def test_compiled_fit_ends_at_the_eager_weights(tiny_root, tmp_path, eager_random):
    """``lit-itpo fit ... --model.init_args.compile true`` (ReBRAC, 20 updates through the
    Trainer: optimisers, delayed actor, target updates) ends within 1e-5 of the eager run."""
    states = []
    for compile_ in ("false", "true"):
        args = cli_args(
            "fit",
            "conf/embedded/rebrac.yaml",
            tiny_root[0],
            tmp_path / compile_,
            20,
            "--model.init_args.hidden",
            "[32, 32]",
            "--trainer.callbacks",
            "[]",
            "--model.init_args.compile",
            compile_,
        )
        cli = lightning_main(args)
        assert cli.trainer.global_step == 20
        assert ("critic_loss" in vars(cli.model)) == (compile_ == "true")
        states.append(cli.model.state_dict())
    eager, fast = states
    for k in eager:
        torch.testing.assert_close(fast[k], eager[k], rtol=1e-5, atol=1e-5, msg=k)


def test_compile_without_a_cxx_compiler_is_one_clear_error(monkeypatch):
    """Training asks for the compiler by name; validating a checkpoint trained with
    ``compile: true`` (its hparams come back) neither compiles nor needs one."""
    from types import SimpleNamespace

    monkeypatch.setattr("shutil.which", lambda name: None)
    m = ReBRACModule(4, 2, [-1.0, -1.0], [1.0, 1.0], hidden=[8], compile=True)
    with pytest.raises(ConfigError, match="model.compile=true needs a C\\+\\+ compiler"):
        m.configure_model()
    m._trainer = SimpleNamespace(state=SimpleNamespace(fn="validate"))
    m.configure_model()
    assert "critic_loss" not in vars(m)
