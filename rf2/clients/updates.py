"""What the selected clients send back: their model updates, in batched form.

An update is ``Δ_i = θ_i - θ`` (local model after training minus the broadcast model).

* ``dense``: every non-embedding parameter, stacked over clients: ``[C, *shape]``;
* ``tables``: every embedding table as :class:`TableRows`, the rows each client *touched* (indexed
  by its data) with their updates, stored CSR-style over clients. Every other row of a client's
  update is exactly zero, so nothing is lost; an optimisation that changes zeros (quantisation)
  must account for the untouched rows itself, and :meth:`TableRows.untouched` tells how many
  there are.
* a table's :class:`Background` (optional) replaces those exact zeros by what an encoding made
  of them;
* ``masks``: optional ``[C, *shape]`` boolean masks of the entries each client *holds* (a client
  training a sub-model, e.g. Channel, holds only part of a tensor); ``None`` means all.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch


@dataclass
class Background:
    """The value of every entry a client did *not* touch, when it is not an exact zero.

    A client's untouched entries are i.i.d. ``low + step * Bernoulli(p_up)`` (what stochastic
    rounding does to a zero, :mod:`optimizations.compression`). The aggregator adds their sum;
    see :func:`rf2.aggregation.background_sum` for how (``mode``: exact sampling, or a Gaussian
    with the exact mean and variance when ``clients x table size`` exceeds ``budget``).
    """

    low: torch.Tensor  # [C]
    step: torch.Tensor  # [C]
    p_up: torch.Tensor  # [C]
    seeds: list[int]  # per-client seeds for exact sampling
    mode: str = "auto"  # "exact" | "gaussian" | "auto"
    budget: int = 50_000_000  # auto: exact when clients * table entries <= budget

    def select(self, idx: torch.Tensor) -> "Background":
        i = idx.tolist()
        return replace(self, low=self.low[idx], step=self.step[idx], p_up=self.p_up[idx], seeds=[self.seeds[j] for j in i])


@dataclass
class TableRows:
    ptr: torch.Tensor  # [C + 1] int64: client c's rows are rows[ptr[c]:ptr[c+1]]
    rows: torch.Tensor  # [R] int64 global row ids, ascending within each client
    values: torch.Tensor  # [R, D]
    n_rows: int  # rows in the whole table
    background: Background | None = None  # untouched entries: exact zeros unless set

    @property
    def n_clients(self) -> int:
        return self.ptr.numel() - 1

    def counts(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def client_of_row(self) -> torch.Tensor:
        """``[R]`` client position of every stored row."""
        return torch.repeat_interleave(torch.arange(self.n_clients), self.counts())

    def untouched(self) -> torch.Tensor:
        """``[C]`` number of rows each client did not touch (their update is exactly zero)."""
        return self.n_rows - self.counts()

    def to_dense(self, client: int) -> torch.Tensor:
        out = torch.zeros(self.n_rows, self.values.shape[1], dtype=self.values.dtype)
        a, b = int(self.ptr[client]), int(self.ptr[client + 1])
        out[self.rows[a:b]] = self.values[a:b]
        return out

    def with_values(self, values: torch.Tensor) -> "TableRows":
        return replace(self, values=values)


@dataclass
class ClientUpdates:
    contexts: Sequence  # one optimizations.ClientContext per client, in order
    weights: torch.Tensor  # [C] FedAvg weights (training sample counts)
    dense: dict[str, torch.Tensor]
    tables: dict[str, TableRows]
    masks: dict[str, torch.Tensor] | None = None
    loss: torch.Tensor | None = None  # [C] each client's mean batch loss (each batch before its first step)
    epochs_run: torch.Tensor | None = None  # [C] local epochs each client trained (< planned after an early stop)
    epochs_kept: torch.Tensor | None = None  # [C] with a validation hold-out: the epoch whose parameters it returns
    valid_loss: torch.Tensor | None = None  # [C] with a validation hold-out: that epoch's validation loss (nan: none held out)
    extra: dict = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # every parameter's shape
    summed: dict | None = None  # the FedAvg aggregate, when computed directly (dense/tables then empty)

    def __post_init__(self) -> None:
        if not self.shapes:
            self.shapes = {k: tuple(v.shape[1:]) for k, v in self.dense.items()}
            self.shapes.update({k: (t.n_rows, t.values.shape[1]) for k, t in self.tables.items()})

    @property
    def n_clients(self) -> int:
        return int(self.weights.numel())

    def entry_counts(self) -> torch.Tensor:
        """``[C]`` entries of each client's full update (every parameter, every table row), counting
        only the entries the client holds (``masks``)."""
        C = self.n_clients
        n = torch.zeros(C, dtype=torch.float64)
        for k, shape in self.shapes.items():
            if self.masks is not None and k in self.masks:
                n += self.masks[k].reshape(C, -1).sum(1).to(torch.float64)
            else:
                n += float(torch.Size(shape).numel())
        return n

    def client_dense(self, client: int) -> dict[str, torch.Tensor]:
        """One client's full update (tables densified): for tests and small-scale inspection."""
        out = {k: v[client] for k, v in self.dense.items()}
        out.update({k: t.to_dense(client) for k, t in self.tables.items()})
        return out

    def split_private(self, names) -> tuple["ClientUpdates", dict[str, torch.Tensor], dict[str, TableRows]]:
        """Remove client-private parameters (never uploaded, never averaged): returns the public
        updates and the private ones (dense ``[C, *shape]`` and tables), for the client to keep."""
        names = set(names)
        if not names:
            return self, {}, {}
        if self.summed is not None:
            raise ValueError("summed updates hold no per-client private parameters")
        dense = {k: v for k, v in self.dense.items() if k in names}
        tables = {k: t for k, t in self.tables.items() if k in names}
        public = replace(
            self,
            dense={k: v for k, v in self.dense.items() if k not in names},
            tables={k: t for k, t in self.tables.items() if k not in names},
            masks=None if self.masks is None else {k: v for k, v in self.masks.items() if k not in names},
            shapes={k: v for k, v in self.shapes.items() if k not in names},
        )
        return public, dense, tables

    def select(self, keep: torch.Tensor) -> "ClientUpdates":
        """The updates of the clients where ``keep`` (bool ``[C]``) is true."""
        if self.summed is not None:
            raise ValueError("these updates were summed by the engine; per-client updates are not available")
        keep = keep.to(torch.bool)
        idx = torch.nonzero(keep).flatten()
        tables = {}
        for name, t in self.tables.items():
            counts = t.counts()[idx]
            row_keep = torch.repeat_interleave(keep, t.counts())
            tables[name] = TableRows(
                ptr=torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
                rows=t.rows[row_keep], values=t.values[row_keep], n_rows=t.n_rows,
                background=None if t.background is None else t.background.select(idx),
            )
        return ClientUpdates(
            contexts=[self.contexts[i] for i in idx.tolist()],
            weights=self.weights[idx],
            dense={k: v[idx] for k, v in self.dense.items()},
            tables=tables,
            masks=None if self.masks is None else {k: v[idx] for k, v in self.masks.items()},
            loss=None if self.loss is None else self.loss[idx],
            epochs_run=None if self.epochs_run is None else self.epochs_run[idx],
            epochs_kept=None if self.epochs_kept is None else self.epochs_kept[idx],
            valid_loss=None if self.valid_loss is None else self.valid_loss[idx],
            extra=dict(self.extra),
            shapes=dict(self.shapes),
        )
