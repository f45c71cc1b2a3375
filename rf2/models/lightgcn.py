"""Fed-LightGCN: HeteFedRec's second base model (Yuan et al., 2024, §III-B, §V-D) on LightGCN (He et
al., 2020), with the propagation "only used in user's local graph".

**The local graph.** Client ``i`` (user ``u_i``) holds its training data ``D_i``. Its local graph
``G_i`` is the bipartite star of its user node and the items of its training *positives*,
``N_i = {j : (u_i, v_j, 1) ∈ D_i}`` (a set; ``n_i = |N_i|``), one edge per positive. Nothing else
is in it: no other user, no negative, no test item. So in ``G_i``

* the user node has degree ``|N(u_i)| = n_i``;
* every item ``j ∈ N_i`` has degree ``|N(v_j)| = 1`` (its only neighbour is ``u_i``),

and LightGCN's symmetric normalisation ``1 / sqrt(|N(u)| |N(i)|)`` becomes ``1 / sqrt(n_i)`` on every
edge.

**One propagation layer** (§V-D: "the layer of LightGCN propagation is 1"), no feature transform,
no nonlinearity. Layer 0 is the embeddings themselves: ``e_i^(0) = u_i`` (the client-private user
embedding) and ``e_j^(0) = v_j`` (the public item table). Layer 1::

    e_i^(1) = Σ_{j ∈ N_i} v_j / sqrt(n_i)              (the user node: its items)
    e_j^(1) = u_i / sqrt(n_i)      for j ∈ N_i          (an item node: its one user)

(``n_i = 0``: the user is an isolated node, ``e_i^(1) = 0``.)

**Layer combination**: LightGCN's ``e = Σ_k α_k e^(k)`` with ``α_k = 1 / (K + 1)``, i.e. the *mean*
of layers 0 and 1 (``K = 1``). HeteFedRec does not give its ``α_k``; the uniform ``1/(K+1)`` is the
LightGCN paper's own choice and keeps the propagated vector on the scale of ``u_i``. So the user's
representation is::

    ũ_i = ½ (u_i + (1 / sqrt(n_i)) Σ_{j ∈ N_i} v_j)

**The item side** (option ``item_propagation``, default off). In ``G_i`` an item's only neighbour
is ``u_i`` itself, so ``e_j^(1) = u_i / sqrt(n_i)`` is non-zero *exactly* for the client's training
positives: every label-1 training sample would carry it and no label-0 sample and no test item
would, i.e. the head could read the training label off graph membership, and every item it is
asked to score later lacks the feature. By default items are therefore scored with their own
embedding, ``ṽ_j = v_j`` (the propagation enriches the user side only). ``ũ_i`` is the same vector
for all of the client's samples, so it does not mark labels row by row; what remains is the usual
LightGCN effect that training edges are in the graph: a training positive's own ``v_j / (2 sqrt(n_i))``
is inside ``ũ_i`` (and no test item's is), which matters most for users with few positives.
``item_propagation=True`` gives the literal two-sided mean::

    ṽ_j = ½ (v_j + [j ∈ N_i] u_i / sqrt(n_i))

**Score** (Eq. 5, "these user and item embeddings are used to predict users' preference scores via
E.q. 5"): ``r̂_ij = σ(FFN([ũ_i, ṽ_j]))`` with NCF's head: layers ``[2N, 8, 8]`` with ReLU, then one
output unit (§V-D), trained with binary cross-entropy (Eq. 2) on the client's samples.

**What a client computes locally**, every local step on its batch ``(X, y)`` (one client, one user):
the indicator ``m`` of the item rows of the batch's positives (``y = 1``; padding rows, weight 0,
excluded; duplicates once), ``n = Σ m``, ``e^(1) = (m V) / sqrt(max(n, 1))``, ``ũ`` and (optionally)
``ṽ`` as above, the logits, the mean BCE. Gradients reach ``u_i`` (private, kept: never uploaded),
the rows of ``V`` its samples index -- its positives' rows also through ``e^(1)`` -- and ``Θ``; it
uploads ``ΔV`` (those rows) and ``ΔΘ``. Training and scoring run the same equations.

**Where the neighbourhood comes from** (the engines only call ``model(X)`` / ``client_loss(params,
X, y, weights)`` on a client's encoded samples, and a sample row holds the user and item ids only):

* *training* (:meth:`LightGCN.client_loss`, which both engines use instead of plain BCE): the graph
  is read from the batch itself -- the item column of its rows with ``y = 1`` and weight > 0. With
  rf2's default full-batch local training (RF² §4.1; ``local_batch_size = 0``) the batch is the
  client's whole training data, so this is ``N_i`` exactly (also with ``train_negatives``: the
  batch is the positives plus that round's negatives). It reads nothing outside ``X``'s own item
  column, so it is exact under the batched engine's per-client local tables (which rewrite that
  column; ``m`` then lives on the local table's rows) and every row it propagates from is a row
  the client touches, so its update is in the client's ``TableRows`` in both engines. With
  mini-batches (``local_batch_size > 0``) each step's graph is *that batch's* positives: a sampled
  subgraph of ``G_i`` (documented limitation; the paper gives no batch size);
* *scoring* (``forward(X)`` without ``edges``: test AUC, full ranking, sampled HR/NDCG): each
  row's user's ``N_i`` comes from a buffer, every user's training positives (as item-table rows,
  CSR by user-table row), installed by :meth:`LocalGraphs.bind_dataset`. ``rf2.simulation.Simulation``
  binds its dataset right after building the model (any model with ``bind_dataset``); elsewhere
  call ``model.bind_dataset(dataset)``. An unbound model refuses to score, and ``forward`` refuses
  the buffer on a vmapped ``X`` (its indices are local-table rows there).

``hetelightgcn`` (:class:`HeteLightGCN`) is the heterogeneous variant for ``hetefedrec:``
(:mod:`optimizations.hetefedrec`): :class:`~rf2.models.hetencf.HeteNCF` (one item table ``V_x`` and
head ``Θ_x`` per size, the private ``u`` at ``N_l``, Eq. 11/13-14 in ``client_loss``) with the
user side propagated in every table: the size-``h`` sub-model of a size-``x`` client scores
``Θ_h([ũ_x[:N_h], ṽ_x[:N_h]])`` with ``ũ_x = ½ (u[:N_x] + Σ_{j∈N_i} V_x[j] / sqrt(n_i))``, i.e. Eq. 11's
``L(u[:N_h], V_x[:, :N_h], Θ_h)`` with the propagation inside ``F`` (slicing commutes with it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rf2.data.schema import Schema

from .base import RecModel
from .hetencf import HeteNCF
from .ncf import NCFParts


def _vmapped(X: torch.Tensor) -> bool:
    """Whether ``X`` is a per-client input under ``vmap`` (its values cannot be read)."""
    try:
        X[:0].tolist()
    except RuntimeError:
        return True
    return False


class LocalGraph:
    """The local graphs of a batch's rows: :meth:`aggregate` gives each row's user
    ``(1 / sqrt(n)) Σ_{j ∈ N} V[j]`` for any item table ``V``; :attr:`scale` is ``1 / sqrt(max(n, 1))``
    and :attr:`member` whether the row's item is in ``N`` (``[B]`` or broadcastable)."""

    def __init__(self, aggregate, scale: torch.Tensor, member: torch.Tensor):
        self.aggregate = aggregate
        self.scale = scale
        self.member = member

    @classmethod
    def of_client(cls, irow: torch.Tensor, edges: torch.Tensor, n_rows: int) -> "LocalGraph":
        """One client's graph from its batch: ``irow`` the rows' item-table rows, ``edges`` 1 for
        the rows that are edges (positives with weight > 0), ``n_rows`` the item table's rows (the
        full table, or under the batched engine the client's local table)."""
        m = torch.zeros(n_rows, dtype=edges.dtype).index_add(0, irow, edges)
        m = (m > 0).to(edges.dtype)  # a set: an item once
        scale = m.sum().clamp_min(1.0).rsqrt()

        def aggregate(V: torch.Tensor) -> torch.Tensor:
            return ((m.to(V.dtype) @ V) * scale)[None, :]  # [1, D], the same for every row

        return cls(aggregate, scale, m[irow])

    @classmethod
    def of_users(cls, urow: torch.Tensor, irow: torch.Tensor, ptr: torch.Tensor, items: torch.Tensor,
                 keys: torch.Tensor, n_item_rows: int) -> "LocalGraph":
        """Every row's user's graph from the bound training positives (CSR ``ptr`` over user-table
        rows, ``items`` item-table rows, ``keys = user_row * n_item_rows + item_row`` sorted)."""
        users, inv = torch.unique(urow, return_inverse=True)
        start = ptr[users]
        count = ptr[users + 1] - start
        seg = torch.repeat_interleave(torch.arange(users.numel()), count)
        first = torch.cumsum(count, 0) - count
        pos = torch.arange(int(count.sum())) - first[seg] + start[seg]
        nbr = items[pos]
        scale_u = count.clamp_min(1).to(torch.float32).rsqrt()

        def aggregate(V: torch.Tensor) -> torch.Tensor:
            s = torch.zeros((users.numel(), V.shape[1]), dtype=V.dtype).index_add(0, seg, V[nbr])
            return (s * scale_u.to(V.dtype)[:, None])[inv]

        q = urow * n_item_rows + irow
        if keys.numel():
            at = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
            member = (keys[at] == q).to(torch.float32)
        else:
            member = torch.zeros(q.shape, dtype=torch.float32)
        return cls(aggregate, scale_u[inv], member)


