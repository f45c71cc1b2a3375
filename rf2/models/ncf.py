"""NCF as HeteFedRec uses it (Eq. 5): ``r̂_ij = σ(FFN([u_i, v_j]))``.

* ``u_i``: the user's embedding, a **client-private** parameter (HeteFedRec §III, Eq. 1-4): it
  lives on the user's device across rounds and is never uploaded or averaged. Here it is the
  ``user_id`` embedding table, declared private and client-keyed (row ``i`` is user ``i``'s); see
  :meth:`rf2.models.base.RecModel.private_parameters`;
* ``v_j``: the item embedding table (public, aggregated);
* FFN: layers ``[2N, 8, 8]`` (HeteFedRec §V-D: the input of width 2N, then two hidden layers of
  8 with ReLU), then one output unit, the logit;
* trained with binary cross-entropy on implicit feedback with sampled negatives (1:4, done by the
  dataset, e.g. ``ml-1m-implicit``).

Only the user-id and item-id features are read; every other feature of the schema is ignored.
"""
from __future__ import annotations

import torch
from torch import nn

from rf2.data.schema import Schema, SparseFeature

from .base import HiddenLayer, RecModel


def id_features(schema: Schema, user_feature: str, item_feature: str, model: str) -> tuple[SparseFeature, SparseFeature]:
    """The user-id and item-id sparse features an NCF-style model reads (``item_feature`` "": the
    first item-side sparse feature), or a ValueError naming ``model`` and what the schema has."""
    sparse = {f.name: f for f in schema.features if isinstance(f, SparseFeature)}
    if user_feature not in sparse:
        raise ValueError(
            f"{model}: the dataset has no sparse user feature {user_feature!r} (NCF-style models need a user id; "
            f"datasets with one: ml-1m-implicit, synthetic with user_id=True); sparse features: {sorted(sparse)}"
        )
    if not item_feature:
        items = [f.name for f in sparse.values() if f.source == "item"]
        if not items:
            raise ValueError(f"{model}: the dataset has no item-side sparse feature to use as the item id")
        item_feature = items[0]
    if item_feature not in sparse:
        raise ValueError(f"{model}: no sparse feature {item_feature!r}; sparse features: {sorted(sparse)}")
    return sparse[user_feature], sparse[item_feature]


def mlp_grid(ffn, out: nn.Linear, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[U, I]`` logits of ``out(relu(...relu(ffn_0([u_a, v_b]))...))`` for every pair of a row
    ``u_a`` of ``u [U, n]`` and ``v_b`` of ``v [I, n]``, without building the ``U * I`` concatenated
    inputs: the first layer is linear in the concatenation, ``W [u; v] + c = (W_u u + c) + W_v v``,
    so it is computed once per user and once per item and added on the grid. Used to score the
    whole catalogue (:func:`rf2.evaluation.ranking.iter_item_scores`)."""
    layers = [*ffn, out]
    first = layers[0]
    n = u.shape[1]
    h = (u @ first.weight[:, :n].T + first.bias)[:, None, :] + (v @ first.weight[:, n:].T)[None, :, :]
    for lin in layers[1:]:
        h = lin(torch.relu(h))
    return h.squeeze(-1)


class NCFParts:
    """What NCF-style models (``ncf``, ``lightgcn``) share: an ``embedding_dict`` of the user and
    item tables, the user table client-private (when ``private_user``), and the FFN ``ffn`` +
    ``out`` whose hidden layers Channel can narrow."""

    def _build_parts(self, model: str, schema: Schema, embedding_dim: int, hidden, user_feature: str,
                     item_feature: str, private_user: bool, embedding_init_std: float) -> None:
        """The user and item tables (``N(0, embedding_init_std²)``), the FFN ``[2N, *hidden]`` and
        the output unit, created in this order (the seeded initialisation depends on it)."""
        user, item = id_features(schema, user_feature, item_feature, model)
        if embedding_dim < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"{model}: embedding_dim and hidden widths must be >= 1, got {embedding_dim}, {hidden}")
        self.schema = schema
        self.embedding_dim = embedding_dim
        self.user_feature, self.item_feature = user, item
        self.private_user = private_user
        self.embedding_dict = nn.ModuleDict({
            f.table: nn.Embedding(f.vocab_size, embedding_dim) for f in (self.user_feature, self.item_feature)
        })
        for emb in self.embedding_dict.values():
            nn.init.normal_(emb.weight, std=embedding_init_std)
        widths = (2 * embedding_dim, *hidden)
        self.ffn = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], 1)
        self._ucol = schema.columns[user.name][0]
        self._icol = schema.columns[item.name][0]

    def embedding_tables(self) -> dict[str, str]:
        return {f"embedding_dict.{t}.weight": t for t in self.embedding_dict}

    def private_parameters(self) -> set[str]:
        return {f"embedding_dict.{self.user_feature.table}.weight"} if self.private_user else set()

    def hidden_layers(self) -> list[HiddenLayer]:
        n = len(self.ffn)
        return [
            HiddenLayer(name=f"ffn.{i}", width=lin.out_features,
                        out_params=(f"ffn.{i}.weight", f"ffn.{i}.bias"),
                        in_params=(f"ffn.{i + 1}.weight" if i + 1 < n else "out.weight",), first=(i == 0))
            for i, lin in enumerate(self.ffn)
        ]


class NCF(NCFParts, RecModel):
    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 32,  # N; HeteFedRec uses 8/16/32 on ML-1M
        hidden: tuple[int, ...] = (8, 8),  # HeteFedRec §V-D: [2N, 8, 8]
        user_feature: str = "user_id",
        item_feature: str = "",  # "": the first item-side sparse feature (e.g. movie_id)
        private_user: bool = True,
        embedding_init_std: float = 0.01,
    ):
        super().__init__()
        self._build_parts("ncf", schema, embedding_dim, hidden, user_feature, item_feature, private_user,
                          embedding_init_std)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        u = self.embedding_dict[self.user_feature.table](X[:, self._ucol].long())
        v = self.embedding_dict[self.item_feature.table](X[:, self._icol].long())
        h = torch.cat([u, v], dim=1)
        for lin in self.ffn:
            h = torch.relu(lin(h))
        return self.out(h).squeeze(-1)

    def score_grid(self, X_users: torch.Tensor, X_items: torch.Tensor) -> torch.Tensor:
        """``[U, I]`` logits of every (user row of ``X_users``, item row of ``X_items``) pair, equal
        to :meth:`forward` on their concatenated rows (only the user-id column of ``X_users`` and
        the item-id column of ``X_items`` are read)."""
        u = self.embedding_dict[self.user_feature.table](X_users[:, self._ucol].long())
        v = self.embedding_dict[self.item_feature.table](X_items[:, self._icol].long())
        return mlp_grid(self.ffn, self.out, u, v)
