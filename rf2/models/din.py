"""DIN (Zhou et al., 2018, "Deep Interest Network") as configured in RF² §5.1.

* every sparse feature has an embedding of dimension 16; multi-valued features that are *not* a
  click history (e.g. genres) are pooled over their non-padding entries with their combiner, as in
  DLRM;
* **attention over the click history**: each history feature ``hist_<item feature>`` (schema
  source ``"history"``) shares the item feature's embedding table. The candidate item's embedding
  is the *query*, the embeddings of the earlier clicks are the *keys*; with several history
  features their embeddings are concatenated. A local activation unit scores every clicked item
  from ``[q, k, q − k, q ⊙ k]`` with an MLP of two hidden layers (64, 16) using **Dice without
  batch normalisation** (RF² §5.1), then one linear unit. The pooled history vector is the
  score-weighted *sum* of the keys: deepctr-torch's ``AttentionSequencePoolingLayer`` defaults to
  ``weight_normalization=False`` (no softmax, as in the DIN paper), and padding positions (index 0)
  get weight exactly 0, so an empty history pools to the zero vector;
* the attention output, the embeddings of the other features (including the candidate item) and
  the dense features are concatenated and go through a top MLP with one hidden layer of 256 units
  (ReLU) and a linear output unit: the click *logit*.

Built from deepctr-torch's layers (``AttentionSequencePoolingLayer`` with its
``LocalActivationUnit`` and ``DNN``, and ``Dice``). Differences from deepctr-torch's own ``DIN``
model, all needed to train it with ``torch.func`` (``functional_call``, ``vmap(grad(...))``):

* ``Dice``'s ``BatchNorm1d`` is replaced by the identity, i.e. the gate is ``p(s) = sigmoid(s)``
  and ``Dice(s) = p(s)·s + (1 − p(s))·α·s`` with a learnt ``α`` per unit (RF²: "Dice activation
  without batch normalization"). A batch norm would need per-client running statistics (batched
  buffers) under ``vmap`` and would couple the samples of a client's batch;
* the padding mask comes from the history indices (``!= 0``) rather than from the length column,
  so it stays right when the batched engine rewrites indices into per-client local tables (index 0
  stays 0, see :mod:`rf2.clients.batched`); the two agree on left-aligned histories
  (:mod:`rf2.data.history`);
* no dropout and no L2 regularisation (deepctr's ``get_regularization_loss`` reads the module's
  own parameters, not the ones passed to ``functional_call``, so it cannot act in the simulator).

Channel (:mod:`optimizations.channel`) narrows the attention MLP's two hidden layers (64, 16; the
units' Dice ``α`` go with them) and the top MLP's hidden layer (256), see :meth:`DIN.hidden_layers`.
"""
from __future__ import annotations

import torch
from torch import nn

from rf2._deepctr import inputs as dc_inputs
from rf2._deepctr import layers as dc_layers
from rf2.data.schema import DenseFeature, Schema

from .base import HiddenLayer, RecModel, deepctr_columns, dense_inputs, pooled_embeddings_of


class Dice(dc_layers.activation.Dice):
    """deepctr-torch's ``Dice`` (3-d inputs ``[B, T, units]``) without its batch normalisation:
    ``Dice(s) = p(s)·s + (1 − p(s))·α·s`` with ``p(s) = sigmoid(s)``, ``α`` learnt per unit
    (parameter ``alpha`` of shape ``[units, 1]``, initialised to 0 as in deepctr-torch)."""

    def __init__(self, units: int):
        super().__init__(units, dim=3)
        self.bn = nn.Identity()  # drops BatchNorm1d and its parameters and running buffers


