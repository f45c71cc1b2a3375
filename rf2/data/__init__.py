"""Datasets: each client's interaction log, in one canonical structure.

``load_dataset(name, **options)`` is the only entry point the simulator uses; a dataset is a
named loader registered in :data:`DATASETS` (add one with :func:`register_dataset`).
"""
from __future__ import annotations

import inspect
from typing import Callable

from .dataset import DataFormatError, InteractionDataset
from .encoding import FeatureEncoder
from .fetch import ChecksumError, DataNotFoundError
from .movielens import load_ml100k
from .movielens_1m import load_ml1m, load_ml1m_implicit
from .movielens_20m import load_ml20m, load_ml25m
from .schema import DenseFeature, Schema, SequenceFeature, SparseFeature
from .synthetic import make_synthetic
from .taobao import load_taobao

DATASETS: dict[str, Callable[..., InteractionDataset]] = {}


def register_dataset(name: str, loader: Callable[..., InteractionDataset]) -> None:
    DATASETS[name] = loader


register_dataset("ml-100k", load_ml100k)
register_dataset("synthetic", make_synthetic)
register_dataset("ml-1m", load_ml1m)
register_dataset("ml-1m-implicit", load_ml1m_implicit)
register_dataset("ml-20m", load_ml20m)
register_dataset("ml-25m", load_ml25m)
register_dataset("taobao", load_taobao)


def implicit_feedback(name: str) -> bool:
    """Whether dataset ``name`` is implicit feedback whose non-clicks are *sampled* negatives, not
    interactions (a loader attribute ``implicit_feedback = True``; ``ml-1m-implicit``). Used to
    resolve ``ranking_exclude = "auto"`` (:attr:`rf2.config.RunConfig.ranking_exclusion`) without
    loading the data."""
    return bool(getattr(_loader(name), "implicit_feedback", False))


def dataset_options(name: str) -> dict[str, object]:
    """The options a dataset's loader accepts, with their defaults."""
    loader = _loader(name)
    return {p.name: p.default for p in inspect.signature(loader).parameters.values()}


def _loader(name: str) -> Callable[..., InteractionDataset]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, **options) -> InteractionDataset:
    loader = _loader(name)
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"dataset {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}")
    return loader(**options)


__all__ = [
    "DATASETS", "ChecksumError", "DataFormatError", "DataNotFoundError", "DenseFeature", "FeatureEncoder",
    "InteractionDataset", "Schema", "SequenceFeature", "SparseFeature", "dataset_options", "implicit_feedback", "load_dataset",
    "register_dataset",
]
