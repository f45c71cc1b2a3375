"""Channel: narrower sub-models for weaker tiers (HeteroFL, Diao et al. 2021; RF² §4.3, Table 1).

A client of a tier with width fraction ``w`` trains the sub-model made of the *first*
``ceil(w·width)`` units of every hidden layer (HeteroFL's nested sub-models). RF² reduces "all
but the first hidden layer, as reducing channels for the first hidden layer effectively ignores
some input features": we read this as keeping the model's *inputs* intact, i.e. every hidden
layer's units are reduced but no layer drops input features, and the output unit stays. (For
RF²'s DLRM, whose top MLP has a single hidden layer of 256, any other reading would leave
Channel nothing to reduce, yet the paper reports large effects for it.)

Simulation: the sub-model is the full model with the removed units' weights masked to zero
(their rows in the layer, their columns in the next layer, their biases), which computes exactly
what the narrow network computes. Aggregation averages every weight only over the clients that
hold it (``ClientUpdates.masks``, :func:`rf2.aggregation.fedavg`). Upload counts held entries
only; compute scales with the held share of the hidden-layer weights.

Table 1: 25/50/100% of the channels (1:2:4), 12.5/25/100% (1:2:8), 6.25/25/100% (1:4:16).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import ClientContext
from .compression import PerTier

CHANNEL_USAGE = "use channel:1:2:4 | channel:1:2:8 | channel:1:4:16 (Table 1) or channel:frac:W_LOW:...:W_HIGH with widths in (0, 1]"


class Channel(PerTier):
    name = "channel"
    what = "width fraction"

    def __init__(self, spec: str, widths: tuple[float, ...]):
        for w in widths:
            if not 0 < w <= 1:
                raise ValueError(f"optimization {spec!r}: width fractions must be in (0, 1], got {w}; {CHANNEL_USAGE}")
        super().__init__(spec, widths)
        self._cache: dict = {}

    unit = "% of the hidden units"

    def format_value(self, v) -> str:
        return f"{100 * v:.4g}"

    def _layers(self, model):
        layers = model.hidden_layers()
        if not layers:
            raise ValueError(
                f"channel: model {type(model).__name__} declares no hidden layers to narrow (its hidden_layers() "
                f"is empty, e.g. AFM has no MLP); Channel needs a model with an MLP, e.g. dlrm, din, deepfm"
            )
        return layers

    def tier_masks(self, model, width: float) -> dict[str, torch.Tensor]:
        """Boolean masks of the entries a client of width fraction ``width`` holds."""
        key = (id(model), width)
        if key in self._cache:
            return self._cache[key]
        params = dict(model.named_parameters())
        masks: dict[str, torch.Tensor] = {}
        for layer in self._layers(model):
            keep = max(1, math.ceil(width * layer.width - 1e-9))
            for name in layer.out_params:
                m = torch.zeros_like(params[name], dtype=torch.bool)
                m[:keep] = True
                masks[name] = masks.get(name, torch.ones_like(m)) & m
            for name in layer.in_params:
                m = torch.zeros_like(params[name], dtype=torch.bool)
                m[:, :keep] = True
                masks[name] = masks.get(name, torch.ones_like(m)) & m
        self._cache[key] = masks
        return masks

    def client_masks(self, contexts: list[ClientContext], model) -> dict[str, torch.Tensor] | None:
        widths = self.setting(contexts)
        if all(w == 1 for w in widths):
            return None
        per_width = {w: self.tier_masks(model, w) for w in set(widths)}
        names = per_width[widths[0]].keys()
        return {k: torch.stack([per_width[w][k] for w in widths]) for k in names}

    def compute_fraction(self, contexts: list[ClientContext], model) -> np.ndarray:
        widths = self.setting(contexts)
        total = sum(p.numel() for k, p in model.named_parameters() if k in self.tier_masks(model, 1.0))
        frac = {w: sum(int(m.sum()) for m in self.tier_masks(model, w).values()) / total for w in set(widths)}
        return np.array([frac[w] for w in widths])
