"""MovieLens-1M: RF² preprocessing (``ml-1m``) and HeteFedRec's implicit protocol (``ml-1m-implicit``).

Original GroupLens files (latin-1, fields separated by ``::``):

* ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (1,000,209 ratings, 1-5 stars);
* ``users.dat``: ``UserID::Gender::Age::Occupation::Zip-code`` (6,040 users; age is the lower
  bound of one of 7 age groups, occupation a code 0-20);
* ``movies.dat``: ``MovieID::Title::Genres`` (3,883 movies; genres ``|``-separated).

``ml-1m`` (RF² §5.1, exactly as ``ml-100k``): click = rating >= ``click_threshold``; user
features age group, gender, occupation (no user id) + the click history ``hist_movie_id``; item
features movie id and genres; per-user temporal split (last 10% of each user's events by time for
test, a 10-click history: the RF² authors' simulator's defaults; rf2 0.1 used 20% and 50). Items are
all movies of ``movies.dat``.

``ml-1m-implicit`` (HeteFedRec, Yuan et al. 2024, §V-A): every rating is a positive (rating and
time are ignored), negatives are sampled 1:4, and each user's interactions are split 80/20 at
random. It reads either the implicit copy (``interactions.csv.gz``: header ``user_id,movie_id``,
the (user, movie) pairs of ``ratings.dat`` in file order, gzip) or, when that is absent, the pairs
of an original ``ratings.dat``; both give the same dataset. See :func:`load_ml1m_implicit`.

Checksums: ``users.dat``, ``movies.dat`` and ``README`` are pinned (sha256 of the GroupLens files);
the sha256 of the original ``ratings.dat`` is not pinned (no copy was available to compute it,
and GroupLens publishes only the md5 of ``ml-1m.zip``, which a download checks).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import DataFormatError, InteractionDataset
from .fetch import DataNotFoundError, DataSpec, Located, cache_dir
from .loading import ZipRelease, check_files, codes_in, event_order, locate_pinned, read_columns, read_dat_lines
from .loading import read_dat_numeric, sorted_unique, split_counts
from .rated_log import HISTORY_MAXLEN, TEST_FRACTION, build_rated_log, check_unique_pairs
from .schema import Schema, SequenceFeature, SparseFeature
from .split import LOO_MIN_INTERACTIONS, check_split, leave_one_out

URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
#: Genres in the order of the ML-1M README (code = index + 1; 0 pads).
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: ``users.dat`` age codes: the lower bound of each age group (feature value = index).
AGES = (1, 18, 25, 35, 45, 50, 56)
#: ``users.dat`` occupation codes 0..20 (feature value = code).
OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
GENDERS = ("M", "F")
MAX_GENRES = 6  # the most genres any MovieLens-1M movie has

_SHA256_SIDE = {
    "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
    "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
}
#: sha256 of the original files (``ratings.dat``: not pinned, see the module docstring).
ML1M_SHA256 = {**_SHA256_SIDE}
ML1M_RELEASE = ZipRelease(
    name="ml-1m",
    url=URL,
    folder="ml-1m",
    md5="c4d9eecfca2ab87c1945afe126590906",  # GroupLens' published md5 (ml-1m.zip.md5)
    files=("ratings.dat", "users.dat", "movies.dat", "README"),
    sha256={**_SHA256_SIDE, "README": "2d5ddce86ccbd247207456165827b4b9ddf27282bca93807d4c763e28414f133"},
    homepage="https://grouplens.org/datasets/movielens/1m/",
)
ML1M = DataSpec(
    name="ml-1m",
    files=("ratings.dat", "users.dat", "movies.dat"),
    manual_hint=f"download it with load_dataset('ml-1m', download=True) (from {URL}, md5-checked)",
)
_UNPINNED = "GroupLens publishes only the md5 of ml-1m.zip, which load_dataset(..., download=True) checks"

#: sha256 of the implicit copy (computed from ../shared/data/ml-1m-implicit, equal to its SHA256SUMS).
ML1M_IMPLICIT_SHA256 = {
    "interactions.csv.gz": "d0f75d2a7d55ea4d3b534d0a6946e426880780e809650dfa50ed633c3e08a854",
    **_SHA256_SIDE,
}
ML1M_IMPLICIT = DataSpec(
    name="ml-1m-implicit",
    files=("interactions.csv.gz", "users.dat", "movies.dat"),
    manual_hint=(
        "there is no official download of this copy (interactions.csv.gz = the (user_id, movie_id) pairs of "
        "MovieLens-1M's ratings.dat in file order, with a 'user_id,movie_id' header, gzipped; users.dat and "
        "movies.dat are the GroupLens originals)"
    ),
)


# -- reading ------------------------------------------------------------------------------------------------
def read_users(path) -> pd.DataFrame:
    """``users.dat`` -> ``user_raw``, ``age_bucket`` (index in :data:`AGES`), ``gender`` (0 M, 1 F),
    ``occupation`` (0..20)."""
    what = "MovieLens-1M users.dat (UserID::Gender::Age::Occupation::Zip-code)"
    rows = []
    for lineno, (uid, gender, age, occ, _zip) in read_dat_lines(path, 5, what):
        try:
            u, a, o = int(uid), int(age), int(occ)
        except ValueError:
            raise DataFormatError(f"{path}: not a valid {what}: line {lineno}: non-integer id, age or occupation") from None
        if a not in AGES:
            raise DataFormatError(f"{path}: line {lineno}: age {a} is not one of the age codes {list(AGES)}")
        if gender not in GENDERS:
            raise DataFormatError(f"{path}: line {lineno}: gender {gender!r} is not one of {list(GENDERS)}")
        if not 0 <= o < len(OCCUPATIONS):
            raise DataFormatError(f"{path}: line {lineno}: occupation {o} is not a code in 0..{len(OCCUPATIONS) - 1}")
        rows.append((u, AGES.index(a), GENDERS.index(gender), o))
    if not rows:
        raise DataFormatError(f"{path}: no users")
    users = pd.DataFrame(rows, columns=["user_raw", "age_bucket", "gender", "occupation"]).astype(np.int32)
    if users["user_raw"].duplicated().any():
        raise DataFormatError(f"{path}: duplicate user ids {users['user_raw'][users['user_raw'].duplicated()].tolist()[:5]}")
    return users.sort_values("user_raw", ignore_index=True)


def read_movies(path) -> tuple[np.ndarray, np.ndarray]:
    """``movies.dat`` -> (sorted movie ids, ``[n, MAX_GENRES]`` genre codes, 1-based, 0-padded)."""
    what = "MovieLens-1M movies.dat (MovieID::Title::Genres)"
    lookup = {g: i + 1 for i, g in enumerate(GENRES)}
    ids, codes = [], []
    for lineno, (mid, _title, genres) in read_dat_lines(path, 3, what):
        try:
            ids.append(int(mid))
        except ValueError:
            raise DataFormatError(f"{path}: not a valid {what}: line {lineno}: movie id {mid!r} is not an integer") from None
        names = [g for g in genres.split("|") if g]
        bad = [g for g in names if g not in lookup]
        if bad or len(names) > MAX_GENRES:
            raise DataFormatError(
                f"{path}: line {lineno}: genres {names} (expected at most {MAX_GENRES} of {list(GENRES)})"
            )
        codes.append([lookup[g] for g in names])
    ids = np.array(ids, dtype=np.int32)
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError(f"{path}: duplicate movie ids")
    genres = np.zeros((len(ids), MAX_GENRES), dtype=np.int32)
    for row, c in enumerate(codes):
        genres[row, : len(c)] = c
    order = np.argsort(ids, kind="stable")
    return ids[order], genres[order]


def read_ratings(path) -> dict[str, np.ndarray]:
    """``ratings.dat`` -> ``user_raw`` (int32), ``item_raw`` (int32), ``rating`` (int8), ``timestamp`` (int64)."""
    return read_dat_numeric(
        path, ["user_raw", "item_raw", "rating", "timestamp"],
        {"user_raw": np.int32, "item_raw": np.int32, "rating": np.int8, "timestamp": np.int64},
        "MovieLens-1M ratings.dat (UserID::MovieID::Rating::Timestamp)",
    )


def read_interactions(path) -> dict[str, np.ndarray]:
    """``interactions.csv.gz`` -> ``user_raw``, ``item_raw`` (int32), in file order."""
    cols = read_columns(path, {"user_id": np.int32, "movie_id": np.int32}, "ml-1m-implicit interactions file "
                        "(gzipped CSV with header user_id,movie_id)")
    return {"user_raw": cols["user_id"], "item_raw": cols["movie_id"]}


def _user_features() -> list[SparseFeature]:
    return [
        SparseFeature("age_bucket", len(AGES), "user"),
        SparseFeature("gender", len(GENDERS), "user"),
        SparseFeature("occupation", len(OCCUPATIONS), "user"),
    ]


# -- ml-1m: RF² preprocessing ---------------------------------------------------------------------------------
def load_ml1m(
    path: str | None = None,
    download: bool = False,
    click_threshold: int = 5,
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    verify: bool = True,
    split: str = "temporal",
    min_interactions: int = LOO_MIN_INTERACTIONS,
    seed: int = 0,
) -> InteractionDataset:
    """MovieLens-1M (6,040 users, 3,883 movies, 1,000,209 ratings), RF² preprocessing (RF² §5.1;
    see the module docstring; 90/10 temporal split and a 10-click history by
    default, as the RF² authors' simulator). ``split="leave-one-out"``: FedEM's implicit protocol
    instead (:func:`rf2.data.split.leave_one_out`: every rating a positive, users with fewer than
    ``min_interactions`` ratings dropped, newest by (timestamp, item) -> test, second newest ->
    validation, 99 evaluation negatives per user drawn with ``seed``). ``verify`` checks the pinned sha256 of ``users.dat``/``movies.dat``
    and warns that ``ratings.dat`` has none; ``download=True`` fetches ``ml-1m.zip`` from GroupLens
    (md5-checked) when no copy is found."""
    check_split(split, min_interactions)
    found = locate_pinned(ML1M, ML1M_SHA256, path=path, download=download, release=ML1M_RELEASE)
    check_files(found, ML1M.files, verify, _UNPINNED)
    ratings = read_ratings(found.path / "ratings.dat")
    users = read_users(found.path / "users.dat")
    item_ids, genres = read_movies(found.path / "movies.dat")
    ds = build_rated_log(
        "ml-1m",
        ratings,
        user_ids=users["user_raw"].to_numpy(), item_ids=item_ids,
        users=users.drop(columns="user_raw").rename_axis("user"), user_features=_user_features(),
        genres=genres, n_genres=len(GENRES),
        click_threshold=click_threshold, rating_range=(1, 5), test_fraction=test_fraction,
        history_maxlen=history_maxlen, users_listed_in="users.dat", items_listed_in="movies.dat",
        source=found.origin,
    )
    if split == "leave-one-out":
        ds = leave_one_out(ds, min_interactions, seed=seed, order="timestamp")
    return ds


# -- ml-1m-implicit: HeteFedRec's protocol ------------------------------------------------------------------------
def _find_implicit(path, download: bool) -> tuple[Located, str]:
    """The implicit copy, else an original ML-1M (ratings.dat pairs); ``kind`` says which."""
    if path is not None:
        try:
            return locate_pinned(ML1M_IMPLICIT, ML1M_IMPLICIT_SHA256, path=path), "implicit"
        except DataNotFoundError as e1:
            try:
                return locate_pinned(ML1M, ML1M_SHA256, path=path), "ratings"
            except DataNotFoundError:
                raise DataNotFoundError(
                    f"{e1} The original MovieLens-1M files {list(ML1M.files)} are accepted there too."
                ) from None
    try:
        return locate_pinned(ML1M_IMPLICIT, ML1M_IMPLICIT_SHA256), "implicit"
    except DataNotFoundError as e1:
        try:
            return locate_pinned(ML1M, ML1M_SHA256, download=download, release=ML1M_RELEASE), "ratings"
        except DataNotFoundError:
            raise DataNotFoundError(
                f"{e1} Alternatively, put the original MovieLens-1M files {list(ML1M.files)} in "
                f"{cache_dir() / 'ml-1m'} (or $RF2_DATA_DIR/ml-1m), or fetch them from GroupLens with "
                f"load_dataset('ml-1m-implicit', download=True): the (user, movie) pairs of ratings.dat "
                f"give the same dataset."
            ) from None


def load_ml1m_implicit(
    path: str | None = None,
    download: bool = False,
    negatives: int = 4,
    test_fraction: float = 0.2,
    seed: int = 0,
    history: bool = False,
    history_maxlen: int = 50,
    verify: bool = True,
    split: str = "random",
    min_interactions: int = LOO_MIN_INTERACTIONS,
) -> InteractionDataset:
    """MovieLens-1M as implicit feedback, HeteFedRec's protocol (Yuan et al. 2024, §V-A).

    ``split="random"`` (default) is HeteFedRec's protocol below. ``split="leave-one-out"`` is
    FedEM's instead (:func:`rf2.data.split.leave_one_out`): there is no time in this copy, so
    **file order** stands in for it: each user's last pair in the file (``interactions.csv.gz`` or
    ``ratings.dat``, the same order) -> test, the one before -> validation, the rest -> train
    (``timestamp`` = the pair's position among the user's pairs in the file, so there are no ties);
    users with fewer than ``min_interactions`` pairs dropped; no training negatives in the data
    (``negatives`` and ``test_fraction`` unused); 99 evaluation negatives per user drawn with ``seed``.

    * **positives**: every (user, movie) pair of the log (1,000,209; 6,040 users; the 3,706 movies
      with at least one rating are the items);
    * **split**: each user's positives are put in a random order (seeded); the last
      ``floor(test_fraction * n)`` of them (at least 1, never all, as in
      :func:`rf2.data.split.temporal_split`) are test positives, the rest training positives;
    * **negatives**: ``negatives`` per positive, train and test alike (so test AUC is defined),
      each drawn uniformly from the items the user never interacted with (never one of the user's
      positives; drawn with replacement, so a user may get the same negative item twice), once, with
      the dataset. ``negatives=0`` loads the positives only (the same 80/20 split: the split is drawn
      before the negatives), for HeteFedRec's negatives **re-drawn every round**: run it with
      ``train_negatives = 4`` (:mod:`rf2.clients.negatives`, uniformly among the items the user never
      interacted with, train or test). Its test events are then positives only: test AUC is
      undefined (``nan``) and the full ranking (``ranking_k``) is the metric;
    * **timestamp** (there is none in the data): a pseudo-time, the rank of the positive in the
      user's random order for training positives (0, 1, ...), and the number of training positives
      for every test positive; a negative carries its positive's pseudo-time. Hence
      ``is_test`` is "the last pseudo-time", and the click history (``history=True``:
      ``hist_movie_id``, strictly earlier positives) of a training event holds the training
      positives ranked before it, and that of a test event all the user's training positives (never
      a test positive);
    * **features**: ``user_id`` (user index + 1 = GroupLens UserID, table ``user_id``, vocabulary
      ``n_users + 1``; row 0 unused, as for ``movie_id``), age group, gender, occupation;
      ``movie_id`` (item index + 1, vocabulary ``n_items + 1``) and genres. NCF uses ``user_id``
      and ``movie_id``; unlike RF², HeteFedRec's models do use the user id (its embedding stays on
      the client).

    The randomness (order, negatives) comes from ``numpy.random.default_rng(seed)`` only: the
    dataset is a deterministic function of the files, ``negatives``, ``test_fraction`` and ``seed``.
    """
    if not isinstance(negatives, (int, np.integer)) or isinstance(negatives, bool) or negatives < 0:
        raise ValueError(f"negatives must be an integer >= 0 (0 = positives only, for train_negatives), got {negatives!r}")
    if history_maxlen < 1:
        raise ValueError(f"history_maxlen must be >= 1, got {history_maxlen}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    check_split(split, min_interactions, ("random", "leave-one-out"))
    found, kind = _find_implicit(path, download)
    if kind == "implicit":
        check_files(found, ML1M_IMPLICIT.files, verify)
        pairs = read_interactions(found.path / "interactions.csv.gz")
        where = "interactions.csv.gz"
    else:
        check_files(found, ML1M.files, verify, _UNPINNED)
        pairs = read_ratings(found.path / "ratings.dat")
        where = "ratings.dat"
    users = read_users(found.path / "users.dat")
    movie_ids, movie_genres = read_movies(found.path / "movies.dat")
    return build_implicit(
        "ml-1m-implicit", pairs["user_raw"], pairs["item_raw"], users, movie_ids, movie_genres,
        negatives=negatives, test_fraction=test_fraction, seed=seed, history=history,
        history_maxlen=history_maxlen, log_name=where, source=f"{found.origin} ({where})", split=split,
        min_interactions=min_interactions,
    )


#: its training non-clicks are sampled negatives, not interactions (``ranking_exclude = "auto"``)
load_ml1m_implicit.implicit_feedback = True


def build_implicit(
    name: str,
    user_raw: np.ndarray,
    item_raw: np.ndarray,
    users: pd.DataFrame,
    movie_ids: np.ndarray,
    movie_genres: np.ndarray,
    negatives: int = 4,
    test_fraction: float = 0.2,
    seed: int = 0,
    history: bool = False,
    history_maxlen: int = 50,
    log_name: str = "the log",
    source: str = "",
    split: str = "random",
    min_interactions: int = LOO_MIN_INTERACTIONS,
) -> InteractionDataset:
    """HeteFedRec's implicit protocol on raw (user, movie) pairs (see :func:`load_ml1m_implicit`),
    or with ``split="leave-one-out"`` FedEM's, in file order."""
    loo = split == "leave-one-out"
    if loo:
        negatives = 0
    if len(user_raw) == 0:
        raise DataFormatError(f"{name}: {log_name} holds no interactions")
    user_ids = users["user_raw"].to_numpy()
    user, unknown = codes_in(user_ids, user_raw)
    if unknown.any():
        raise DataFormatError(
            f"{name}: {int(unknown.sum())} interactions in {log_name} name users that users.dat does not list "
            f"(e.g. {np.unique(user_raw[unknown])[:5].tolist()})"
        )
    item_ids = sorted_unique(item_raw)  # the items: movies with at least one interaction
    pos_in_movies, unlisted = codes_in(movie_ids, item_ids)
    if unlisted.any():
        raise DataFormatError(
            f"{name}: {log_name} names movies that movies.dat does not list (e.g. {item_ids[unlisted][:5].tolist()})"
        )
    item, _ = codes_in(item_ids, item_raw)
    n_users, n_items, n = len(user_ids), len(item_ids), len(user)
    check_unique_pairs(name, user, item, n_items)
    counts = np.bincount(user, minlength=n_users).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if negatives and (counts[counts > 0] >= n_items).any():
        raise DataFormatError(f"{name}: a user interacted with every item: no negatives can be sampled")

    rng = np.random.default_rng(seed)
    if loo:  # each user's positives in file order
        shuffle = np.argsort(user, kind="stable")
    else:  # each user's positives in a random order
        shuffle = np.lexsort((rng.random(n), user))
    u = user[shuffle]
    pos_item = item[shuffle]
    rank = np.arange(n, dtype=np.int64) - starts[u]
    n_train = counts - split_counts(counts, test_fraction)
    is_test = rank >= n_train[u]
    ts = rank if loo else np.minimum(rank, n_train[u])

    if negatives:
        # r-th item the user never interacted with = r + #{k : P[k] - k <= r}, P = the user's sorted positives
        by_item = np.lexsort((item, user))
        adjusted = item[by_item].astype(np.int64) - (np.arange(n) - starts[user[by_item]])
        keys = user[by_item].astype(np.int64) * n_items + adjusted
        r = rng.integers(0, (n_items - counts[u])[:, None], size=(n, negatives))
        query = u.astype(np.int64)[:, None] * n_items + r
        neg = np.searchsorted(keys, query, side="right")
        del keys, query, adjusted, by_item
        neg += r
        neg -= starts[u][:, None]
        del r
        all_user = np.concatenate([u, np.repeat(u, negatives)])
        all_item = np.concatenate([pos_item, neg.ravel()]).astype(np.int32)
        all_label = np.concatenate([np.ones(n, np.int8), np.zeros(n * negatives, np.int8)])
        all_ts = np.concatenate([ts, np.repeat(ts, negatives)])
        all_test = np.concatenate([is_test, np.repeat(is_test, negatives)])
        del neg
    else:
        all_user, all_item, all_label, all_ts, all_test = u, pos_item, np.ones(n, np.int8), ts, is_test
    del u, pos_item, rank, ts, is_test, shuffle
    order = event_order(all_user, all_ts, all_item)
    events = pd.DataFrame({
        "user": all_user[order].astype(np.int32), "item": all_item[order], "label": all_label[order],
        "timestamp": all_ts[order].astype(np.int64), "is_test": all_test[order],
    })
    del order, all_user, all_item, all_label, all_ts, all_test

    user_table = users.drop(columns="user_raw").reset_index(drop=True).rename_axis("user")
    user_table.insert(0, "user_id", np.arange(1, n_users + 1, dtype=np.int32))
    items = pd.DataFrame({"movie_id": np.arange(1, n_items + 1, dtype=np.int32)}, index=pd.RangeIndex(n_items, name="item"))
    features: list = [SparseFeature("user_id", n_users + 1, "user"), *_user_features()]
    if history:
        features.append(SequenceFeature("hist_movie_id", n_items + 1, history_maxlen, "history",
                                        embedding_name="movie_id", length_name="hist_length"))
    features += [SparseFeature("movie_id", n_items + 1, "item"), SequenceFeature("genres", len(GENRES) + 1, MAX_GENRES, "item")]
    ds = InteractionDataset(
        name=name,
        events=events,
        users=user_table,
        items=items,
        schema=Schema(tuple(features)),
        item_sequences={"genres": movie_genres[pos_in_movies]},
        description=(
            "MovieLens-1M implicit feedback (HeteFedRec §V-A): every rating is a positive, "
            + (f"{negatives} sampled negatives per positive (train and test)" if negatives else
               "no negatives in the data (positives only: train with train_negatives, re-drawn every round)")
            + f", random per-user {1 - test_fraction:.0%}/{test_fraction:.0%} "
            f"split (seed {seed}); features user id, age, gender, occupation"
            + (f", last {history_maxlen} training positives" if history else "")
            + "; movie id, genres; timestamp = pseudo-time (rank in the user's random order)"
        ) if not loo else (
            "MovieLens-1M implicit feedback: every rating is a positive; features user id, age, gender, occupation"
            + (f", last {history_maxlen} training positives" if history else "")
            + "; movie id, genres; timestamp = pseudo-time (position of the pair among the user's pairs in "
            f"{log_name}: file order)"
        ),
        source=source,
    )
    if loo:
        ds = leave_one_out(ds, min_interactions, seed=seed, order=f"file order of {log_name} (no timestamps)")
    return ds
