"""DLRM (Naumov et al., 2019) as configured in RF² §5.1.

* every sparse feature has an embedding of dimension 16 (multi-valued ones are mean-pooled over
  their non-padding entries);
* dense features go through a bottom MLP with one layer of 16 units (= the embedding dimension,
  so its output joins the interaction as one more vector);
* interaction: the pairwise dot products of all these vectors (``i < j``; one batched matrix
  product, as in the DLRM reference implementation), concatenated with the bottom MLP's output;
* a top MLP with one hidden layer of 256 units and a linear output unit (the click logit).

Built from deepctr-torch's feature columns (``create_embedding_matrix``) and layers (``DNN``); RF²
builds its models on deepctr-torch too (§4.1). deepctr-torch's ``InnerProductLayer`` computes the
same dot products pair by pair; ``tests/test_models.py`` checks the two agree.
"""
from __future__ import annotations

import torch
from torch import nn

from rf2._deepctr import inputs as dc_inputs
from rf2._deepctr import layers as dc_layers
from rf2.data.schema import Schema

from .base import HiddenLayer, RecModel, deepctr_columns, dense_inputs, pooled_embeddings


class DLRM(RecModel):
    tables_read_by_index_only = True
    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 16,  # RF² §5.1
        bottom_hidden: tuple[int, ...] = (),  # bottom MLP layers before the final one of embedding_dim units
        top_hidden: tuple[int, ...] = (256,),  # RF² §5.1: one hidden layer of 256
        embedding_init_std: float = 0.01,
        mlp_init_std: float | None = None,  # None: PyTorch's default Linear init
    ):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"dlrm: embedding_dim must be >= 1, got {embedding_dim}")
        if not top_hidden:
            raise ValueError("dlrm: top_hidden needs at least one layer (RF² uses (256,))")
        self.schema = schema
        self.embedding_dim = embedding_dim
        cols = deepctr_columns(schema, embedding_dim)
        self.embedding_dict = dc_inputs.create_embedding_matrix(cols, init_std=embedding_init_std)
        n_dense = sum(f.dim for f in schema.dense)
        n_vectors = sum(1 for _ in schema.sparse) + sum(1 for _ in schema.sequences)
        self.bottom = None
        if n_dense:
            self.bottom = dc_layers.DNN(n_dense, tuple(bottom_hidden) + (embedding_dim,), activation="relu",
                                        init_std=mlp_init_std or 0.0)
            n_vectors += 1
        if n_vectors < 2:
            raise ValueError("dlrm: needs at least two embedded features (or one plus dense features) to interact")
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.register_buffer("pair_index", rows * n_vectors + cols, persistent=False)
        top_in = n_vectors * (n_vectors - 1) // 2 + (embedding_dim if n_dense else 0)
        self.top = dc_layers.DNN(top_in, tuple(top_hidden), activation="relu", init_std=mlp_init_std or 0.0)
        self.out = nn.Linear(top_hidden[-1], 1)
        if mlp_init_std is None:  # undo deepctr's N(0, init_std) weights: PyTorch default init
            for mlp in (self.bottom, self.top):
                if mlp is not None:
                    for lin in mlp.linears:
                        lin.reset_parameters()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        vectors = pooled_embeddings(X, self.schema, self.embedding_dict)
        dense = dense_inputs(X, self.schema)
        parts = []
        if self.bottom is not None:
            z = self.bottom(dense)
            vectors.append(z.unsqueeze(1))
            parts.append(z)
        V = torch.cat(vectors, dim=1)  # [B, n, D]
        dots = torch.bmm(V, V.transpose(1, 2)).flatten(1)[:, self.pair_index]  # [B, n(n-1)/2], pairs i < j
        parts.append(dots)
        h = self.top(torch.cat(parts, dim=1) if len(parts) > 1 else dots)
        return self.out(h).squeeze(-1)

    def hidden_layers(self) -> list[HiddenLayer]:
        layers = []
        mlps = [("top", self.top, "out.weight")]
        for prefix, mlp, after in mlps:
            n = len(mlp.linears)
            for i, lin in enumerate(mlp.linears):
                nxt = f"{prefix}.linears.{i + 1}.weight" if i + 1 < n else after
                layers.append(HiddenLayer(
                    name=f"{prefix}.{i}", width=lin.out_features,
                    out_params=(f"{prefix}.linears.{i}.weight", f"{prefix}.linears.{i}.bias"),
                    in_params=(nxt,), first=(i == 0),
                ))
        return layers
