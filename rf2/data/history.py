"""The user's click history as a model input, built only from strictly earlier events.

For an event of user ``u`` at time ``t`` the history is the list of items ``u`` clicked at times
``< t`` (clicks in the same second are *not* history: their order is unknown, and including them
would leak the label of a simultaneous event). The most recent ``maxlen`` clicks are kept, oldest
first, left-aligned and 0-padded on the right (deepctr-torch's DIN derives its attention mask from
the true length, which assumes this alignment).

Storage is two ``int64`` per event (``begin``, ``end`` into one shared array of clicked items), so
full-size logs (MovieLens-20M: 20M events) stay small; padded matrices are built per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClickHistory:
    clicked: np.ndarray  # int32 item ids of the clicks, grouped by user in time order
    begin: np.ndarray  # per event: index in `clicked` of the user's first click
    end: np.ndarray  # per event: one past the user's last click strictly before the event

    @classmethod
    def build(cls, user: np.ndarray, timestamp: np.ndarray, label: np.ndarray, item: np.ndarray) -> "ClickHistory":
        """Events must be sorted by ``(user, timestamp, item)``."""
        user = np.asarray(user, dtype=np.int64)
        _, ts_rank = np.unique(np.asarray(timestamp), return_inverse=True)
        ts_rank = ts_rank.astype(np.int64) + 1  # 1..R; 0 marks "before any time"
        width = int(ts_rank.max()) + 1 if ts_rank.size else 1
        key = user * width + ts_rank  # sorted, since events are sorted by (user, timestamp)
        clicks = np.flatnonzero(np.asarray(label) == 1)
        click_key = key[clicks]
        end = np.searchsorted(click_key, key, side="left")
        begin = np.searchsorted(click_key, user * width, side="left")
        return cls(np.asarray(item)[clicks].astype(np.int32), begin.astype(np.int64), end.astype(np.int64))

    def lengths(self, idx: np.ndarray, maxlen: int) -> np.ndarray:
        return np.minimum(self.end[idx] - self.begin[idx], maxlen)

    def padded(self, idx: np.ndarray, maxlen: int, values: np.ndarray) -> np.ndarray:
        """``[len(idx), maxlen]`` matrix of ``values[item]`` for the most recent clicks before each
        event, oldest first, 0-padded (``values`` maps an item id to the recorded feature value,
        which must be >= 1 so that 0 can mark padding)."""
        end = self.end[idx]
        n = np.minimum(end - self.begin[idx], maxlen)
        start = end - n
        offs = np.arange(maxlen)
        pos = start[:, None] + offs[None, :]
        valid = offs[None, :] < n[:, None]
        if self.clicked.size == 0:
            return np.zeros((len(idx), maxlen), dtype=values.dtype)
        out = values[self.clicked[np.where(valid, pos, 0)]]
        out[~valid] = 0
        return out
