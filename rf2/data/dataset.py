"""The canonical dataset every loader returns.

An :class:`InteractionDataset` is an interaction log plus side information:

``events``
    one row per (user, item) interaction, sorted by ``(user, timestamp, item)``:
    ``user`` (int32, ``0..n_users-1``), ``item`` (int32, ``0..n_items-1``), ``label`` (int8, 1 =
    click), ``timestamp`` (int64), ``is_test`` (bool, see :func:`rf2.data.split.temporal_split`),
    and any event-level feature columns. A leave-one-out dataset (:func:`rf2.data.split.leave_one_out`)
    also has ``is_valid`` (bool): validation events, neither training nor test events.
``users`` / ``items``
    one row per user / item (index = id) with the encoded user / item features.
``item_sequences``
    multi-valued item features (e.g. genres) as 0-padded ``[n_items, maxlen]`` int arrays.
``schema``
    the model inputs, in order (:class:`rf2.data.schema.Schema`).
``eval_negatives``
    optional ``[n_users, k]`` item indices: each user's fixed evaluation negatives for sampled
    (1 + k candidates) HR@K / NDCG@K, shared by validation and test (leave-one-out datasets only).

In federated simulation a *client* is a user: it holds exactly its own events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from .history import ClickHistory
from .schema import DenseFeature, Schema, SequenceFeature, SparseFeature

EVENT_COLUMNS = ("user", "item", "label", "timestamp", "is_test")


class DataFormatError(ValueError):
    """A data file or frame does not have the documented format."""


@dataclass
class InteractionDataset:
    name: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    schema: Schema
    item_sequences: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # where the raw files came from (path, package, URL)
    eval_negatives: np.ndarray | None = None  # [n_users, k] sampled evaluation negatives (leave-one-out)

    def __post_init__(self) -> None:
        self.validate()

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return len(self.events)

    # -- arrays (cached views of the event columns) --------------------------------------------
    @cached_property
    def user(self) -> np.ndarray:
        return self.events["user"].to_numpy()

    @cached_property
    def item(self) -> np.ndarray:
        return self.events["item"].to_numpy()

    @cached_property
    def label(self) -> np.ndarray:
        return self.events["label"].to_numpy()

    @cached_property
    def is_test(self) -> np.ndarray:
        return self.events["is_test"].to_numpy()

    @cached_property
    def is_valid(self) -> np.ndarray:
        """Validation events (all False unless the dataset has an ``is_valid`` column)."""
        if "is_valid" in self.events.columns:
            return self.events["is_valid"].to_numpy()
        return np.zeros(len(self.events), dtype=bool)

    @cached_property
    def train_index(self) -> np.ndarray:
        """Indices of training events (neither test nor validation), grouped by user (events are
        sorted by user)."""
        return np.flatnonzero(~self.is_test & ~self.is_valid)

    @cached_property
    def valid_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_valid)

    @cached_property
    def history(self) -> ClickHistory:
        """Strictly-earlier clicks of every event (:mod:`rf2.data.history`)."""
        ev = self.events
        return ClickHistory.build(self.user, ev["timestamp"].to_numpy(), self.label, self.item)

    @cached_property
    def test_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_test)

    @cached_property
    def train_ptr(self) -> np.ndarray:
        """CSR pointer over :attr:`train_index`: user u's training events are
        ``train_index[train_ptr[u]:train_ptr[u+1]]``."""
        counts = np.bincount(self.user[self.train_index], minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @cached_property
    def train_counts(self) -> np.ndarray:
        return np.diff(self.train_ptr)

    def summary(self) -> dict[str, float]:
        ev = self.events
        return {
            "users": self.n_users,
            "items": self.n_items,
            "events": self.n_events,
            "click_rate": float(ev["label"].mean()) if len(ev) else float("nan"),
            "train_events": int(self.train_index.size),
            "test_events": int(ev["is_test"].sum()),
            **({"valid_events": int(self.valid_index.size)} if "is_valid" in ev.columns else {}),
            "users_with_train_events": int((self.train_counts > 0).sum()),
        }

    # -- checks ---------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`DataFormatError` naming the first problem found."""
        for part in ("events", "users", "items"):
            if not isinstance(getattr(self, part), pd.DataFrame):
                raise DataFormatError(f"{self.name}: {part} must be a pandas DataFrame, got {type(getattr(self, part)).__name__}")
        ev = self.events
        missing = [c for c in EVENT_COLUMNS if c not in ev.columns]
        if missing:
            raise DataFormatError(f"{self.name}: events lack columns {missing}; required: {list(EVENT_COLUMNS)}")
        if len(ev) == 0:
            raise DataFormatError(f"{self.name}: the interaction log is empty")
        for col in ("user", "item", "label", "timestamp"):
            if not _is_integral(ev[col].to_numpy()):
                raise DataFormatError(f"{self.name}: event column {col!r} must hold integers (no NaN), got dtype {ev[col].dtype}")
        if ev["is_test"].dtype != bool:
            raise DataFormatError(f"{self.name}: event column 'is_test' must be boolean, got dtype {ev['is_test'].dtype}")
        if "is_valid" in ev.columns:
            if ev["is_valid"].dtype != bool:
                raise DataFormatError(f"{self.name}: event column 'is_valid' must be boolean, got dtype {ev['is_valid'].dtype}")
            if (ev["is_valid"].to_numpy() & ev["is_test"].to_numpy()).any():
                raise DataFormatError(f"{self.name}: an event cannot be both a validation and a test event")
        if self.eval_negatives is not None:
            neg = np.asarray(self.eval_negatives)
            if neg.ndim != 2 or neg.shape[0] != self.n_users or not _is_integral(neg):
                raise DataFormatError(f"{self.name}: eval_negatives must be an integer [n_users={self.n_users}, k] array, "
                                      f"got shape {neg.shape}")
            if neg.size and (neg.min() < 0 or neg.max() >= self.n_items):
                raise DataFormatError(f"{self.name}: eval_negatives must be item indices in [0, {self.n_items})")
        user, item = ev["user"].to_numpy(), ev["item"].to_numpy()
        if user.min() < 0 or user.max() >= self.n_users:
            raise DataFormatError(f"{self.name}: event user ids must lie in [0, {self.n_users}); got {user.min()}..{user.max()}")
        if item.min() < 0 or item.max() >= self.n_items:
            raise DataFormatError(f"{self.name}: event item ids must lie in [0, {self.n_items}); got {item.min()}..{item.max()}")
        labels = np.unique(ev["label"].to_numpy())
        if not np.isin(labels, [0, 1]).all():
            raise DataFormatError(f"{self.name}: labels must be 0/1, found {labels[:10].tolist()}")
        if not _is_sorted(user, ev["timestamp"].to_numpy(), item):
            raise DataFormatError(f"{self.name}: events must be sorted by (user, timestamp, item)")
        for f in self.schema.features:
            self._check_feature(f)

    def _check_feature(self, f) -> None:
        frames = {"user": self.users, "item": self.items, "event": self.events}
        if isinstance(f, SequenceFeature):
            if f.source == "history":
                target = f.name.removeprefix("hist_")
                if target not in self.items.columns:
                    raise DataFormatError(f"{self.name}: history feature {f.name!r} records item feature {target!r}, "
                                          f"which the item table lacks (columns {list(self.items.columns)})")
                recorded = self.items[target].to_numpy()
                if not _is_integral(recorded):
                    raise DataFormatError(f"{self.name}: item feature {target!r} must hold integers (no NaN)")
                if recorded.min() < 1:
                    raise DataFormatError(
                        f"{self.name}: item feature {f.name.removeprefix('hist_')!r} is recorded in the click "
                        f"history, so its values must start at 1 (0 pads the history)"
                    )
                return
            arr = self.item_sequences.get(f.name)
            if arr is None or f.source != "item":
                raise DataFormatError(f"{self.name}: sequence feature {f.name!r} must be an item sequence in item_sequences")
            if arr.shape != (self.n_items, f.maxlen):
                raise DataFormatError(f"{self.name}: {f.name!r} has shape {arr.shape}, expected {(self.n_items, f.maxlen)}")
            values = arr
        else:
            frame = frames.get(f.source)
            if frame is None or f.name not in frame.columns:
                raise DataFormatError(f"{self.name}: feature {f.name!r} not found in the {f.source} table")
            values = frame[f.name].to_numpy()
        if isinstance(f, (SparseFeature, SequenceFeature)):
            if not _is_integral(np.asarray(values)):
                raise DataFormatError(f"{self.name}: feature {f.name!r} must hold integer codes (no NaN), got dtype "
                                      f"{np.asarray(values).dtype}")
            if values.size and (values.min() < 0 or values.max() >= f.vocab_size):
                raise DataFormatError(
                    f"{self.name}: feature {f.name!r} values {values.min()}..{values.max()} "
                    f"outside its vocabulary [0, {f.vocab_size})"
                )
        elif isinstance(f, DenseFeature):
            if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
                raise DataFormatError(f"{self.name}: dense feature {f.name!r} must be numeric, got dtype {values.dtype}")
            if not np.isfinite(values.astype(np.float64)).all():
                raise DataFormatError(f"{self.name}: dense feature {f.name!r} has NaN or infinite values")


def _is_integral(values: np.ndarray) -> bool:
    """Integer (or bool) values; floats only if every value is a whole number (no NaN)."""
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        return True
    if np.issubdtype(values.dtype, np.floating):
        return bool(np.isfinite(values).all() and (values == np.floor(values)).all())
    return False


def _is_sorted(*keys: np.ndarray) -> bool:
    """Whether rows are in lexicographic order of ``keys`` (most significant first)."""
    if len(keys[0]) < 2:
        return True
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for k in keys:
        d = np.diff(k.astype(np.int64))
        if (d[tied] < 0).any():
            return False
        tied &= d == 0
    return True
