"""Shared fixtures. Real data: ``RF2_DATA_DIR`` (CI points it at ../shared/data) or the recbole copy."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from rf2.data import load_dataset, make_synthetic


def grouplens_dir(name: str) -> Path | None:
    root = os.environ.get("RF2_DATA_DIR")
    if not root:
        return None
    p = Path(root) / name
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def ml100k_files() -> Path:
    p = grouplens_dir("ml-100k")
    if p is None:
        pytest.skip("needs the original GroupLens MovieLens-100K files: set RF2_DATA_DIR (CI: ../shared/data)")
    return p


@pytest.fixture(scope="session")
def ml100k():
    return load_dataset("ml-100k")


@pytest.fixture(scope="session")
def synth():
    return make_synthetic(n_users=300, n_items=200, events_per_user=20, history_maxlen=8, seed=3)
