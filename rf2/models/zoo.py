"""deepctr-torch's CTR models, selectable by name: DeepFM, WDL, DCN, xDeepFM, AutoInt, NFM, PNN, AFM.

Each is deepctr-torch's own model class, built from our schema's feature columns
(:func:`rf2.models.base.deepctr_columns`; one embedding size for every feature, so the models
that need equal sizes always get them) and held as the submodule ``net``. Wrapping changes only
what the simulator needs:

* **logits.** deepctr's ``PredictionLayer`` adds a bias and, for ``task='binary'``, a sigmoid. We
  build with ``task='regression'``: the bias stays (``net.out.bias``), the sigmoid goes; ``forward``
  returns logits ``[B]`` (the simulator applies BCE-with-logits);
* **vmap-safe linear part.** deepctr's ``Linear`` (the wide / first-order part of DeepFM, WDL,
  DCN, xDeepFM, AutoInt, NFM, AFM) accumulates in place into ``X.new_zeros(...)``. The batched
  engine gives every client its own ``X``, so that zero tensor is batched and this works; but when
  ``vmap`` runs over parameters only, with one shared ``X`` (e.g. scoring several models on one
  test batch), the zero tensor is unbatched while the terms are batched, and the in-place add
  fails. Our subclass computes the same sum out of place, so both work;
* **no batch norm, no dropout, no L2.** ``dnn_use_bn=False``, every dropout 0 (dropout under
  ``vmap`` would need ``randomness='different'``); every ``l2_reg_*`` is 0: deepctr applies L2
  through ``get_regularization_loss()``, which reads the module's own parameters, not those passed
  to ``functional_call``, and only its ``fit()`` calls it, so in the simulator it could never act;
* **seeding.** deepctr's ``BaseModel`` calls ``torch.manual_seed(seed)``; we pass a seed drawn
  from the (forked, run-seeded) RNG :func:`rf2.models.build_model` sets up, and build inside a
  further ``fork_rng``, so equal seeds give equal weights, different seeds different weights, and
  the global RNG is never touched;
* **initialisation** as :class:`~rf2.models.dlrm.DLRM`: embeddings (and the linear part's
  1-d embeddings) ``N(0, embedding_init_std)``; MLP layers PyTorch's default (``mlp_init_std=None``)
  or ``N(0, mlp_init_std)``. Other layers (cross network, CIN, attention) keep deepctr's init;
* **shared tables.** A click history (``hist_movie_id``) shares its item's table, so there are
  more embedded *features* (fields) than *tables*. xDeepFM and AutoInt size their field-wise
  layers by the number of tables (``len(embedding_dict)``); we size them by the number of fields
  (the CIN of xDeepFM, the output layer of AutoInt), which is what their ``forward`` feeds in.

Embedding tables (``embedding_tables()``): ``net.embedding_dict.<table>.weight`` and, for models
with a linear part, ``net.linear_model.embedding_dict.<table>.weight`` (dimension 1); both are
indexed by the same input columns, so the engines keep both updates sparse.

Channel (``hidden_layers()``): the hidden layers of the model's deep MLP (``net.dnn``). Where the
MLP's output enters the final linear layer after other inputs (DCN: after the cross network;
AutoInt: after the interacting layers) that layer is split into ``head_weight`` and
``tail_weight`` (:class:`TailLinear`: the same function, one weight matrix in two parameters), so
the MLP's units are the first columns of ``tail_weight``. Cross networks, CIN and attention
layers read the input features directly and are not narrowed. **AFM has no MLP**: it declares no
hidden layers and Channel refuses it with a clear error.

Refused (``ValueError`` naming the model and the reason): AFM on a schema with dense features
(deepctr's AFM takes only sparse and sequence features); any model on a schema with no sparse or
sequence feature. Not offered: DIEN (needs negative-sampled auxiliary histories and packed GRUs),
DCN-Mix (its ``squeeze()`` drops the batch axis of a one-sample client), ONN (per-feature-pair
embedding tables that are not our tables), FiBiNET / CCPM / AFN / IFM / DIFM / MLR (not wrapped
yet). For DIN see :mod:`rf2.models.din` (RF²'s configuration, attention with Dice without BN).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from rf2._deepctr import deepctr_torch
from rf2._deepctr import inputs as dc_inputs
from rf2._deepctr import layers as dc_layers
from rf2.data.schema import Schema

from .base import HiddenLayer, RecModel, deepctr_columns

dc_models = deepctr_torch.models


class VmapSafeLinear(dc_models.basemodel.Linear):
    """deepctr-torch's linear (first-order) part, summed out of place (see the module docstring).
    Same parameters, same function."""

    def forward(self, X: torch.Tensor, sparse_feat_refine_weight: torch.Tensor | None = None) -> torch.Tensor:
        idx = self.feature_index
        sparse = [self.embedding_dict[f.embedding_name](X[:, idx[f.name][0]:idx[f.name][1]].long())
                  for f in self.sparse_feature_columns]
        seq = dc_inputs.varlen_embedding_lookup(X, self.embedding_dict, idx, self.varlen_sparse_feature_columns)
        sparse += dc_inputs.get_varlen_pooling_list(seq, X, idx, self.varlen_sparse_feature_columns, self.device)
        dense = [X[:, idx[f.name][0]:idx[f.name][1]] for f in self.dense_feature_columns]
        logit = torch.zeros((X.shape[0], 1), dtype=X.dtype, device=X.device)
        if sparse:
            cat = torch.cat(sparse, dim=-1)  # [B, 1, n_fields]
            if sparse_feat_refine_weight is not None:
                cat = cat * sparse_feat_refine_weight.unsqueeze(1)
            logit = logit + cat.sum(dim=-1)
        if dense:
            logit = logit + torch.cat(dense, dim=-1).matmul(self.weight)
        return logit


class TailLinear(nn.Module):
    """``nn.Linear(n_head + n_tail, 1, bias=False)`` with its weight stored as ``head_weight``
    (``[1, n_head]``) and ``tail_weight`` (``[1, n_tail]``): the inputs' last ``n_tail`` columns
    (an MLP's units) are then columns ``0..n_tail-1`` of a parameter of their own, as Channel's
    masks require. Initialised exactly as the ``nn.Linear`` it replaces."""

    def __init__(self, n_head: int, n_tail: int):
        super().__init__()
        full = nn.Linear(n_head + n_tail, 1, bias=False)
        self.n_head = n_head
        self.head_weight = nn.Parameter(full.weight.detach()[:, :n_head].clone())
        self.tail_weight = nn.Parameter(full.weight.detach()[:, n_head:].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.n_head] @ self.head_weight.T + x[..., self.n_head :] @ self.tail_weight.T


_ZERO_OPTIONS = ("l2_reg_linear", "l2_reg_embedding", "l2_reg_dnn", "l2_reg_cross", "l2_reg_cin", "l2_reg_att",
                 "dnn_dropout", "afm_dropout", "bi_dropout")


class DeepCTRModel(RecModel):
    """A deepctr-torch model class under the :class:`RecModel` contract (module docstring)."""

    name: str = ""  # registry name, for messages
    deepctr_class: str = ""
    has_dnn: bool = True
    supports_dense: bool = True
    tail_head: str | None = None  # "cross" (DCN) or "att" (AutoInt): the MLP output enters dnn_linear last

    def __init__(self, schema: Schema, embedding_dim: int, dnn_hidden, embedding_init_std: float,
                 mlp_init_std: float | None, **options: Any):
        super().__init__()
        name = self.name
        dnn_hidden = tuple(int(h) for h in dnn_hidden) if self.has_dnn else ()
        if embedding_dim < 1:
            raise ValueError(f"{name}: embedding_dim must be >= 1, got {embedding_dim}")
        if self.has_dnn and (not dnn_hidden or min(dnn_hidden) < 1):
            raise ValueError(f"{name}: dnn_hidden needs at least one layer of >= 1 units, got {dnn_hidden}")
        n_fields = len(schema.sparse) + len(schema.sequences)
        if n_fields == 0:
            raise ValueError(f"{name}: deepctr-torch's {self.deepctr_class} needs at least one sparse or sequence "
                             f"feature; the schema has only dense features")
        if not self.supports_dense and schema.dense:
            raise ValueError(f"{name}: deepctr-torch's {self.deepctr_class} takes no dense features, but the schema "
                             f"has {[f.name for f in schema.dense]}; use a model that does (e.g. 'deepfm')")
        self.schema = schema
        self.embedding_dim = embedding_dim
        self.n_fields = n_fields
        cols = deepctr_columns(schema, embedding_dim)
        cls = getattr(dc_models, self.deepctr_class)
        accepted = inspect.signature(cls).parameters
        kwargs: dict[str, Any] = {k: 0 for k in _ZERO_OPTIONS if k in accepted}
        if "dnn_use_bn" in accepted:
            kwargs["dnn_use_bn"] = False
        if self.has_dnn:
            kwargs["dnn_hidden_units"] = dnn_hidden
        seed = int(torch.randint(0, 2**31 - 1, ()))  # from build_model's seeded, forked RNG
        # built on the CPU (deepctr's device only places the new layers); a run moves the model to its
        # device afterwards (rf2.simulation), so the initial weights are the same on every device
        kwargs.update(init_std=embedding_init_std, seed=seed, task="regression", device="cpu", **options)
        linear_cols = [] if "linear_feature_columns" not in accepted else [cols]
        with torch.random.fork_rng(devices=[]):  # BaseModel calls torch.manual_seed(seed)
            net = cls(*linear_cols, cols, **kwargs)
            if dict(net.feature_index) != dict(schema.columns):
                raise ValueError(f"{name}: deepctr-torch lays out the input columns as {dict(net.feature_index)}, "
                                 f"the schema as {schema.columns}")
            net.linear_model.__class__ = VmapSafeLinear
            self._fix_fields(net, dnn_hidden, options)
            if self.has_dnn:
                for lin in net.dnn.linears:
                    if mlp_init_std is None:
                        lin.reset_parameters()
                    else:
                        nn.init.normal_(lin.weight, std=mlp_init_std)
        self.net = net

    def _fix_fields(self, net, dnn_hidden, options) -> None:
        """Hook for models whose layers deepctr sizes by the number of tables (module docstring)."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X).squeeze(-1)

    def embedding_tables(self) -> dict[str, str]:
        out = {}
        for t in self.schema.tables():
            out[f"net.embedding_dict.{t}.weight"] = t
            if t in self.net.linear_model.embedding_dict:
                out[f"net.linear_model.embedding_dict.{t}.weight"] = t
        return out

    def hidden_layers(self) -> list[HiddenLayer]:
        if not self.has_dnn:
            return []
        after = "net.dnn_linear.tail_weight" if isinstance(self.net.dnn_linear, TailLinear) else "net.dnn_linear.weight"
        linears = self.net.dnn.linears
        layers = []
        for i, lin in enumerate(linears):
            nxt = f"net.dnn.linears.{i + 1}.weight" if i + 1 < len(linears) else after
            layers.append(HiddenLayer(
                name=f"dnn.{i}", width=lin.out_features,
                out_params=(f"net.dnn.linears.{i}.weight", f"net.dnn.linears.{i}.bias"),
                in_params=(nxt,), first=(i == 0),
            ))
        return layers


class DeepFM(DeepCTRModel):
    """DeepFM (Guo et al., 2017): linear part + FM second-order part + deep MLP, summed."""

    name, deepctr_class = "deepfm", "DeepFM"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 use_fm: bool = True, embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std, use_fm=bool(use_fm))


