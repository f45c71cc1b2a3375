"""HeteFedRec's heterogeneous NCF (Yuan et al., 2024, §IV; Eq. 5, 11, 13-14).

One model holds every size's public parameters, so the simulator can keep one global state:

* ``items.{x}.weight``: the item table ``V_x`` of size ``N_x`` (``x = 0`` small ... ``n-1`` large),
  one *separate* table per size, as in the paper (Eq. 8-10 relate them; distillation, Eq. 16-17,
  moves each one on its own). With ``nested_init`` (default) they start as the paper says for
  Eq. 10: every table's leading ``N_x`` columns are a copy of table ``x``;
* ``heads.{h}``: the FFN ``Θ_h``, layers ``[2 N_h, *hidden]`` + one output unit (§V-D: ``[2N, 8, 8]``);
* the user embedding ``u_i`` at the largest width ``N_l``, **client-private** (as :mod:`rf2.models.ncf`);
  a size-``h`` head reads its leading ``N_h`` entries (``u_i[:N_h]`` in Eq. 11).

Pair ``(x, h)`` (``h <= x``) scores ``σ(Θ_h([u[:N_h], V_x[j, :N_h]]))``: the size-``h`` sub-model of a
size-``x`` client. ``forward(X)`` gives each row's own-size logit ``(x, x)``, with ``x`` the size of the
row's user (:meth:`assign_sizes`; every user is large until assigned), so evaluation scores every user
with its own model. ``forward(X, pairs=True)`` gives all pairs, ``[B, P]`` in :attr:`pairs` order.

:meth:`client_loss` is the per-client training loss the engines use instead of plain BCE
(``rf2.clients``): ``Σ_(x,h) pair_coef[x,h] · BCE_(x,h) + Σ_x ddr_coef[x] · L_reg(V_x)`` (Eq. 11, 14);
the optimisation (:mod:`optimizations.hetefedrec`) sets the coefficients per client.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rf2.data.schema import Schema

from .base import RecModel
from .ncf import id_features


def decorrelation(V: torch.Tensor, weights: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 13: ``(1/N) ||corr((V - V̄) / sqrt(var V))||_F`` for ``V`` of shape ``[n, N]``: the
    Frobenius norm of the ``N x N`` correlation matrix of ``V``'s columns (diagonal included, as
    written), over ``N``. Rows are weighted by ``weights`` (``[n]``, summing to 1; default uniform),
    so zero-weight rows (padding) do not count. Standardising first does not change ``corr``.
    A constant column has zero correlation with everything (``eps`` keeps it finite)."""
    n, N = V.shape
    w = torch.full((n,), 1.0 / n, dtype=V.dtype) if weights is None else weights
    mean = (w[:, None] * V).sum(0)
    cen = V - mean
    cov = cen.T @ (w[:, None] * cen)
    std = torch.sqrt(torch.diagonal(cov) + eps)
    corr = cov / (std[:, None] * std[None, :])
    return torch.sqrt((corr * corr).sum() + eps) / N


def _nonzero(t: torch.Tensor) -> list[int] | None:
    """Indices of ``t``'s non-zero entries, or ``None`` when ``t`` is a vmapped (batched) tensor
    whose values cannot be read."""
    try:
        return [i for i, v in enumerate(t.tolist()) if v != 0]
    except RuntimeError:  # a batched tensor under vmap
        return None


