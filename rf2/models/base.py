"""What the simulator needs from a recommendation model.

A model is an ``nn.Module`` whose ``forward(X)`` maps deepctr-torch-style input rows (see
:mod:`rf2.data.encoding`) to click *logits* of shape ``[B]``, and which says

* which of its parameters are embedding tables (``embedding_tables()``: parameter name -> table
  name), because a client's update of a table touches only the rows its data indexes, and the
  simulator keeps those updates sparse;
* which of its parameters form hidden layers (``hidden_layers()``), for width-reducing
  optimisations such as Channel.

Models are built with :func:`rf2.models.build_model` under a forked torch RNG seeded from the run's
seed, so construction never changes global RNG state and the same seed gives the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from rf2._deepctr import inputs as dc_inputs
from rf2.data.schema import DenseFeature, Schema, SequenceFeature, SparseFeature


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden layer of width ``width``: ``out_params`` have the layer's units on axis 0 (weight
    rows, bias); ``in_params`` are the next layer's weights, with these units on axis 1."""

    name: str
    width: int
    out_params: tuple[str, ...]
    in_params: tuple[str, ...]
    first: bool = False  # reads the model's input features directly


class RecModel(nn.Module):
    schema: Schema
    #: every embedding table is read only at the rows its input columns index (``tables[t](X[:, cols])``,
    #: no whole-table term): the summed engine may then train on the rows a round touches alone
    #: (:meth:`rf2.clients.batched.BatchedEngine.summed_update`)
    tables_read_by_index_only: bool = False

    def embedding_tables(self) -> dict[str, str]:
        """Parameter name -> embedding table name, for every embedding table."""
        return {f"embedding_dict.{t}.weight": t for t in self.schema.tables()}

    def hidden_layers(self) -> list[HiddenLayer]:
        return []

    def private_parameters(self) -> set[str]:
        """Parameters that stay on their client (HeteFedRec §III: e.g. the user embedding): never
        uploaded, compressed or averaged; each client keeps its own value across rounds.

        * an **embedding table** listed here is *client-keyed*: row ``r`` belongs to the one client
          whose data indexes it (e.g. a ``user_id`` table), so the global table simply stores every
          client's private row, and a client's trained rows are written back as they are;
        * any other (dense) parameter is stored per client, starting from the initial value.
        """
        return set()


def deepctr_columns(schema: Schema, embedding_dim: int) -> list:
    """Our schema as deepctr-torch feature columns (same names and order)."""
    cols = []
    for f in schema.features:
        if isinstance(f, SparseFeature):
            cols.append(dc_inputs.SparseFeat(f.name, f.vocab_size, embedding_dim, embedding_name=f.table))
        elif isinstance(f, SequenceFeature):
            sf = dc_inputs.SparseFeat(f.name, f.vocab_size, embedding_dim, embedding_name=f.table)
            cols.append(dc_inputs.VarLenSparseFeat(sf, f.maxlen, f.combiner, f.length_name))
        elif isinstance(f, DenseFeature):
            cols.append(dc_inputs.DenseFeat(f.name, f.dim))
    return cols


def pooled_embeddings(X: torch.Tensor, schema: Schema, tables: nn.ModuleDict) -> list[torch.Tensor]:
    """One ``[B, 1, D]`` vector per sparse or sequence feature, in schema order; sequences are
    pooled over their non-zero (non-padding) entries with the feature's combiner.

    ``sum``/``mean`` sequences of a plain ``nn.Embedding`` are pooled with ``embedding_bag`` over
    the non-padding entries only (:func:`_bag_pool`): the ``[B, maxlen, D]`` gathered vectors are
    never built, which makes forward + backward ~4x faster for 50-long click histories
    (benchmarks/README.md, issue 15). Equal to :func:`_masked_pool`, the reference, to float
    rounding (the sums are taken in another order; tested); inside a ``torch.func`` transform
    (``vmap`` over per-client inputs or tables: ``embedding_bag`` has no batching rule) the
    reference is used."""
    out = []
    for f in schema.features:
        if isinstance(f, DenseFeature):
            continue
        start, end = schema.columns[f.name]
        idx = X[:, start:end].long()
        table = tables[f.table]
        if isinstance(f, SparseFeature):
            out.append(table(idx))  # [B, 1, D]
        elif f.combiner in ("sum", "mean") and _plain(table) and not _under_transform():
            out.append(_bag_pool(idx, table.weight, f.combiner))
        else:
            out.append(_masked_pool(table(idx), idx, f.combiner))
    return out


def _masked_pool(emb: torch.Tensor, idx: torch.Tensor, combiner: str) -> torch.Tensor:
    """``[B, 1, D]`` pooling of ``emb [B, L, D]`` over the entries whose ``idx`` is not 0."""
    mask = (idx != 0).unsqueeze(-1).to(emb.dtype)
    if combiner == "max":
        pooled = (emb - (1 - mask) * 1e9).amax(dim=1, keepdim=True)
        return pooled * (mask.sum(dim=1, keepdim=True) > 0)
    pooled = (emb * mask).sum(dim=1, keepdim=True)
    if combiner == "mean":
        pooled = pooled / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    return pooled


def _bag_pool(idx: torch.Tensor, weight: torch.Tensor, combiner: str) -> torch.Tensor:
    """:func:`_masked_pool` (``sum`` or ``mean``) of ``weight[idx]`` with one ``embedding_bag``
    over the non-zero entries; a row without any is 0, as there."""
    keep = idx != 0
    counts = keep.sum(dim=1)
    offsets = torch.zeros_like(counts)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    pooled = torch.nn.functional.embedding_bag(idx[keep], weight, offsets, mode="sum")
    if combiner == "mean":
        pooled = pooled / counts.unsqueeze(1).to(pooled.dtype).clamp_min(1.0)
    return pooled.unsqueeze(1)


def _plain(table: nn.Module) -> bool:
    return (type(table) is nn.Embedding and table.padding_idx is None and table.max_norm is None
            and not table.sparse)


def _under_transform() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``) is running: then tensors may be
    per-client (batched) wrappers, for which ``embedding_bag`` has no batching rule. Uses
    functorch's interpreter stack when this torch has it (else assume so: the reference path)."""
    depth = getattr(getattr(torch._C, "_functorch", None), "get_dynamic_layer_stack_depth", None)
    return True if depth is None else depth() > 0


def pooled_embeddings_of(X: torch.Tensor, schema: Schema, tables: nn.ModuleDict, features) -> list[torch.Tensor]:
    """:func:`pooled_embeddings` for some of the schema's features only (``features``, in their
    order; dense features are skipped), e.g. every feature but the click history, which DIN pools
    with attention instead."""
    view = SimpleNamespace(features=tuple(features), columns=schema.columns)
    return pooled_embeddings(X, view, tables)


def dense_inputs(X: torch.Tensor, schema: Schema) -> torch.Tensor | None:
    cols = [X[:, slice(*schema.columns[f.name])] for f in schema.dense]
    return torch.cat(cols, dim=1) if cols else None
