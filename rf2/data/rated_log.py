"""RF² preprocessing of a MovieLens-style rating log held in compact arrays (RF² §5.1).

Every MovieLens loader ends here (ml-100k after :func:`rf2.data.movielens.build_movielens` has
checked and encoded its frames). Written for logs of tens of millions of ratings: inputs are
numpy arrays (int32 ids, float32 ratings, int64 timestamps) rather than frames, ids are mapped
with lookup tables, and events are ordered with a single int64 key. ``tests/test_data_ml1m.py``
checks that the ml-100k frame path and the array path give the same dataset.

* a click is a rating ``>= click_threshold`` (5 stars by default, RF² §5.1 after DIN);
* no user id feature (RF² §5.1, privacy): the user features are whatever the dataset has (none
  for MovieLens-20M), plus the history of earlier clicks ``hist_movie_id`` (strictly earlier
  events, :mod:`rf2.data.history`), which shares the ``movie_id`` embedding table;
* item features: ``movie_id`` (item index + 1, 0 pads histories) and ``genres`` (multi-valued);
* per-user temporal split (:func:`rf2.data.split.temporal_split`).

Defaults follow the RF² authors' released simulator where the paper is silent: the last 10% of
each user's events (by time) are the test set (:data:`TEST_FRACTION`) and the click history
holds the last 10 clicks (:data:`HISTORY_MAXLEN`). rf2 0.1 used 20% and 50; pass
``test_fraction=0.2, history_maxlen=50`` for those.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import DataFormatError, InteractionDataset
from .loading import codes_in, event_order
from .schema import Schema, SequenceFeature, SparseFeature
from .split import temporal_split

#: Share of each user's events (the latest, by time) held out for test: 10%, as the RF² authors'
#: simulator does (90/10 per user). rf2 0.1 used 0.2.
TEST_FRACTION = 0.1
#: Length of the click history feature: the last 10 clicks, as the RF² authors' simulator uses.
#: rf2 0.1 used 50.
HISTORY_MAXLEN = 10


def check_unique_pairs(name: str, user: np.ndarray, item: np.ndarray, n_items: int) -> None:
    """A user rates a movie at most once."""
    key = user.astype(np.int64) * n_items + item
    key.sort()
    dup = np.flatnonzero(key[1:] == key[:-1])
    if dup.size:
        k = int(key[dup[0]])
        raise DataFormatError(
            f"{name}: a user rates a movie at most once; found {dup.size} duplicate (user, movie) pairs "
            f"(first: user index {k // n_items}, movie index {k % n_items})"
        )


def index_ids(name: str, what: str, ids: np.ndarray, values: np.ndarray, listed_in: str) -> np.ndarray:
    """Dense indices of ``values`` in the sorted ``ids``; values not listed are an error."""
    pos, missing = codes_in(ids, values)
    if missing.any():
        bad = np.unique(np.asarray(values)[missing])
        raise DataFormatError(
            f"{name}: {int(missing.sum())} ratings name {what} that {listed_in} does not list "
            f"(e.g. {bad[:5].tolist()})"
        )
    return pos


def build_rated_log(
    name: str,
    ratings: dict[str, np.ndarray],
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    users: pd.DataFrame,
    user_features: list[SparseFeature],
    genres: np.ndarray,
    n_genres: int,
    click_threshold: float = 5,
    rating_range: tuple[float, float] = (1, 5),
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    users_listed_in: str = "the user file",
    items_listed_in: str = "the movie file",
    source: str = "",
    description: str = "",
) -> InteractionDataset:
    """Build the canonical dataset.

    ``ratings`` holds the arrays ``user_raw``, ``item_raw`` (raw ids), ``rating`` and ``timestamp``;
    they are *removed* from it as soon as they are used, so that a caller passing its only reference
    lets their memory go before the event table is built (MovieLens-20M: 400 MB). ``user_ids`` / ``item_ids`` are the sorted raw ids defining the user / item indices; ``users``
    holds the encoded user features (row = user index); ``genres`` is ``[len(item_ids), maxlen]``
    with codes in ``1..n_genres`` (0 pads).
    """
    if history_maxlen < 1:
        raise ValueError(f"history_maxlen must be >= 1, got {history_maxlen}")
    lo, hi = rating_range
    if not lo <= click_threshold <= hi:
        raise ValueError(f"click_threshold must be a rating in [{lo:g}, {hi:g}], got {click_threshold}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rating = ratings["rating"]
    if len(rating) == 0:
        raise DataFormatError(f"{name}: no ratings")
    rmin, rmax = float(np.min(rating)), float(np.max(rating))
    if rmin < lo or rmax > hi:
        raise DataFormatError(f"{name}: ratings must lie in [{lo:g}, {hi:g}] stars, found {rmin:g}..{rmax:g}")
    n_users, n_items = len(user_ids), len(item_ids)
    if len(users) != n_users or genres.shape[0] != n_items:
        raise ValueError(f"{name}: users/genres tables do not match the id lists")

    del rating
    user = index_ids(name, "users", user_ids, ratings.pop("user_raw"), users_listed_in)
    item = index_ids(name, "movies", item_ids, ratings.pop("item_raw"), items_listed_in)
    check_unique_pairs(name, user, item, n_items)
    timestamp = np.asarray(ratings.pop("timestamp"), dtype=np.int64)
    order = event_order(user, timestamp, item)
    user = user[order]
    item = item[order]
    timestamp = timestamp[order]
    label = (np.asarray(ratings.pop("rating"))[order] >= click_threshold).astype(np.int8)
    del order
    events = pd.DataFrame({
        "user": user, "item": item, "label": label, "timestamp": timestamp,
        "is_test": temporal_split(user, test_fraction),
    })
    del user, item, label, timestamp

    items = pd.DataFrame({"movie_id": np.arange(1, n_items + 1, dtype=np.int32)}, index=pd.RangeIndex(n_items, name="item"))
    features = [
        *user_features,
        SequenceFeature("hist_movie_id", n_items + 1, history_maxlen, "history", embedding_name="movie_id",
                        length_name="hist_length"),
        SparseFeature("movie_id", n_items + 1, "item"),
        SequenceFeature("genres", n_genres + 1, max(genres.shape[1], 1), "item"),
    ]
    if genres.shape[1] == 0:
        genres = np.zeros((n_items, 1), dtype=np.int32)
    return InteractionDataset(
        name=name,
        events=events,
        users=users,
        items=items,
        schema=Schema(tuple(features)),
        item_sequences={"genres": genres.astype(np.int32, copy=False)},
        description=description or (
            f"MovieLens ({name}); click = rating >= {click_threshold:g}; user features "
            f"{[f.name for f in user_features]} + last {history_maxlen} clicked movies; item features movie id, "
            f"genres; last {test_fraction:.0%} of each user's events (by time) for test"
        ),
        source=source,
    )
