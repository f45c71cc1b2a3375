"""How a client trains in a round: epochs, mini-batches, steps, early stopping.

RF² (§4.1) trains every client with one full-batch SGD step per round; FedEM
(``fedem-method.md`` §4.2) takes up to 10 epochs of shuffled mini-batches of 256 with an early
stop, HeteFedRec (§V-D) several local epochs. One :class:`LocalTraining` describes all of them:

* an **epoch** is one pass over the client's samples, in batches of ``batch_size`` (``0``: the
  whole data as one batch, RF²'s default; the last batch of an epoch may be smaller, as with
  ``drop_last = False``);
* on each batch the client takes ``steps`` optimiser steps (RF²'s ``local_steps``; 1 for
  mini-batch protocols) on the batch's **mean** loss;
* with mini-batches the samples are **shuffled every epoch** from the client's own stream
  (:func:`batch_orders`: the client's per-round seed, purpose ``"local_batches"``), so every
  engine sees the same batches in the same order; full batches keep the data order;
* the optimiser state (Adam's moments) runs through all of the client's steps of the round and
  starts afresh next round (:mod:`rf2.clients.optim`);
* **early stopping** (:func:`should_stop`) after each epoch: ``cumulative_mean`` is FedEM's rule
  (``engine.py:146-152``): ``L_e`` = mean of *all* batch losses so far (never reset per epoch), stop
  when ``e > 0`` and ``|L_e - L_{e-1}| / |L_{e-1} + 1e-5| < threshold``; ``per_epoch`` is the same
  test on each epoch's own mean batch loss (``fedem-method.md`` §7 item 6); ``none`` never stops.

A batch's loss for these rules and for the round's reported training loss is its loss at its
first step (before the step), as the authors log it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rf2.seeding import numpy_rng

EARLY_STOP = ("none", "cumulative_mean", "per_epoch")


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 1  # passes over the client's data per round
    batch_size: int = 0  # samples per batch; 0 = the whole data as one batch
    steps: int = 1  # optimiser steps on each batch (RF²'s local_steps)
    early_stop: str = "none"  # none | cumulative_mean (FedEM) | per_epoch
    threshold: float = 1e-4  # early stop when the relative loss change is below this

    def __post_init__(self) -> None:
        for name in ("epochs", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"local training: {name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 0:
            raise ValueError(f"local training: batch_size must be an integer >= 0 (0 = full batch), got {self.batch_size!r}")
        if self.early_stop not in EARLY_STOP:
            raise ValueError(f"local training: early_stop must be one of {EARLY_STOP}, got {self.early_stop!r}")
        if not (isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
                and 0 <= self.threshold < math.inf):
            raise ValueError(f"local training: threshold must be a finite number >= 0, got {self.threshold!r}")

    @classmethod
    def of(cls, local: "LocalTraining | int") -> "LocalTraining":
        """``local`` itself, or an int = that many full-batch steps (the engines' old signature)."""
        if isinstance(local, LocalTraining):
            return local
        return cls(steps=local)

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0

    @property
    def single_step(self) -> bool:
        """One full-batch step and nothing else: the engines' one-pass shortcuts apply."""
        return self.epochs == 1 and self.full_batch and self.steps == 1

    def n_batches(self, n: np.ndarray | int) -> np.ndarray:
        """Batches per epoch of clients with ``n`` samples."""
        n = np.asarray(n, dtype=np.int64)
        return np.ones_like(n) if self.full_batch else -(-n // self.batch_size)

    def total_steps(self, n: np.ndarray | int) -> np.ndarray:
        """Optimiser steps of clients with ``n`` samples when no early stop fires."""
        return self.epochs * self.steps * self.n_batches(n)

    def sample_passes(self) -> int:
        """Times each sample is used in a round without early stopping (the system model's work)."""
        return self.epochs * self.steps


def batch_orders(local: LocalTraining, seed: int, n: int) -> list[np.ndarray]:
    """One client's sample order for each epoch (positions ``0..n-1`` into its data): the data
    order for full batches, a fresh permutation per epoch from the client's stream otherwise."""
    if local.full_batch:
        return [np.arange(n)] * local.epochs
    rng = numpy_rng(seed, "local_batches")
    return [rng.permutation(n) for _ in range(local.epochs)]


def should_stop(local: LocalTraining, epoch_means: list[float], cumulative: list[float]) -> bool:
    """Whether a client stops after its latest epoch. ``epoch_means[e]``: mean batch loss of epoch
    ``e``; ``cumulative[e]``: mean of all batch losses up to and including epoch ``e``."""
    if local.early_stop == "none" or len(epoch_means) < 2:
        return False
    series = cumulative if local.early_stop == "cumulative_mean" else epoch_means
    prev, cur = series[-2], series[-1]
    return abs(cur - prev) / abs(prev + 1e-5) < local.threshold