class WDL(DeepCTRModel):
    """Wide & Deep (Cheng et al., 2016): linear (wide) part + deep MLP."""

    name, deepctr_class = "wdl", "WDL"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std)


class DCN(DeepCTRModel):
    """Deep & Cross Network (Wang et al., 2017; ``cross_parameterization='matrix'``: DCN-M / DCN v2):
    linear part + [cross network, deep MLP] -> linear output."""

    name, deepctr_class = "dcn", "DCN"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 cross_num: int = 2, cross_parameterization: str = "vector",
                 embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        if cross_parameterization not in ("vector", "matrix"):
            raise ValueError(
                f"dcn: cross_parameterization must be 'vector' or 'matrix', got {cross_parameterization!r}"
            )
        if cross_num < 0:
            raise ValueError(f"dcn: cross_num must be >= 0, got {cross_num}")
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std,
                         cross_num=int(cross_num), cross_parameterization=cross_parameterization)

    def _fix_fields(self, net, dnn_hidden, options) -> None:
        if net.cross_num > 0:  # dnn_linear reads cat(cross_out, deep_out)
            net.dnn_linear = TailLinear(net.crossnet.kernels.shape[1], dnn_hidden[-1])


class XDeepFM(DeepCTRModel):
    """xDeepFM (Lian et al., 2018): linear part + compressed interaction network (CIN) + deep MLP."""

    name, deepctr_class = "xdeepfm", "xDeepFM"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 cin_layer_size: tuple[int, ...] = (128, 128), cin_split_half: bool = True,
                 cin_activation: str = "relu", embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        cin_layer_size = tuple(int(c) for c in cin_layer_size)
        if not cin_layer_size:
            raise ValueError("xdeepfm: cin_layer_size needs at least one layer")
        if cin_split_half and any(c % 2 for c in cin_layer_size[:-1]):
            raise ValueError(
                f"xdeepfm: with cin_split_half every CIN layer but the last must be even, got {cin_layer_size}"
            )
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std,
                         cin_layer_size=cin_layer_size, cin_split_half=bool(cin_split_half),
                         cin_activation=cin_activation)

    def _fix_fields(self, net, dnn_hidden, options) -> None:
        if net.cin.field_nums[0] != self.n_fields:  # deepctr used len(embedding_dict) (tables)
            net.cin = dc_layers.CIN(self.n_fields, options["cin_layer_size"], options["cin_activation"],
                                    options["cin_split_half"], 0, net.cin.seed, device="cpu")


