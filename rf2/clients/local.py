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
  test on each epoch's own mean batch loss (``fedem-method.md`` §7 item 6); ``none`` never stops;
* a **validation hold-out** (``valid_fraction``, HeteFedRec §V-A: "when a client is selected for
  training, 10% of its training data will be used as the validation set to guide the local
  training"; the paper does not say how it guides it, so this is rf2's rule):

  - *what is held out*: each round, ``k = ⌊valid_fraction · n⌋`` (:meth:`LocalTraining.n_valid`)
    of the client's ``n`` round samples, a uniform draw without replacement from its own stream
    (:func:`valid_split`: the client's per-round seed, purpose ``"local_valid"``). The samples are
    whatever the round gives the client: its training events, or with ``train_negatives`` its
    positives *and* that round's freshly drawn negatives, so negatives are held out too (no
    stratification: about 1:4 in expectation, not exactly). Held-out samples are in no batch of
    the round: they contribute no gradient. The rest (``n - k``, in data order) is what the
    epochs, batches and shuffles above run over. ``k = 0`` (fewer than ``1 / valid_fraction``
    samples): nothing is held out and the client trains all its epochs;
  - *the rule* (patience 1): after each epoch ``e = 1, 2, ...`` the client computes its
    validation loss ``V_e``, its training loss function (mean BCE, or the model's own
    ``client_loss`` with the same per-client arguments) on all held-out samples at once, with the
    parameters it has after the epoch, without a step. If ``e >= 2`` and ``V_e >= V_(e-1)`` it stops
    and returns the parameters it had after epoch ``e - 1``; otherwise it goes on, and after the
    last epoch returns its last parameters. As ``V_1 > V_2 > ... > V_(e-1)`` up to a stop, the
    returned parameters are those of the trained epoch with the lowest validation loss; epoch 1
    is always kept (the broadcast model is never returned as is);
  - *reported*: ``epochs_run`` = epochs trained (``e``, for the system model's compute time; the
    held-out samples are charged like trained ones), ``epochs_kept`` = the epoch returned,
    ``valid_loss`` = its ``V``; the FedAvg weight stays the client's full sample count ``n``.

  It replaces the training-loss rules: ``valid_fraction > 0`` needs ``early_stop = "none"``.

A batch's loss for these rules and for the round's reported training loss is its loss at its
first step (before the step), as the authors log it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rf2.seeding import numpy_rng

EARLY_STOP = ("none", "cumulative_mean", "per_epoch")


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 1  # passes over the client's data per round
    batch_size: int = 0  # samples per batch; 0 = the whole data as one batch
    steps: int = 1  # optimiser steps on each batch (RF²'s local_steps)
    early_stop: str = "none"  # none | cumulative_mean (FedEM) | per_epoch
    threshold: float = 1e-4  # early stop when the relative loss change is below this
    valid_fraction: float = 0.0  # share of the round's samples held out to pick the epoch (HeteFedRec §V-A: 0.1)

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
        v = self.valid_fraction
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
            raise ValueError(f"local training: valid_fraction must be a number in [0, 1) (HeteFedRec: 0.1), got {v!r}")
        if v > 0 and self.early_stop != "none":
            raise ValueError(f"local training: valid_fraction = {v} stops on the validation loss and early_stop = "
                             f"{self.early_stop!r} on the training loss; choose one (early_stop = 'none' or valid_fraction = 0)")

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
        """One full-batch step on all the data and nothing else: the engines' one-pass shortcuts apply."""
        return self.epochs == 1 and self.full_batch and self.steps == 1 and self.valid_fraction == 0

    def n_valid(self, n: np.ndarray | int) -> np.ndarray:
        """Samples held out for validation by clients with ``n`` samples: ``⌊valid_fraction · n⌋``
        (to 1e-9, so that e.g. ``0.29 · 100`` gives 29)."""
        n = np.asarray(n, dtype=np.int64)
        if not self.valid_fraction:
            return np.zeros_like(n)
        return np.floor(self.valid_fraction * n + 1e-9).astype(np.int64)

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


def valid_split(local: LocalTraining, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, valid)``: one client's positions (``0..n-1``, ascending) trained on this round
    and held out for validation (module docstring); with nothing held out, ``(arange(n), [])``."""
    k = int(local.n_valid(n))
    if k == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    perm = numpy_rng(seed, "local_valid").permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def should_stop(local: LocalTraining, epoch_means: list[float], cumulative: list[float]) -> bool:
    """Whether a client stops after its latest epoch. ``epoch_means[e]``: mean batch loss of epoch
    ``e``; ``cumulative[e]``: mean of all batch losses up to and including epoch ``e``."""
    if local.early_stop == "none" or len(epoch_means) < 2:
        return False
    series = cumulative if local.early_stop == "cumulative_mean" else epoch_means
    prev, cur = series[-2], series[-1]
    return abs(cur - prev) / abs(prev + 1e-5) < local.threshold


class EpochLosses:
    """The batch-loss bookkeeping of a bucket of clients training in lock-step (the batched
    engines): per client the running sum of counted batch losses, this epoch's sum, the epochs
    completed, and :func:`should_stop`'s test vectorised over clients (same numbers, in double)."""

    def __init__(self, n_clients: int, local: LocalTraining):
        z = lambda: torch.zeros(n_clients, dtype=torch.float64)  # noqa: E731
        self.local = local
        self.seen_sum, self.seen_n, self.epoch_sum, self.epoch_n = z(), z(), z(), z()
        self.prev = z()  # the previous epoch's value of the early-stop series
        self.done = torch.zeros(n_clients, dtype=torch.long)  # epochs completed

    def add(self, value: torch.Tensor, active: torch.Tensor) -> None:
        """Count a batch's loss ``value`` for the first ``len(active)`` clients where ``active``."""
        k = active.numel()
        v = torch.where(active, value.detach().to(torch.float64), 0.0)
        n = active.to(torch.float64)
        self.seen_sum[:k] += v
        self.seen_n[:k] += n
        self.epoch_sum[:k] += v
        self.epoch_n[:k] += n

    def early_stops(self, ends: torch.Tensor) -> torch.Tensor:
        """The clients that stop after the epoch they end now (``ends``), by the early-stop rule
        (none before their second epoch). Call before :meth:`close_epochs`."""
        if self.local.early_stop == "none":
            return torch.zeros_like(ends)
        if self.local.early_stop == "per_epoch":
            cur = self.epoch_sum / self.epoch_n.clamp_min(1)
        else:
            cur = self.mean()
        rel = (cur - self.prev).abs() / (self.prev + 1e-5).abs()
        stop = ends & (self.done > 0) & (rel < self.local.threshold)
        self.prev = torch.where(ends, cur, self.prev)
        return stop

    def close_epochs(self, ends: torch.Tensor) -> None:
        self.done += ends.long()
        self.epoch_sum = torch.where(ends, 0.0, self.epoch_sum)
        self.epoch_n = torch.where(ends, 0.0, self.epoch_n)

    def mean(self) -> torch.Tensor:
        """Each client's mean counted batch loss (0 for a client with none)."""
        return self.seen_sum / self.seen_n.clamp_min(1)
