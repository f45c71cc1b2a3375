"""Who trains: Exclude Lo and Overselect (RF² §2.2.3, Table 1).

**Exclude Lo** — low-end devices never train (Gboard's rule of thumb, RF² [13]): they are left
out of the client pool, so every round still has ``K`` participants, all mid/high-end, and an
epoch is one pass over the mid/high-end clients. They are still *evaluated*.

**Overselect** — the server selects ``⌊K(1+f)⌋ = K + ⌊Kf⌋`` candidates (Bonawitz et al.; RF² [41])
and keeps ``K`` of them, dropping ``⌊Kf⌋``. Which ones (``drop=``):

* ``drop=tier`` (default, the RF² authors' simulator): the dropped candidates come from the lowest
  tier first, then the next tier, and so on. Within a tier the choice is a seeded random one: every
  candidate draws a uniform key from its own stream (its ``ClientContext`` seed, derived from the
  run seed, the round and the client id; purpose ``"overselect-drop"``) and the smallest keys are
  dropped, so the choice is uniform within the tier and the same for the same seed.
* ``drop=time`` (rf2 0.1): the candidates that finish last according to the system model
  (:mod:`rf2.system`: compute time from the device's Gaussian speed, plus upload time of the full
  update) are dropped; ties keep the lower position.

``⌊Kf⌋`` is computed on the decimal value of ``f`` (``0.29 · 100 = 29``, not 28.999…). Dropped
clients count as selected for the epoch: their work is wasted, as on a real deployment. In an
epoch's short last round of ``n`` candidates, the largest ``k`` with ``k + ⌊kf⌋ <= n`` are kept.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .base import ClientContext, Optimization


class ExcludeLo(Optimization):
    name = "exclude-lo"

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        return f"{tier_names[0]} tier never trains"

    def eligible(self, tiers: np.ndarray) -> np.ndarray:
        return np.asarray(tiers) != 0


#: which candidates Overselect drops: "tier" (lowest tier first; default) or "time" (the slowest; rf2 0.1)
OVERSELECT_DROP = ("tier", "time")


class Overselect(Optimization):
    name = "overselect"

    def __init__(self, spec: str, fraction: float = 0.2, drop: str = "tier"):
        if not (0 < fraction <= 10) or not math.isfinite(fraction):
            raise ValueError(f"optimization {spec!r}: the overselection fraction must be in (0, 10], got {fraction}; "
                             f"use overselect:0.2")
        if drop not in OVERSELECT_DROP:
            raise ValueError(f"optimization {spec!r}: option drop must be one of {list(OVERSELECT_DROP)}, got {drop!r}; "
                             f"use overselect:0.2 or overselect:0.2:drop=time")
        super().__init__(spec)
        self.fraction = fraction
        self.drop = drop
        self._exact = Fraction(repr(float(fraction)))  # the decimal the spec wrote: floor(k * 0.29) exact

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        dropped = f"{tier_names[0]} tier first" if self.drop == "tier" else "slowest first"
        return f"select ⌊{1 + self.fraction:g}K⌋, drop ⌊{self.fraction:g}K⌋ ({dropped})"

    def extra(self, k: int) -> int:
        """``⌊k·f⌋``: how many more candidates than ``k`` are drawn, and how many are dropped."""
        return math.floor(k * self._exact)

    def selection_size(self, k: int) -> int:
        return k + self.extra(k)

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
        n = len(contexts)
        n_drop = n - self.kept(n)
        if n_drop <= 0:
            return list(contexts)
        if self.drop == "time":
            if round_time is None:
                raise ValueError("overselect:...:drop=time needs the system model to rank candidates by speed")
            order = np.argsort(np.asarray(round_time(contexts)), kind="stable")  # fastest first
            dropped = set(order[n - n_drop:].tolist())
        else:
            key = np.array([ctx.rng("overselect-drop").random() for ctx in contexts])
            tier = np.array([ctx.tier for ctx in contexts])
            order = np.lexsort((key, tier))  # lowest tier first; within a tier, by the seeded key
            dropped = set(order[:n_drop].tolist())
        return [c for i, c in enumerate(contexts) if i not in dropped]
