"""Turn events into model inputs.

The model input is deepctr-torch's layout: one float32 matrix with a column range per feature
(:attr:`rf2.data.schema.Schema.columns`), indices stored as exact float32 integers. Rows are built
on demand for any set of events (a round's clients, a test batch), so no dataset-sized matrix is
ever materialised.

Two kinds of rows:

* :meth:`FeatureEncoder.encode` — rows for *events* (row indices of ``dataset.events``); the click
  history of an event is the user's clicks strictly before it (:mod:`rf2.data.history`);
* :meth:`FeatureEncoder.encode_pairs` — rows for arbitrary ``(user, item)`` pairs, e.g. every item
  for a user when ranking the whole catalogue (:mod:`rf2.evaluation.ranking`). There is no event,
  so the click history is *everything the user clicked in the training split* (the state of the
  user's device once training is over), and event-level features must be supplied by the caller.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .dataset import InteractionDataset
from .history import ClickHistory
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
        return torch.as_tensor(self.encode_numpy(idx))

    def labels(self, idx: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.dataset.label[np.asarray(idx, dtype=np.int64)].astype(np.float32))

    def dense_columns(self) -> list[tuple[int, int]]:
        return [self.schema.columns[f.name] for f in self.schema.features if isinstance(f, DenseFeature)]

    # -- arbitrary (user, item) pairs -------------------------------------------------------------
    @property
    def train_history(self) -> ClickHistory:
        """Each user's clicks in the training split, as a :class:`ClickHistory` indexed by *user*
        (``begin[u]:end[u]`` into ``clicked``), in time order (ties by item id, the event order)."""
        if getattr(self, "_train_history", None) is None:
            ds = self.dataset
            tr = ds.train_index
            clicks = tr[ds.label[tr] == 1]  # grouped by user, in (timestamp, item) order
            counts = np.bincount(ds.user[clicks], minlength=ds.n_users)
            ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._train_history = ClickHistory(ds.item[clicks].astype(np.int32), ptr[:-1], ptr[1:])
        return self._train_history

    def _pair_plan(self) -> list[tuple[int, int, str, object]]:
        """Per column range: how to fill it for pairs (kind, payload), built once."""
        if getattr(self, "_pair_columns", None) is not None:
            return self._pair_columns
        ds, plan = self.dataset, []
        for f in self.schema.features:
            start, end = self.schema.columns[f.name]
            if isinstance(f, SequenceFeature) and f.source == "history":
                plan.append((start, end, "history", (f.maxlen, ds.items[f.name.removeprefix("hist_")].to_numpy())))
            elif isinstance(f, SequenceFeature):
                plan.append((start, end, "item", ds.item_sequences[f.name]))
            elif f.source in ("user", "item"):
                frame = ds.users if f.source == "user" else ds.items
                plan.append((start, end, f.source, frame[f.name].to_numpy()))
            else:  # event-level: only the caller can know it
                plan.append((start, end, "event", f.name))
            if isinstance(f, SequenceFeature) and f.length_name:
                lstart, lend = self.schema.columns[f.length_name]
                plan.append((lstart, lend, "length", (start, end)))
        self._pair_columns = plan
        return plan

    def encode_pairs_numpy(
        self, users: np.ndarray, items: np.ndarray, event_features: Mapping[str, object] | None = None
    ) -> np.ndarray:
        """Model input rows for the pairs ``(users[j], items[j])`` (broadcast against each other, so
        ``encode_pairs(u, np.arange(n_items))`` scores one user against the whole catalogue).

        * user features come from ``dataset.users``, item features from ``dataset.items`` and
          ``dataset.item_sequences``;
        * click-history features hold the user's clicks in the *training split* (the most recent
          ``maxlen``, oldest first, 0-padded, as for events), whatever the item: at evaluation time
          the history is everything the user clicked in training. For a training event this differs
          from :meth:`encode`, whose history stops strictly before the event;
        * event-level features (``source="event"``) do not exist for a pair that is not an event:
          pass them in ``event_features`` (feature name -> scalar, ``[n]`` or ``[n, width]`` values);
          a schema with event-level features and no values for them is an error.
        """
        users, items = np.broadcast_arrays(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        users, items = users.ravel(), items.ravel()
        ds = self.dataset
        if users.size and (users.min() < 0 or users.max() >= ds.n_users):
            raise ValueError(f"encode_pairs: user ids must lie in [0, {ds.n_users}); got {users.min()}..{users.max()}")
        if items.size and (items.min() < 0 or items.max() >= ds.n_items):
            raise ValueError(f"encode_pairs: item ids must lie in [0, {ds.n_items}); got {items.min()}..{items.max()}")
        plan = self._pair_plan()
        event_features = dict(event_features or {})
        needed = [payload for _, _, kind, payload in plan if kind == "event"]
        missing = [n for n in needed if n not in event_features]
        if missing:
            raise ValueError(
                f"encode_pairs: the schema has event-level features {missing}, which an arbitrary (user, item) "
                f"pair does not have; pass their values in event_features={{name: value}}"
            )
        unknown = sorted(set(event_features) - set(needed))
        if unknown:
            raise ValueError(f"encode_pairs: {unknown} are not event-level features of this schema (those are {needed})")
        n = users.size
        X = np.zeros((n, self.schema.n_columns), dtype=np.float32)
        for start, end, kind, payload in plan:
            if kind == "history":
                maxlen, values = payload
                val = self.train_history.padded(users, maxlen, values)
            elif kind == "user":
                val = payload[users]
            elif kind == "item":
                val = payload[items]
            elif kind == "length":
                s, e = payload
                val = (X[:, s:e] != 0).sum(axis=1)
            else:
                val = self._event_values(payload, event_features[payload], n, end - start)
            X[:, start:end] = val.reshape(n, end - start) if val.ndim == 1 else val
        return X

    @staticmethod
    def _event_values(name: str, value: object, n: int, width: int) -> np.ndarray:
        v = np.asarray(value, dtype=np.float32)
        if v.ndim == 1 and width == 1 and v.size == n:
            v = v[:, None]
        try:
            return np.broadcast_to(v, (n, width))
        except ValueError:
            raise ValueError(
                f"encode_pairs: event_features[{name!r}] has shape {v.shape}; expected a scalar, one value per "
                f"pair, or something that broadcasts to {(n, width)}"
            ) from None

    def encode_pairs(
        self, users: np.ndarray, items: np.ndarray, event_features: Mapping[str, object] | None = None
    ) -> torch.Tensor:
        """Model input rows for ``(user, item)`` pairs (see :meth:`encode_pairs_numpy`)."""
        return torch.as_tensor(self.encode_pairs_numpy(users, items, event_features))
