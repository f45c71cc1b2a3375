"""Who trains: Exclude Lo and Overselect (RF² §2.2.3, Table 1).

**Exclude Lo** — low-end devices never train (Gboard's rule of thumb, RF² [13]): they are left
out of the client pool, so every round still has ``K`` participants, all mid/high-end, and an
epoch is one pass over the mid/high-end clients. They are still *evaluated*.

**Overselect** — the server selects ``K + ceil(f·K)`` candidates (Bonawitz et al.; RF² [41]) and
keeps the ``K`` that finish first according to the system model (:mod:`rf2.system`: compute time
from the device's Gaussian speed, plus upload time of the full update), dropping the slowest
``f/(1+f)`` of them. Dropped clients count as selected for the epoch: their work is wasted, as on
a real deployment. Low-end devices, slower and on slower links, are dropped most often.
"""
from __future__ import annotations

import math

import numpy as np

from .base import ClientContext, Optimization


class ExcludeLo(Optimization):
    name = "exclude-lo"

    def eligible(self, tiers: np.ndarray) -> np.ndarray:
        return np.asarray(tiers) != 0


class Overselect(Optimization):
    name = "overselect"

    def __init__(self, spec: str, fraction: float = 0.2):
        if not (0 < fraction <= 10) or not math.isfinite(fraction):
            raise ValueError(f"optimization {spec!r}: the overselection fraction must be in (0, 10], got {fraction}; "
                             f"use overselect:0.2")
        super().__init__(spec)
        self.fraction = fraction

    def selection_size(self, k: int) -> int:
        return k + math.ceil(self.fraction * k)

    def kept(self, n: int) -> int:
        """Of ``n`` candidates keep the ``k`` whose overselection gave them: the largest ``k >= 1``
        with ``selection_size(k) <= n`` (exactly K in a full round; fewer in an epoch's short last one)."""
        keep = max(1, math.floor(n / (1 + self.fraction)))
        while keep > 1 and self.selection_size(keep) > n:
            keep -= 1
        while keep < n and self.selection_size(keep + 1) <= n:
            keep += 1
        return keep

    def participants(self, contexts: list[ClientContext], round_time=None) -> list[ClientContext]:
        if round_time is None:
            raise ValueError("overselect needs the system model to rank candidates by speed")
        n = len(contexts)
        keep = self.kept(n)
        order = np.argsort(np.asarray(round_time(contexts)), kind="stable")[:keep]
        return [contexts[i] for i in sorted(order)]
