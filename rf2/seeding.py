"""Explicit randomness: every stream is derived from the run's seed and a purpose key.

No rf2 code touches numpy's or torch's global RNG. A stream is identified by the run seed plus a
tuple of integers (a purpose tag and, e.g., the round and client id), so the same seed gives the
same results whatever order streams are created in, and a baseline run and an optimised run with
the same seed see the same tiers, the same initial model and the same client selection.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def _tag(purpose: str) -> int:
    return zlib.crc32(purpose.encode())


def seed_sequence(seed: int, purpose: str, *keys: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(_tag(purpose), *map(int, keys)))


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, purpose, *keys))


def int_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit integer seed for libraries that take one."""
    return int(seed_sequence(seed, purpose, *keys).generate_state(2, np.uint32).astype(np.uint64) @ np.array([1 << 31, 1], dtype=np.uint64)) & ((1 << 63) - 1)


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(int_seed(seed, purpose, *keys))