class DIN(RecModel):
    tables_read_by_index_only = True
    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 16,  # RF² §5.1
        att_hidden: tuple[int, ...] = (64, 16),  # RF² §5.1: attention MLP, Dice without batch norm
        top_hidden: tuple[int, ...] = (256,),  # RF² §5.1: one hidden layer of 256
        embedding_init_std: float = 0.01,
        mlp_init_std: float | None = None,  # None: PyTorch's default Linear init
    ):
        super().__init__()
        att_hidden, top_hidden = tuple(att_hidden), tuple(top_hidden)
        if embedding_dim < 1:
            raise ValueError(f"din: embedding_dim must be >= 1, got {embedding_dim}")
        if not att_hidden or not top_hidden or min(att_hidden + top_hidden) < 1:
            raise ValueError(
                f"din: att_hidden and top_hidden need at least one layer of >= 1 units "
                f"(RF²: (64, 16) and (256,)), got {att_hidden} and {top_hidden}"
            )
        histories = schema.histories
        if not histories:
            raise ValueError(
                "din: the schema has no click-history feature to attend over (a SequenceFeature with "
                "source 'history' named 'hist_<item feature>'); use a model without attention, e.g. 'dlrm'"
            )
        maxlens = {h.maxlen for h in histories}
        if len(maxlens) > 1:
            raise ValueError(
                f"din: the history features {[h.name for h in histories]} must share one maxlen, got {sorted(maxlens)}"
            )
        self.schema = schema
        self.embedding_dim = embedding_dim
        self.history_features = tuple(histories)
        self.query_features = tuple(schema.feature(h.name.removeprefix("hist_")) for h in histories)
        self.other_features = tuple(
            f for f in schema.features if not isinstance(f, DenseFeature) and f not in self.history_features
        )
        self.embedding_dict = dc_inputs.create_embedding_matrix(deepctr_columns(schema, embedding_dim),
                                                                init_std=embedding_init_std)
        att_dim = embedding_dim * len(histories)
        self.attention = dc_layers.AttentionSequencePoolingLayer(
            att_hidden_units=att_hidden, att_activation="sigmoid", weight_normalization=False,
            return_score=False, supports_masking=True, embedding_dim=att_dim,
        )
        # RF²: Dice without batch norm (deepctr's activation_layer('dice') always adds a BatchNorm1d)
        self.attention.local_att.dnn.activation_layers = nn.ModuleList(Dice(h) for h in att_hidden)
        n_dense = sum(f.dim for f in schema.dense)
        top_in = att_dim + embedding_dim * len(self.other_features) + n_dense
        self.top = dc_layers.DNN(top_in, top_hidden, activation="relu", init_std=mlp_init_std or 0.0)
        self.out = nn.Linear(top_hidden[-1], 1)
        att_linears = list(self.attention.local_att.dnn.linears) + [self.attention.local_att.dense]
        for lin in att_linears:
            if mlp_init_std is None:  # PyTorch default init (deepctr's N(0, 1e-4) starts near-constant)
                lin.reset_parameters()
            else:
                nn.init.normal_(lin.weight, std=mlp_init_std)
        if mlp_init_std is None:
            for lin in self.top.linears:
                lin.reset_parameters()

    # -- pieces ---------------------------------------------------------------------------------
    def attention_inputs(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(query [B, 1, E], keys [B, T, E], mask [B, T])``: the candidate item's embedding(s), the
        clicked items' embeddings (``E = embedding_dim × number of history features``) and which
        history positions are real clicks (non-zero index)."""
        queries, keys, masks = [], [], []
        for h, q in zip(self.history_features, self.query_features):
            table = self.embedding_dict[h.table]
            queries.append(table(X[:, slice(*self.schema.columns[q.name])].long()))  # [B, 1, D]
            idx = X[:, slice(*self.schema.columns[h.name])].long()
            keys.append(table(idx))  # [B, T, D]
            masks.append(idx != 0)
        mask = masks[0]
        for m in masks[1:]:
            mask = mask | m
        if len(queries) == 1:
            return queries[0], keys[0], mask
        return torch.cat(queries, dim=-1), torch.cat(keys, dim=-1), mask

    def history_pool(self, X: torch.Tensor) -> torch.Tensor:
        """``[B, E]``: the attention-weighted sum of the clicked items' embeddings."""
        query, keys, mask = self.attention_inputs(X)
        return self.attention(query, keys, None, mask).squeeze(1)  # padding weighted by exactly 0

    def attention_weights(self, X: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: the weights ``history_pool`` gives each history position (0 at padding)."""
        query, keys, mask = self.attention_inputs(X)
        score = self.attention.local_att(query, keys).squeeze(-1)
        return torch.where(mask, score, torch.zeros_like(score))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        parts = [self.history_pool(X)]
        others = pooled_embeddings_of(X, self.schema, self.embedding_dict, self.other_features)
        if others:
            parts.append(torch.cat(others, dim=-1).flatten(1))
        dense = dense_inputs(X, self.schema)
        if dense is not None:
            parts.append(dense)
        h = self.top(torch.cat(parts, dim=1))
        return self.out(h).squeeze(-1)

    def hidden_layers(self) -> list[HiddenLayer]:
        """The attention MLP's hidden layers (units, biases and their Dice ``α``) and the top
        MLP's. The first layer of each MLP reads the model's inputs (embeddings): Channel narrows
        its units, never its input columns."""
        att = "attention.local_att"
        layers = []
        n_att = len(self.attention.local_att.dnn.linears)
        for i, lin in enumerate(self.attention.local_att.dnn.linears):
            nxt = f"{att}.dnn.linears.{i + 1}.weight" if i + 1 < n_att else f"{att}.dense.weight"
            layers.append(HiddenLayer(
                name=f"attention.{i}", width=lin.out_features,
                out_params=(f"{att}.dnn.linears.{i}.weight", f"{att}.dnn.linears.{i}.bias",
                            f"{att}.dnn.activation_layers.{i}.alpha"),
                in_params=(nxt,), first=(i == 0),
            ))
        n_top = len(self.top.linears)
        for i, lin in enumerate(self.top.linears):
            nxt = f"top.linears.{i + 1}.weight" if i + 1 < n_top else "out.weight"
            layers.append(HiddenLayer(
                name=f"top.{i}", width=lin.out_features,
                out_params=(f"top.linears.{i}.weight", f"top.linears.{i}.bias"),
                in_params=(nxt,), first=(i == 0),
            ))
        return layers