class AutoInt(DeepCTRModel):
    """AutoInt (Song et al., 2019): linear part + multi-head self-attention over the fields + deep
    MLP -> linear output."""

    name, deepctr_class = "autoint", "AutoInt"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 att_layer_num: int = 3, att_head_num: int = 2, att_res: bool = True,
                 embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        if att_layer_num < 1 or att_head_num < 1:
            raise ValueError(
                f"autoint: att_layer_num and att_head_num must be >= 1, got {att_layer_num}, {att_head_num}"
            )
        if embedding_dim % att_head_num:
            raise ValueError(
                f"autoint: embedding_dim ({embedding_dim}) must be divisible by att_head_num ({att_head_num})"
            )
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std,
                         att_layer_num=int(att_layer_num), att_head_num=int(att_head_num), att_res=bool(att_res))

    def _fix_fields(self, net, dnn_hidden, options) -> None:
        # dnn_linear reads cat(attention output [n_fields * D], deep_out); deepctr sized the first by tables
        net.dnn_linear = TailLinear(self.n_fields * self.embedding_dim, dnn_hidden[-1])


class NFM(DeepCTRModel):
    """Neural Factorization Machine (He & Chua, 2017): linear part + MLP over bi-interaction pooling."""

    name, deepctr_class = "nfm", "NFM"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std)


