"""The model every client trains: a name -> builder registry.

``build_model(name, schema, seed, **options)`` builds under a forked torch RNG seeded with
``seed``, so the global RNG is untouched and equal seeds give equal initial weights.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from rf2.data.schema import Schema

from .base import HiddenLayer, RecModel
from .din import DIN
from .dlrm import DLRM
from .ncf import NCF
from .zoo import ZOO

MODELS: dict[str, Callable[..., RecModel]] = {}


def register_model(name: str, builder: Callable[..., RecModel]) -> None:
    MODELS[name] = builder


register_model("dlrm", DLRM)
register_model("ncf", NCF)
from .hetencf import HeteNCF; register_model("hetencf", HeteNCF)  # noqa: E402,E702  HeteFedRec (optimizations.hetefedrec)
register_model("din", DIN)
from .fcf import FCF; register_model("fcf", FCF)  # noqa: E402,E702  FedEM's backbone (optimizations.fedem)
from .lightgcn import HeteLightGCN, LightGCN; register_model("lightgcn", LightGCN); register_model("hetelightgcn", HeteLightGCN)  # noqa: E402,E702  Fed-LightGCN (HeteFedRec)
for _name, _cls in ZOO.items():  # deepctr-torch models (rf2.models.zoo)
    register_model(_name, _cls)


def model_options(name: str) -> dict[str, object]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    params = list(inspect.signature(MODELS[name]).parameters.values())[1:]  # skip schema
    return {p.name: p.default for p in params}


def build_model(name: str, schema: Schema, seed: int = 0, **options) -> RecModel:
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](schema, **options)
    return model


__all__ = ["MODELS", "HiddenLayer", "RecModel", "build_model", "model_options", "register_model"]
