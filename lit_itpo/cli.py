"""``lit-itpo``: LightningCLI for ``fit|validate|test`` plus our own ``collect`` and ``pipeline``.

``collect`` and ``pipeline`` are not Trainer methods, so ``main`` dispatches them before
LightningCLI sees the arguments; they keep the same conventions (``--config`` YAML, omegaconf
interpolation, ``--print_config``).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_itpo.data.datamodule import MinariDataModule
from lit_itpo.errors import LitItpoError

# Dataset facts every stage takes from the DataModule (``apply_on="instantiate"``: they are read
# from the dataset's metadata when the DataModule is built).
LINKED = ("obs_dim", "action_dim", "action_low", "action_high", "dataset_id")


class LitItpoCLI(LightningCLI):
    """LightningCLI with dataset dims and bounds linked into the model."""

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but our own errors from a class's ``__init__`` (a bad config
        value, a checkpoint of the wrong stage) surface as themselves: jsonargparse wraps them
        in a ValueError listing every subclass it tried."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            cause = exc
            while cause is not None and not isinstance(cause, LitItpoError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None


def lightning_main(args: Sequence[str] | None = None, run: bool = True) -> LitItpoCLI:
    """Run LightningCLI (``fit|validate|test``) on ``args`` (default ``sys.argv[1:]``)."""
    import lit_itpo.modules  # noqa: F401  (registers the model classes for class_path lookup)

    return LitItpoCLI(
        pl.LightningModule,
        MinariDataModule,
        subclass_mode_model=True,
        args=args,
        run=run,
        parser_kwargs={
            "parser_mode": "omegaconf",
            "description": "lit_itpo: fit|validate|test a stage with LightningCLI. "
            "Datasets: `lit-itpo collect --help`; all stages: `lit-itpo pipeline --help`.",
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def parse_dataclass_command(
    name: str, cls: type, description: str, args: Sequence[str], progress: bool = False
):
    """Parse ``lit-itpo <name> [--config F] [--<name>.field value ...]`` into a ``cls``
    instance, with LightningCLI's conventions (omegaconf interpolation, ``--print_config``).
    Returns ``(instance, namespace)``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog=f"lit-itpo {name}", parser_mode="omegaconf", description=description
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(cls, name, as_group=True)
    if progress:
        parser.add_argument("--progress", type=bool, default=True, help="Show progress bars.")
    cfg = parser.parse_args(list(args))
    return parser.instantiate_classes(cfg)[name], cfg


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


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "collect":
            collect_main(argv[1:])
        elif argv and argv[0] == "pipeline":
            from lit_itpo.pipeline import pipeline_main

            pipeline_main(argv[1:])
        else:
            lightning_main(argv)
    except LitItpoError as exc:
        sys.stderr.write(f"lit-itpo: error: {exc}\n")
        raise SystemExit(2) from None
    except SIGTERMException:  # Lightning exits with status 0 on it; a stopped run is not done
        sys.stderr.write(
            "lit-itpo: stopped by SIGTERM; rerun the same command to resume from the last "
            "checkpoint (pipeline: the unfinished stage or ITPO run).\n"
        )
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
