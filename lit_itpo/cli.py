"""``lit-itpo``: the entry point. ``fit|validate|test`` go to LightningCLI
(:mod:`lit_itpo.lightning_cli`); ``collect`` and ``pipeline`` are not Trainer methods, so
``main`` dispatches them first; they keep the same conventions (``--config`` YAML, omegaconf
interpolation, ``--print_config``).

Every bad input ends in one line ``lit-itpo: error: ...`` and exit status 2. A run stopped by
SIGTERM or SIGINT (Ctrl-C) saves at the end of its current batch and exits 143 or 130 naming
the command that resumes it.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
from collections.abc import Sequence

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_itpo.errors import ConfigError, LitItpoError, StorageError
from lit_itpo.lightning_cli import (  # noqa: F401  (the CLI's public names, re-exported)
    _STOPPED,
    LitItpoCLI,
    RNGState,
    RunCheckpoint,
    check_config_files,
    find_last_checkpoint,
    lightning_main,
    parse_dataclass_command,
    read_checkpoint,
)
from lit_itpo.pipeline import pipeline_main


def collect_main(args: Sequence[str]) -> dict:
    """``lit-itpo collect --config conf/collect/<env>.yaml [--collect.field value ...]``."""
    from lit_itpo.collect.recipes import CollectConfig, collect

    config, ns = parse_dataclass_command(
        "collect",
        CollectConfig,
        "Train a SAC behaviour agent and write D4RL-style Minari datasets.",
        args,
        progress=True,
    )
    results = collect(config, progress=ns.progress)
    for did, s in results.items():
        score = s["normalized_score_mean"]
        sys.stdout.write(
            f"{did}: {s['num_episodes']} episodes, {s['num_steps']} steps, return "
            f"{s['return_mean']:.1f} +- {s['return_std']:.1f}"
            + (f", normalised {score:.1f}\n" if score is not None else "\n")
        )
    return results


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues ``argv`` after a stop: ``fit`` gets ``--ckpt_path last``
    (replacing any other); ``pipeline`` and ``collect`` resume by themselves; ``validate`` /
    ``test`` start again."""
    argv = list(argv)
    if argv and argv[0] == "fit":
        out, skip = [], False
        for a in argv:
            if skip:
                skip = False
            elif a == "--ckpt_path":
                skip = True
            elif not a.startswith("--ckpt_path="):
                out.append(a)
        argv = [*out, "--ckpt_path", "last"]
    return shlex.join(["lit-itpo", *argv])


USAGE = """usage: lit-itpo {fit,validate,test,collect,pipeline} [options]

  fit, validate, test  one stage with LightningCLI (`lit-itpo fit --help`), e.g.
                       lit-itpo fit --config conf/embedded/rebrac.yaml
  collect              train a behaviour agent, write D4RL-style Minari datasets
                       (`lit-itpo collect --help`)
  pipeline             every stage for one dataset, then ITPO against the base policy on
                       the same episodes (`lit-itpo pipeline --help`)
"""


COMMANDS = ("fit", "validate", "test", "collect", "pipeline")  # the project's subcommands


def check_command(word: str) -> None:
    """``word`` is a subcommand (LightningCLI's ``predict`` included: refused with its own
    line); else a :class:`ConfigError` naming the project's commands and the nearest one."""
    import difflib

    if word.startswith("-") or word in (*COMMANDS, "predict"):
        return
    near = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.5)
    meant = f" (did you mean {near[0]}?)" if near else ""
    raise ConfigError(
        f"unknown command '{word}'{meant}; use one of {', '.join(COMMANDS)} (`lit-itpo --help`)."
    )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in ([], ["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _STOPPED.clear()
    try:
        if argv:
            check_command(argv[0])
        if argv and argv[0] == "collect":
            collect_main(argv[1:])
        elif argv and argv[0] == "pipeline":
            pipeline_main(argv[1:])
        else:
            lightning_main(argv)
    except StorageError as exc:  # a full disk: what was saved before is whole, so it resumes
        sys.stderr.write(f"lit-itpo: error: {exc}; then resume with: {resume_command(argv)}\n")
        raise SystemExit(2) from None
    except LitItpoError as exc:
        sys.stderr.write(f"lit-itpo: error: {exc}\n")
        raise SystemExit(2) from None
    except MisconfigurationException as exc:  # a trainer value Lightning rejects at run time
        msg = " ".join(str(exc).split()).rstrip(".")
        sys.stderr.write(f"lit-itpo: error: {msg}; fix that value in the config or command.\n")
        raise SystemExit(2) from None
    except (SIGTERMException, KeyboardInterrupt) as exc:
        # Lightning exits with status 0 on SIGTERM and 1 on Ctrl-C; a stopped run is not done
        name = _STOPPED.get("signal") or (
            "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
        )
        saved = (
            f" at step {_STOPPED['step']} (saved {_STOPPED['ckpt']})"
            if _STOPPED.get("ckpt")
            else ""
        )
        how = (
            "rerun the same command to evaluate again"
            if argv and argv[0] in ("validate", "test")
            else "resume with"
        )
        sys.stderr.write(
            f"lit-itpo: error: stopped by {name}{saved}; {how}: {resume_command(argv)}\n"
        )
        raise SystemExit(128 + signal.Signals[name]) from None


if __name__ == "__main__":
    main()
