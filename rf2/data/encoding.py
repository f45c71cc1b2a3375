"""Turn events into model inputs.

The model input is deepctr-torch's layout: one float32 matrix with a column range per feature
(:attr:`rf2.data.schema.Schema.columns`), indices stored as exact float32 integers. Rows are built
on demand for any set of events (a round's clients, a test batch), so no dataset-sized matrix is
ever materialised.
"""
from __future__ import annotations

import numpy as np
import torch

from .dataset import InteractionDataset
from .schema import DenseFeature, SequenceFeature


class FeatureEncoder:
    def __init__(self, dataset: InteractionDataset):
        self.dataset = dataset
        self.schema = dataset.schema
        ds = dataset
        self._user = ds.user
        self._item = ds.item
        self._columns: list[tuple[int, int, callable]] = []
        frames = {"user": ds.users, "item": ds.items, "event": ds.events}
        keys = {"user": self._user, "item": self._item}
        for f in self.schema.features:
            start, end = self.schema.columns[f.name]
            if isinstance(f, SequenceFeature) and f.source == "history":
                values = ds.items[f.name.removeprefix("hist_")].to_numpy()
                fn = self._history_fn(f.maxlen, values)
            elif isinstance(f, SequenceFeature):
                fn = self._lookup_fn(ds.item_sequences[f.name], "item")
            else:
                fn = self._lookup_fn(frames[f.source][f.name].to_numpy(), f.source)
            self._columns.append((start, end, fn))
            if isinstance(f, SequenceFeature) and f.length_name:
                lstart, lend = self.schema.columns[f.length_name]
                self._columns.append((lstart, lend, self._length_fn(start, end)))
        self._keys = keys

    def _lookup_fn(self, table: np.ndarray, source: str):
        if source == "event":
            return lambda idx, X: table[idx]
        key = self._user if source == "user" else self._item
        return lambda idx, X: table[key[idx]]

    def _history_fn(self, maxlen: int, values: np.ndarray):
        hist = self.dataset.history
        return lambda idx, X: hist.padded(idx, maxlen, values)

    @staticmethod
    def _length_fn(start: int, end: int):
        return lambda idx, X: (X[:, start:end] != 0).sum(axis=1)

    def encode_numpy(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        X = np.zeros((idx.size, self.schema.n_columns), dtype=np.float32)
        for start, end, fn in self._columns:
            val = fn(idx, X)
            X[:, start:end] = val.reshape(idx.size, end - start) if val.ndim == 1 else val
        return X

    def encode(self, idx: np.ndarray) -> torch.Tensor:
        """Model input rows for events ``idx``."""
        return torch.from_numpy(self.encode_numpy(idx))

    def labels(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.dataset.label[np.asarray(idx, dtype=np.int64)].astype(np.float32))

    def dense_columns(self) -> list[tuple[int, int]]:
        return [self.schema.columns[f.name] for f in self.schema.features if isinstance(f, DenseFeature)]
