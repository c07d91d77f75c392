"""Loading any policy stage's checkpoint (ReBRAC, TD3+BC, IQL, BC) for ITPO, the tilt and the
evaluation: each module exposes :meth:`policy_parts` (:class:`lit_itpo.itpo.PolicyParts`)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from lit_itpo.errors import CheckpointError
from lit_itpo.modules.bc import BCModule
from lit_itpo.modules.checkpoints import load_stage, read_hparams
from lit_itpo.modules.iql import IQLModule
from lit_itpo.modules.rebrac import ReBRACModule
from lit_itpo.modules.td3bc import TD3BCModule

STAGE = "policy"
POLICIES = {cls.__name__: cls for cls in (ReBRACModule, TD3BCModule, IQLModule, BCModule)}


def load_policy(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    dataset_id: str | None = None,
    map_location="cpu",
) -> pl.LightningModule:
    """A frozen, eval-mode policy module of any policy stage from its checkpoint (guards as
    :func:`lit_itpo.modules.checkpoints.check_compatible`, with that class's format)."""
    hp = read_hparams(path)
    cls = POLICIES.get(hp.get("algorithm", ""))
    if cls is None or hp.get("stage") != STAGE:
        raise CheckpointError(
            f"Checkpoint {path} is a '{hp.get('algorithm')}' of stage '{hp.get('stage')}', not a "
            f"policy; pass a checkpoint of one of {sorted(POLICIES)}."
        )
    return load_stage(
        path,
        cls,
        stage=STAGE,
        format_version=cls.format_version,
        obs_dim=obs_dim,
        action_dim=action_dim,
        dataset_id=dataset_id,
        map_location=map_location,
        hparams=hp,
    )
