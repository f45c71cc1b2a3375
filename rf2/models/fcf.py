"""FCF, federated matrix factorisation: FedEM's backbone (``fedem-method.md`` §3).

``ŷ_ui = σ(p_uᵀ q_i)`` with a private user embedding ``p_u`` (client-keyed ``user_id`` table,
never uploaded) and an item table ``Q``. Both start as PyTorch's ``nn.Embedding`` default,
``N(0, 1)`` (§3, "Initialisation"). The model also carries FedEM's per-item **adapter**
``Θ``: Linear(2d→16)–ReLU–Linear(16→8)–ReLU–Linear(8→1)–Sigmoid (``adapter = [32, 16, 8, 1]``,
first width ``2d``), which computes the merge weight ``ρ_i = adapter([q^l_i ; g_i - q^l_i])``
(:meth:`FCF.merge`). A plain forward pass never uses it (FCF under FedAvg); FedEM
(:mod:`optimizations.fedem`, :mod:`rf2.clients.fedem`) does. Reads only the user-id and item-id
features.
"""
from __future__ import annotations

import torch
from torch import nn

from rf2.data.schema import Schema

from .base import RecModel
from .ncf import id_features


class FCF(RecModel):
    def __init__(self, schema: Schema, embedding_dim: int = 16, adapter: tuple[int, ...] = (32, 16, 8, 1),
                 user_feature: str = "user_id", item_feature: str = "", embedding_init_std: float = 1.0):
        super().__init__()
        user, item = id_features(schema, user_feature, item_feature, "fcf")
        adapter = tuple(int(a) for a in adapter)
        if embedding_dim < 1:
            raise ValueError(f"fcf: embedding_dim must be >= 1, got {embedding_dim}")
        if len(adapter) < 2 or adapter[0] != 2 * embedding_dim or adapter[-1] != 1 or min(adapter) < 1:
            raise ValueError(f"fcf: adapter widths must start at 2 x embedding_dim = {2 * embedding_dim} and end at 1 "
                             f"(FedEM: [32, 16, 8, 1] for d = 16), got {list(adapter)}")
        self.schema = schema
        self.embedding_dim = embedding_dim
        self.user_feature, self.item_feature = user, item
        self.embedding_dict = nn.ModuleDict({f.table: nn.Embedding(f.vocab_size, embedding_dim) for f in (user, item)})
        for emb in self.embedding_dict.values():
            nn.init.normal_(emb.weight, std=embedding_init_std)
        self.adapter = nn.ModuleList(nn.Linear(a, b) for a, b in zip(adapter[:-1], adapter[1:]))
        self._ucol = schema.columns[user.name][0]
        self._icol = schema.columns[item.name][0]

    @property
    def user_table(self) -> str:
        return f"embedding_dict.{self.user_feature.table}.weight"

    @property
    def item_table(self) -> str:
        return f"embedding_dict.{self.item_feature.table}.weight"

    def adapter_names(self) -> list[str]:
        return [f"adapter.{i}.{w}" for i in range(len(self.adapter)) for w in ("weight", "bias")]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        p = self.embedding_dict[self.user_feature.table](X[:, self._ucol].long())
        q = self.embedding_dict[self.item_feature.table](X[:, self._icol].long())
        return (p * q).sum(-1)

    def embedding_tables(self) -> dict[str, str]:
        return {f"embedding_dict.{t}.weight": t for t in self.embedding_dict}

    def private_parameters(self) -> set[str]:
        return {self.user_table}


def adapter_rho(weights: list[torch.Tensor], ql: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``ρ = σ(MLP([q^l ; g - q^l]))`` per row (``fedem-method.md`` §3), batched over clients:
    ``weights`` alternate ``[C, out, in]`` weights and ``[C, out]`` biases; ``ql``, ``g``:
    ``[C, R, d]``; returns ``[C, R]``."""
    h = torch.cat([ql, g - ql], dim=-1)
    n = len(weights) // 2
    for i in range(n):
        W, b = weights[2 * i], weights[2 * i + 1]
        h = torch.einsum("cri,coi->cro", h, W) + b[:, None, :]
        if i < n - 1:
            h = torch.relu(h)
    return torch.sigmoid(h.squeeze(-1))