class LocalGraphs:
    """Mixin: the bound training positives every user's local graph is built from when scoring
    (see the module docstring). Needs ``user_feature`` and ``item_feature``."""

    def _init_graphs(self) -> None:
        self.register_buffer("graph_ptr", torch.zeros(self.user_feature.vocab_size + 1, dtype=torch.long), persistent=False)
        self.register_buffer("graph_items", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("graph_keys", torch.zeros(0, dtype=torch.long), persistent=False)
        self.graph_bound = False

    def bind_dataset(self, dataset) -> None:
        """Install every user's training positives (``label == 1`` among the training events,
        neither test nor validation) as its local graph, by user-table and item-table rows (the
        dataset's ``user_feature`` / ``item_feature`` columns); repeated pairs count once."""
        frames = {"user": dataset.users, "item": dataset.items}
        rows = []
        for f, key in ((self.user_feature, dataset.user), (self.item_feature, dataset.item)):
            frame = frames.get(f.source)
            if frame is None or f.name not in frame.columns:
                raise ValueError(f"{self._model_name}: the dataset has no {f.source}-table column {f.name!r} to build "
                                 "the local graphs from")
            rows.append(frame[f.name].to_numpy().astype(np.int64))
        tr = dataset.train_index
        pos = tr[dataset.label[tr] == 1]
        urow, irow = rows[0][dataset.user[pos]], rows[1][dataset.item[pos]]
        n_u, n_i = self.user_feature.vocab_size, self.item_feature.vocab_size
        if urow.size and (urow.max() >= n_u or irow.max() >= n_i or min(urow.min(), irow.min()) < 0):
            raise ValueError(f"{self._model_name}: the dataset's ids exceed the model's tables ({n_u} users, {n_i} items); "
                             "build the model from this dataset's schema")
        keys = np.unique(urow * n_i + irow)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n_i, minlength=n_u))])
        self.graph_ptr = torch.as_tensor(ptr.astype(np.int64))
        self.graph_items = torch.as_tensor((keys % n_i).astype(np.int64))
        self.graph_keys = torch.as_tensor(keys.astype(np.int64))
        self.graph_bound = True

    def local_graph(self, X: torch.Tensor, urow: torch.Tensor, irow: torch.Tensor, edges: torch.Tensor | None,
                    n_rows: int) -> LocalGraph:
        """The graphs of ``X``'s rows: from the batch (``edges`` given: ``X`` is one client's
        samples) or from the bound training positives (scoring; the full item table)."""
        if edges is not None:
            return LocalGraph.of_client(irow, edges, n_rows)
        if _vmapped(X):
            raise RuntimeError(f"{self._model_name}: forward(X) under vmap reads per-client local-table indices; the "
                               "local graph must come from the batch (client_loss, or forward(X, edges=...))")
        if not self.graph_bound:
            raise ValueError(f"{self._model_name}: no local graphs to score with; call model.bind_dataset(dataset) "
                             "(rf2.simulation.Simulation does), or pass edges= for one client's batch")
        if n_rows != self.item_feature.vocab_size:
            raise ValueError(f"{self._model_name}: scoring with the bound graphs needs the full item table "
                             f"({self.item_feature.vocab_size} rows), got {n_rows}")
        return LocalGraph.of_users(urow, irow, self.graph_ptr, self.graph_items, self.graph_keys, n_rows)

    @staticmethod
    def edges_of(y: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The batch's edges: its positives that count (weight > 0; not padding)."""
        return ((y > 0.5) & (weights > 0)).to(dtype)


class LightGCN(LocalGraphs, NCFParts, RecModel):
    _model_name = "lightgcn"

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 32,  # N; HeteFedRec uses 8/16/32 on ML-1M
        hidden: tuple[int, ...] = (8, 8),  # HeteFedRec §V-D: [2N, 8, 8]
        user_feature: str = "user_id",
        item_feature: str = "",  # "": the first item-side sparse feature (e.g. movie_id)
        private_user: bool = True,
        embedding_init_std: float = 0.01,
        item_propagation: bool = False,  # also ṽ_j = ½(v_j + [j ∈ N_i] u_i / sqrt(n_i)) (see the module docstring)
    ):
        super().__init__()
        self.item_propagation = bool(item_propagation)
        self._build_parts("lightgcn", schema, embedding_dim, tuple(hidden), user_feature, item_feature, private_user,
                          embedding_init_std)
        self._init_graphs()

    def representations(self, X: torch.Tensor, edges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ũ, ṽ)``, each ``[B, N]``: the head's inputs (module docstring). ``edges``: ``X`` is one
        client's batch and the graph is its rows with ``edges = 1``; else the bound graphs."""
        urow = X[:, self._ucol].long()
        irow = X[:, self._icol].long()
        V = self.embedding_dict[self.item_feature.table].weight
        u0 = self.embedding_dict[self.user_feature.table](urow)
        v0 = F.embedding(irow, V)
        g = self.local_graph(X, urow, irow, edges, V.shape[0])
        u = 0.5 * (u0 + g.aggregate(V))
        if not self.item_propagation:
            return u, v0
        scale = g.scale if g.scale.dim() == 0 else g.scale[:, None]
        return u, 0.5 * (v0 + g.member[:, None] * scale * u0)

    def forward(self, X: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
        u, v = self.representations(X, edges)
        h = torch.cat([u, v], dim=1)
        for lin in self.ffn:
            h = torch.relu(lin(h))
        return self.out(h).squeeze(-1)

    def client_loss(self, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
        """One client's loss: its samples' BCE weighted by ``weights`` (``1/n`` each; padding 0),
        with the local graph read from the batch (its weighted positives)."""
        logits = functional_call(self, params, (X,), {"edges": self.edges_of(y, weights, X.dtype)})
        return (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * weights).sum()


class HeteLightGCN(LocalGraphs, HeteNCF):
    """HeteFedRec's heterogeneous Fed-LightGCN (see the module docstring); parameters, sizes, pairs
    and ``client_loss`` (Eq. 11, 13-14) as :class:`~rf2.models.hetencf.HeteNCF`."""

    _model_name = "hetelightgcn"
    #: HeteNCF's grid scorer skips the propagation: catalogue scoring goes through ``forward``
    score_grid = None

    def __init__(
        self,
        schema: Schema,
        sizes: tuple[int, ...] = (8, 16, 32),  # N_s < N_m < N_l (HeteFedRec §V-D on ML-1M)
        hidden: tuple[int, ...] = (8, 8),
        user_feature: str = "user_id",
        item_feature: str = "",
        private_user: bool = True,
        embedding_init_std: float = 0.01,
        nested_init: bool = True,
        item_propagation: bool = False,
    ):
        HeteNCF.__init__(self, schema, sizes, hidden, user_feature, item_feature, private_user, embedding_init_std,
                         nested_init)
        self.item_propagation = bool(item_propagation)
        self._init_graphs()

    def _sized(self, x: int, u0: torch.Tensor, irow: torch.Tensor, g: LocalGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ũ_x, ṽ_x)`` at width ``N_x``: the propagation in table ``V_x``."""
        V = self.items[x].weight
        ux = u0[:, : self.sizes[x]]
        v = F.embedding(irow, V)
        u = 0.5 * (ux + g.aggregate(V))
        if self.item_propagation:
            scale = g.scale if g.scale.dim() == 0 else g.scale[:, None]
            v = 0.5 * (v + g.member[:, None] * scale * ux)
        return u, v

    def forward(self, X: torch.Tensor, pairs: bool | list[tuple[int, int]] = False,
                edges: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`HeteNCF.forward`; ``edges``: ``X`` is one client's batch, its graph those rows."""
        urow = X[:, self._ucol].long()
        irow = X[:, self._icol].long()
        u0 = self.embedding_dict[self.user_feature.table](urow)
        g = self.local_graph(X, urow, irow, edges, self.items[0].weight.shape[0])
        if pairs is not False:
            chosen = self.pairs if pairs is True else pairs
            reps = {x: self._sized(x, u0, irow, g) for x in sorted({x for x, _ in chosen})}
            return torch.stack([self._head(h, *reps[x]) for x, h in chosen], dim=1)
        own = torch.stack([self._head(x, *self._sized(x, u0, irow, g)) for x in range(len(self.sizes))], dim=1)
        return own.gather(1, self.user_size[urow][:, None]).squeeze(1)

    def loss_forward_kwargs(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> dict:
        return {"edges": self.edges_of(y, weights, X.dtype)}