class PNN(DeepCTRModel):
    """Product-based Neural Network (Qu et al., 2016): embeddings + inner (IPNN) and/or outer (OPNN)
    products -> MLP. No linear part."""

    name, deepctr_class = "pnn", "PNN"

    def __init__(self, schema: Schema, embedding_dim: int = 16, dnn_hidden: tuple[int, ...] = (256,),
                 use_inner: bool = True, use_outter: bool = False, kernel_type: str = "mat",
                 embedding_init_std: float = 0.01, mlp_init_std: float | None = None):
        if kernel_type not in ("mat", "vec", "num"):
            raise ValueError(f"pnn: kernel_type must be 'mat', 'vec' or 'num', got {kernel_type!r}")
        super().__init__(schema, embedding_dim, dnn_hidden, embedding_init_std, mlp_init_std,
                         use_inner=bool(use_inner), use_outter=bool(use_outter), kernel_type=kernel_type)


class AFM(DeepCTRModel):
    """Attentional Factorization Machine (Xiao et al., 2017): linear part + attention-weighted
    pairwise interactions. No MLP, so nothing for Channel to narrow; no dense features."""

    name, deepctr_class = "afm", "AFM"
    has_dnn = False
    supports_dense = False

    def __init__(self, schema: Schema, embedding_dim: int = 16, use_attention: bool = True,
                 attention_factor: int = 8, embedding_init_std: float = 0.01):
        super().__init__(schema, embedding_dim, (), embedding_init_std, None,
                         use_attention=bool(use_attention), attention_factor=int(attention_factor))


ZOO: dict[str, type[DeepCTRModel]] = {m.name: m for m in (DeepFM, WDL, DCN, XDeepFM, AutoInt, NFM, PNN, AFM)}
