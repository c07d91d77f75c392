"""LightningModules: wiring, optimisers, logging. The math lives in ``nets`` and loss functions."""

from lit_itpo.modules.bc import BCModule
from lit_itpo.modules.iql import IQLModule
from lit_itpo.modules.meanflow import MeanFlowModule, load_meanflow
from lit_itpo.modules.policy import POLICIES, load_policy
from lit_itpo.modules.rebrac import ReBRACModule
from lit_itpo.modules.td3bc import TD3BCModule
from lit_itpo.modules.world_model import WorldModelModule, load_world_model

__all__ = [
    "BCModule",
    "IQLModule",
    "MeanFlowModule",
    "POLICIES",
    "ReBRACModule",
    "TD3BCModule",
    "WorldModelModule",
    "load_meanflow",
    "load_policy",
    "load_world_model",
]