class HeteNCF(RecModel):
    def __init__(
        self,
        schema: Schema,
        sizes: tuple[int, ...] = (8, 16, 32),  # N_s < N_m < N_l (HeteFedRec §V-D on ML-1M)
        hidden: tuple[int, ...] = (8, 8),
        user_feature: str = "user_id",
        item_feature: str = "",  # "": the first item-side sparse feature (e.g. movie_id)
        private_user: bool = True,
        embedding_init_std: float = 0.01,
        nested_init: bool = True,  # Eq. 10's initialisation: shared leading columns start equal
    ):
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if not sizes or min(sizes) < 1 or any(a >= b for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"hetencf: sizes must be strictly increasing integers >= 1, e.g. (8, 16, 32); got {sizes}")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hetencf: hidden widths must be >= 1, got {hidden}")
        user, item = id_features(schema, user_feature, item_feature, "hetencf")
        self.schema = schema
        self.sizes = sizes
        self.user_feature, self.item_feature = user, item
        self.private_user = private_user
        n_l = sizes[-1]
        self.embedding_dict = nn.ModuleDict({self.user_feature.table: nn.Embedding(self.user_feature.vocab_size, n_l)})
        nn.init.normal_(self.embedding_dict[self.user_feature.table].weight, std=embedding_init_std)
        self.items = nn.ModuleList(nn.Embedding(self.item_feature.vocab_size, n) for n in sizes)
        for emb in self.items:
            nn.init.normal_(emb.weight, std=embedding_init_std)
        if nested_init:  # V_s = V_m[:, :N_s] = V_l[:, :N_s], V_m = V_l[:, :N_m] (Eq. 10 at t = 0)
            with torch.no_grad():
                for x in range(len(sizes) - 1, -1, -1):
                    for y in range(x + 1, len(sizes)):
                        self.items[y].weight[:, : sizes[x]] = self.items[x].weight
        self.heads = nn.ModuleList()
        for n in sizes:
            widths = (2 * n, *hidden)
            head = nn.Module()
            head.ffn = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
            head.out = nn.Linear(widths[-1], 1)
            self.heads.append(head)
        #: (x, h) pairs, h <= x: the size-h sub-model of a size-x client
        self.pairs = [(x, h) for x in range(len(sizes)) for h in range(x + 1)]
        self.register_buffer("user_size", torch.full((self.user_feature.vocab_size,), len(sizes) - 1, dtype=torch.long))
        self._ucol = schema.columns[user.name][0]
        self._icol = schema.columns[item.name][0]

    # -- sizes -----------------------------------------------------------------------------------
    def assign_sizes(self, user_rows, size_index) -> None:
        """Users (rows of the user table) -> their size index (0 = smallest), for evaluation."""
        rows = torch.as_tensor(np.array(user_rows, dtype=np.int64))
        s = torch.as_tensor(np.array(size_index, dtype=np.int64))
        if s.numel() and (s.min() < 0 or s.max() >= len(self.sizes)):
            raise ValueError(f"hetencf: size indices must lie in [0, {len(self.sizes)})")
        self.user_size[rows] = s

    def item_param(self, x: int) -> str:
        return f"items.{x}.weight"

    def head_params(self, h: int) -> list[str]:
        return [k for k, _ in self.named_parameters() if k.startswith(f"heads.{h}.")]

    # -- scoring ---------------------------------------------------------------------------------
    def _head(self, h: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = self.sizes[h]
        z = torch.cat([u[:, :n], v[:, :n]], dim=1)
        for lin in self.heads[h].ffn:
            z = torch.relu(lin(z))
        return self.heads[h].out(z).squeeze(-1)

    def forward(self, X: torch.Tensor, pairs: bool | list[tuple[int, int]] = False) -> torch.Tensor:
        """Each row's own-size logit ``[B]``; ``pairs=True``: every pair's ``[B, P]`` (:attr:`pairs`
        order); a list of pairs: those pairs' logits, ``[B, len(list)]``."""
        urow = X[:, self._ucol].long()
        irow = X[:, self._icol].long()
        u = self.embedding_dict[self.user_feature.table](urow)
        if pairs is not False:
            chosen = self.pairs if pairs is True else pairs
            tables = sorted({x for x, _ in chosen})
            vs = {x: self.items[x](irow) for x in tables}
            return torch.stack([self._head(h, u, vs[x]) for x, h in chosen], dim=1)
        vs = [emb(irow) for emb in self.items]
        own = torch.stack([self._head(x, u, vs[x]) for x in range(len(self.sizes))], dim=1)  # [B, n]
        return own.gather(1, self.user_size[urow][:, None]).squeeze(1)

    def score_grid(self, X_users: torch.Tensor, X_items: torch.Tensor) -> torch.Tensor:
        """``[U, I]`` own-size logits of every (user row, item row) pair, equal to :meth:`forward`
        on their concatenated rows: each user is scored by the head and item table of its own size
        only (only the user-id column of ``X_users`` and the item-id column of ``X_items`` are read)."""
        from .ncf import mlp_grid

        urow = X_users[:, self._ucol].long()
        irow = X_items[:, self._icol].long()
        u = self.embedding_dict[self.user_feature.table](urow)
        size = self.user_size[urow]
        out = u.new_empty((urow.numel(), irow.numel()))
        for x in torch.unique(size).tolist():
            rows = (size == x).nonzero().squeeze(1)
            n = self.sizes[x]
            out[rows] = mlp_grid(self.heads[x].ffn, self.heads[x].out, u[rows, :n], self.items[x](irow)[:, :n])
        return out

    def client_loss(self, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                    pair_coef: torch.Tensor | None = None, ddr_coef: torch.Tensor | None = None) -> torch.Tensor:
        """One client's loss (Eq. 11 + 14). ``weights``: per-sample weights (``1/n`` each; padding 0),
        so each pair's term is its mean BCE. ``pair_coef``: ``[P]`` weight of each (x, h) pair's
        loss; ``ddr_coef``: ``[n_sizes]`` the DDR factor α applied to ``L_reg(V_x)``, computed over
        the item rows of the client's training samples (weighted like the samples)."""
        if pair_coef is None:  # no HeteFedRec optimisation: everyone trains the largest model alone
            pair_coef = torch.tensor([float(p == (len(self.sizes) - 1,) * 2) for p in self.pairs])
        if ddr_coef is None:
            ddr_coef = torch.zeros(len(self.sizes))
        # with plain (not vmapped) coefficients, terms with coefficient 0 are skipped: a small
        # client computes one sub-model, not all len(pairs) (their gradient is exactly 0 anyway)
        pair_on, ddr_on = _nonzero(pair_coef), _nonzero(ddr_coef)
        active = list(range(len(self.pairs))) if pair_on is None else pair_on
        logits = functional_call(self, params, (X,), {"pairs": [self.pairs[i] for i in active],
                                                     **self.loss_forward_kwargs(X, y, weights)})  # [B, A]
        bce = F.binary_cross_entropy_with_logits(logits, y[:, None].expand_as(logits), reduction="none")
        loss = ((bce * weights[:, None]).sum(0) * pair_coef[active]).sum()
        irow = X[:, self._icol].long()
        for x in range(1, len(self.sizes)):
            if ddr_on is not None and x not in ddr_on:
                continue
            v = params[self.item_param(x)][irow]
            loss = loss + ddr_coef[x] * decorrelation(v, weights)
        return loss

    def loss_forward_kwargs(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> dict:
        """Extra keyword arguments :meth:`client_loss` passes to ``forward``: none here
        (``hetelightgcn`` passes the client's local graph, :mod:`rf2.models.lightgcn`)."""
        return {}

    # -- simulator interface ---------------------------------------------------------------------
    def embedding_tables(self) -> dict[str, str]:
        out = {f"embedding_dict.{self.user_feature.table}.weight": self.user_feature.table}
        out.update({self.item_param(x): self.item_feature.table for x in range(len(self.sizes))})
        return out

    def private_parameters(self) -> set[str]:
        return {f"embedding_dict.{self.user_feature.table}.weight"} if self.private_user else set()
