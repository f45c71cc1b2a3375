"""MovieLens with RF² preprocessing (RF² §5.1).

* a *click* is a rating ``>= click_threshold`` (5 stars by default, as RF² and DIN do); every
  other rating is a non-click;
* no user-ID feature (privacy, RF² §5.1); user features are what the dataset has (MovieLens-100K:
  age bucket, gender, occupation), plus the history of previously clicked movies
  (:mod:`rf2.data.history`, strictly earlier events only);
* item features: movie id and genres (a multi-valued feature, mean-pooled);
* per-user temporal split (:mod:`rf2.data.split`): the last ``test_fraction`` (10%) of each
  user's events by time are the test set; the history holds the last ``history_maxlen`` (10)
  clicks. Both defaults are the RF² authors' simulator's (the paper gives neither); rf2 0.1 used
  ``test_fraction=0.2, history_maxlen=50``, still available as options.

MovieLens-100K is read from the original GroupLens files (``u.data``, ``u.user``, ``u.item``) or
from the copy in the ``recbole==1.2.1`` wheel (``ml-100k.inter``/``.user``/``.item``); both give
the same dataset (``tests/test_data_movielens.py`` checks this against the GroupLens files).
"""
from __future__ import annotations

import csv
import importlib.util
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataFormatError, InteractionDataset
from .fetch import DataSpec, PackagedCopy, RemoteArchive, locate
from .fetch import verify as verify_files
from .rated_log import HISTORY_MAXLEN, TEST_FRACTION, build_rated_log
from .schema import SparseFeature
from .split import LOO_MIN_INTERACTIONS, check_split, leave_one_out

#: Genre names in the order of GroupLens' ``u.genre`` (index = flag column in ``u.item``).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
#: Occupations in the order of GroupLens' ``u.occupation``.
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)
#: Lower bounds of MovieLens-1M's age groups, used to bucket MovieLens-100K's raw ages.
AGE_BUCKETS = (0, 18, 25, 35, 45, 50, 56)
GENDERS = ("M", "F")
MAX_GENRES = 6  # the most genres any MovieLens-100K movie has

ML100K = DataSpec(
    name="ml-100k",
    files=("u.data", "u.user", "u.item"),
    remote=RemoteArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        folder="ml-100k",
        sha256={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
            "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
            "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
        },
        homepage="https://grouplens.org/datasets/movielens/100k/",
        sizes={"u.data": 1979173, "u.user": 22628, "u.item": 236344, "u.genre": 202, "u.occupation": 193,
               "README": 6750},
    ),
    packaged=(
        PackagedCopy(
            kind="recbole",
            find=lambda: _recbole_ml100k(),
            install_hint="pip install --no-deps recbole==1.2.1",
            sha256={
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
                "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            },
        ),
    ),
)


def _recbole_ml100k() -> Path | None:
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    return folder if (folder / "ml-100k.inter").is_file() else None


@dataclass(frozen=True)
class RawMovieLens:
    """MovieLens as read from disk, before any preprocessing (raw ids)."""

    ratings: pd.DataFrame  # user_raw, item_raw, rating, timestamp
    users: pd.DataFrame  # user_raw, age, gender, occupation (any may be absent)
    items: pd.DataFrame  # item_raw, genres (tuple of names)
    #: where each frame came from ("ratings", "users", "items" -> file path), for error messages
    files: dict[str, str] = field(default_factory=dict)


#: what each GroupLens file must hold, for error messages
UDATA_FORMAT = "u.data (user id, item id, rating 1-5, timestamp: 4 tab-separated integers per line)"
UUSER_FORMAT = "u.user (user id|age|gender M/F|occupation|zip code)"
UITEM_FORMAT = f"u.item (movie id|title|release date|video release date|IMDb URL|{len(GENRES)} genre flags 0/1: 24 fields)"


def _read_table(path: Path, what: str, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, header=None, **kw)
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        # ValueError covers pandas' EmptyDataError and non-integer ids; OverflowError an id or
        # timestamp beyond int64
        raise DataFormatError(f"{path}: not a valid {what} file ({_short(exc)})") from exc


def _short(exc: BaseException, limit: int = 200) -> str:
    if isinstance(exc, OverflowError):
        return "a number is too large for a 64-bit integer"
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _check_ratings(ratings: pd.DataFrame, path: Path, what: str) -> None:
    """MovieLens-100K ratings are whole stars, 1 to 5."""
    if ratings.empty:
        raise DataFormatError(f"{path}: no ratings (the file is empty); expected {what}")
    bad = ~ratings["rating"].between(1, 5)
    if bad.any():
        found = sorted(set(ratings.loc[bad, "rating"].tolist()))[:5]
        raise DataFormatError(f"{path}: ratings must be whole stars 1..5, found {found}; expected {what}")


def read_ml100k_files(folder: Path) -> RawMovieLens:
    """Read GroupLens' original ``u.data``, ``u.user``, ``u.item``.

    The files are plain separated values without quoting (a ``"`` in a title is a character); only
    empty fields count as missing. Any departure from the format is a :class:`DataFormatError`
    naming the file."""
    folder = Path(folder)
    plain = {"quoting": csv.QUOTE_NONE, "keep_default_na": False, "na_values": [""]}
    ratings = _read_table(
        folder / "u.data", UDATA_FORMAT,
        sep="\t", names=["user_raw", "item_raw", "rating", "timestamp"],
        dtype={"user_raw": np.int64, "item_raw": np.int64, "rating": np.int64, "timestamp": np.int64}, **plain,
    )
    _check_ratings(ratings, folder / "u.data", UDATA_FORMAT)
    users = _read_table(
        folder / "u.user", UUSER_FORMAT, sep="|",
        names=["user_raw", "age", "gender", "occupation", "zip"],
        dtype={"user_raw": np.int64, "age": np.int64, "gender": str, "occupation": str, "zip": str}, **plain,
    )
    if users.empty:
        raise DataFormatError(f"{folder / 'u.user'}: no users (the file is empty); expected {UUSER_FORMAT}")
    item_cols = ["item_raw", "title", "release", "video_release", "url", *[f"g{i}" for i in range(len(GENRES))]]
    items = _read_table(
        folder / "u.item", UITEM_FORMAT,
        sep="|", names=item_cols, encoding="latin-1", dtype={"item_raw": np.int64}, **plain,
    )
    if items.empty:
        raise DataFormatError(f"{folder / 'u.item'}: no movies (the file is empty); expected {UITEM_FORMAT}")
    flags = items[[f"g{i}" for i in range(len(GENRES))]]
    if flags.isna().any().any() or not flags.isin([0, 1]).all().all():
        raise DataFormatError(f"{folder / 'u.item'}: genre flags must be {len(GENRES)} columns of 0/1; expected {UITEM_FORMAT}")
    genres = [tuple(GENRES[j] for j in np.flatnonzero(row)) for row in flags.to_numpy()]
    return RawMovieLens(
        ratings=ratings,
        users=users[["user_raw", "age", "gender", "occupation"]],
        items=pd.DataFrame({"item_raw": items["item_raw"], "genres": genres}),
        files={"ratings": str(folder / "u.data"), "users": str(folder / "u.user"), "items": str(folder / "u.item")},
    )


def read_ml100k_recbole(folder: Path) -> RawMovieLens:
    """Read the RecBole atomic files (TSV with typed headers such as ``user_id:token``)."""
    folder = Path(folder)

    def atomic(name: str, want: dict[str, str]) -> pd.DataFrame:
        path = folder / name
        try:
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
        except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
            raise DataFormatError(f"{path}: not a valid RecBole atomic file ({_short(exc)})") from exc
        df.columns = [str(c).split(":")[0] for c in df.columns]
        missing = [c for c in want if c not in df.columns]
        if missing:
            raise DataFormatError(f"{path}: missing columns {missing}; expected a header with {list(want)}")
        if df.columns.duplicated().any():
            raise DataFormatError(f"{path}: duplicate columns {sorted(set(df.columns[df.columns.duplicated()]))}")
        return df[list(want)].rename(columns=want)

    def numeric(df: pd.DataFrame, columns: dict[str, str], path: Path) -> pd.DataFrame:
        """Columns as int64 (``int``: integers; ``whole``: numbers with no fractional part, e.g. 3.0)."""
        out = {}
        for col, kind in columns.items():
            v = df[col]
            try:
                x = pd.to_numeric(v, errors="raise") if kind == "whole" else v.astype(np.int64)
            except (ValueError, TypeError, OverflowError) as exc:
                raise DataFormatError(f"{path}: column {col!r} must hold integers ({_short(exc)})") from None
            if kind == "whole":
                x = x.to_numpy(dtype=np.float64)
                if not np.isfinite(x).all() or (x != np.floor(x)).any() or (np.abs(x) >= 2.0**63).any():
                    raise DataFormatError(f"{path}: column {col!r} must hold whole numbers")
                x = x.astype(np.int64)
            out[col] = x
        return df.assign(**out)

    inter_path = folder / "ml-100k.inter"
    inter = atomic("ml-100k.inter", {"user_id": "user_raw", "item_id": "item_raw", "rating": "rating", "timestamp": "timestamp"})
    ratings = numeric(inter, {"user_raw": "int", "item_raw": "int", "rating": "whole", "timestamp": "whole"}, inter_path)
    _check_ratings(ratings, inter_path, "ml-100k.inter (user_id, item_id, rating 1-5, timestamp)")
    users = atomic("ml-100k.user", {"user_id": "user_raw", "age": "age", "gender": "gender", "occupation": "occupation"})
    if users.empty:
        raise DataFormatError(f"{folder / 'ml-100k.user'}: no users")
    users = numeric(users, {"user_raw": "int", "age": "int"}, folder / "ml-100k.user")
    items = atomic("ml-100k.item", {"item_id": "item_raw", "class": "genres"})
    if items.empty:
        raise DataFormatError(f"{folder / 'ml-100k.item'}: no movies")
    items = numeric(items, {"item_raw": "int"}, folder / "ml-100k.item")
    return RawMovieLens(
        ratings=ratings[["user_raw", "item_raw", "rating", "timestamp"]].reset_index(drop=True),
        users=users,
        items=pd.DataFrame({
            "item_raw": items["item_raw"].to_numpy(),
            "genres": [tuple(g.split()) for g in items["genres"]],
        }),
        files={"ratings": str(inter_path), "users": str(folder / "ml-100k.user"), "items": str(folder / "ml-100k.item")},
    )


def _encode(values: pd.Series, vocab: tuple[str, ...], what: str, where: str) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(vocab)}
    codes = values.map(lookup)
    if codes.isna().any():
        bad = sorted(set(values[codes.isna()].fillna("").astype(str)))[:5]
        raise DataFormatError(f"{where}: unknown {what} values {bad}; expected one of {list(vocab)}")
    return codes.to_numpy(dtype=np.int32)


def _file(raw: RawMovieLens, role: str, name: str) -> str:
    """The file a frame of ``raw`` came from (``role``: ratings, users, items), for messages."""
    return raw.files.get(role) or f"{name} {role}"


def build_movielens(
    raw: RawMovieLens,
    name: str,
    click_threshold: int = 5,
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    source: str = "",
) -> InteractionDataset:
    """RF² preprocessing of raw MovieLens frames into the canonical dataset: checks the frames and
    encodes user features and genres (with this format's messages), then
    :func:`rf2.data.rated_log.build_rated_log` builds the events, split and schema."""
    check_options(click_threshold=click_threshold, test_fraction=test_fraction, history_maxlen=history_maxlen)
    r = raw.ratings
    ratings_file, users_file, items_file = (_file(raw, role, name) for role in ("ratings", "users", "items"))
    if r.empty:
        raise DataFormatError(f"{ratings_file}: no ratings")
    if not r["rating"].between(0, 5).all():
        raise DataFormatError(f"{ratings_file}: ratings must be 0..5 stars, found {r['rating'].min()}..{r['rating'].max()}")
    if r.duplicated(["user_raw", "item_raw"]).any():
        first = r.loc[r.duplicated(["user_raw", "item_raw"]), ["user_raw", "item_raw"]].iloc[0].tolist()
        raise DataFormatError(
            f"{ratings_file}: a user rates a movie at most once; found duplicate (user, movie) pairs, e.g. {first}"
        )
    for frame, key, where, what in ((raw.users, "user_raw", users_file, "user"), (raw.items, "item_raw", items_file, "movie")):
        dup = frame[key].duplicated()
        if dup.any():
            raise DataFormatError(f"{where}: every {what} id must appear once; {sorted(set(frame.loc[dup, key].tolist()))[:5]} repeat")
    if "age" in raw.users and len(raw.users) and (raw.users["age"] < 0).any():
        raise DataFormatError(f"{users_file}: ages must be integers >= 0, found {int(raw.users['age'].min())}")

    user_ids = np.sort(raw.users["user_raw"].unique()) if len(raw.users) else np.sort(r["user_raw"].unique())
    item_ids = np.sort(raw.items["item_raw"].unique())
    unknown_users = ~np.isin(r["user_raw"].to_numpy(), user_ids)
    unknown_items = ~np.isin(r["item_raw"].to_numpy(), item_ids)
    if unknown_users.any() or unknown_items.any():
        problems = []
        if unknown_users.any():
            ids = sorted(set(r["user_raw"].to_numpy()[unknown_users].tolist()))[:5]
            problems.append(f"{int(unknown_users.sum())} name users that {users_file} does not list (e.g. {ids})")
        if unknown_items.any():
            ids = sorted(set(r["item_raw"].to_numpy()[unknown_items].tolist()))[:5]
            problems.append(f"{int(unknown_items.sum())} name movies that {items_file} does not list (e.g. {ids})")
        raise DataFormatError(f"{ratings_file}: " + "; ".join(problems))
    n_items = len(item_ids)
    items_by_raw = raw.items.set_index("item_raw").loc[item_ids]
    genre_lists = items_by_raw["genres"].tolist()
    lookup = {g: i + 1 for i, g in enumerate(GENRES)}
    genres = np.zeros((n_items, MAX_GENRES), dtype=np.int32)
    for i, gl in enumerate(genre_lists):
        codes = [lookup.get(g) for g in gl]
        if None in codes or len(codes) > MAX_GENRES:
            raise DataFormatError(f"{items_file}: movie {item_ids[i]} has genres {gl}; expected at most {MAX_GENRES} of {list(GENRES)}")
        genres[i, : len(codes)] = codes

    if len(raw.users):
        users_raw = raw.users.set_index("user_raw").loc[user_ids]
    else:  # a dataset without user features: the users are those who rate
        users_raw = pd.DataFrame(index=pd.Index(user_ids, name="user_raw"))
    users = pd.DataFrame(index=pd.RangeIndex(len(user_ids), name="user"))
    features: list = []
    where = users_file
    if "age" in users_raw:
        users["age_bucket"] = (np.searchsorted(AGE_BUCKETS, users_raw["age"].to_numpy(), side="right") - 1).astype(np.int32)
        features.append(SparseFeature("age_bucket", len(AGE_BUCKETS), "user"))
    if "gender" in users_raw:
        users["gender"] = _encode(users_raw["gender"], GENDERS, "gender", where)
        features.append(SparseFeature("gender", len(GENDERS), "user"))
    if "occupation" in users_raw:
        users["occupation"] = _encode(users_raw["occupation"], OCCUPATIONS, "occupation", where)
        features.append(SparseFeature("occupation", len(OCCUPATIONS), "user"))
    # indices, event order, labels, split, items and schema: the shared builder (ids and ratings
    # were checked above with this format's messages)
    ratings = {"user_raw": r["user_raw"].to_numpy(), "item_raw": r["item_raw"].to_numpy(),
               "rating": r["rating"].to_numpy(), "timestamp": r["timestamp"].to_numpy(dtype=np.int64)}
    return build_rated_log(
        name, ratings, user_ids=user_ids, item_ids=item_ids, users=users, user_features=features, genres=genres,
        n_genres=len(GENRES), click_threshold=click_threshold, rating_range=(0, 5), test_fraction=test_fraction,
        history_maxlen=history_maxlen, users_listed_in=users_file, items_listed_in=items_file, source=source,
    )


def check_options(
    path=None,
    download: bool = False,
    click_threshold: int = 5,
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    verify: bool = True,
    split: str = "temporal",
    min_interactions: int = LOO_MIN_INTERACTIONS,
    seed: int = 0,
) -> None:
    """Check the options of :func:`load_ml100k` without reading anything (``ValueError`` naming
    the option and its allowed values)."""
    if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip()):
        raise ValueError(f"path must be a folder (a non-empty string or path) or None, got {path!r}")
    for opt, v in (("download", download), ("verify", verify)):
        if not isinstance(v, bool):
            raise ValueError(f"{opt} must be true or false, got {v!r}")
    if not isinstance(click_threshold, numbers.Integral) or isinstance(click_threshold, bool) or not 1 <= click_threshold <= 5:
        raise ValueError(f"click_threshold must be a star rating: an integer in 1..5, got {click_threshold!r}")
    if (not isinstance(test_fraction, numbers.Real) or isinstance(test_fraction, bool)
            or not math.isfinite(test_fraction) or not 0 <= test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if not isinstance(history_maxlen, numbers.Integral) or isinstance(history_maxlen, bool) or history_maxlen < 1:
        raise ValueError(f"history_maxlen must be an integer >= 1, got {history_maxlen!r}")
    check_split(split, min_interactions)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def load_ml100k(
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
    """MovieLens-100K (943 users, 1,682 movies, 100,000 ratings), RF² preprocessing.

    ``split="temporal"`` (default): RF²'s per-user temporal split (``test_fraction``).
    ``split="leave-one-out"``: FedEM's implicit protocol (:func:`rf2.data.split.leave_one_out`):
    every rating a positive, users with fewer than ``min_interactions`` ratings dropped (none in
    ML-100K at 10), newest rating by (timestamp, item) -> test, second newest -> validation, and 99
    evaluation negatives per user drawn with ``seed`` (``click_threshold`` and ``test_fraction``
    are then unused).

    ``verify`` checks the files against their pinned sha256 before reading (a truncated or
    modified copy is an error); ``verify=False`` reads a modified copy on purpose. A file that
    does not have the GroupLens format is a :class:`DataFormatError` naming it.
    """
    check_options(path, download, click_threshold, test_fraction, history_maxlen, verify, split, min_interactions, seed)
    found = locate(ML100K, path=path, download=download)
    if verify:
        verify_files(found, ("ml-100k.inter", "ml-100k.user", "ml-100k.item") if found.kind == "recbole" else ML100K.files)
    raw = read_ml100k_recbole(found.path) if found.kind == "recbole" else read_ml100k_files(found.path)
    ds = build_movielens(raw, "ml-100k", click_threshold, test_fraction, history_maxlen, source=found.origin)
    if split == "leave-one-out":
        ds = leave_one_out(ds, min_interactions, seed=seed, order="timestamp")
    return ds


#: lets :class:`rf2.config.RunConfig` check dataset options when a config is made
load_ml100k.check_options = check_options  # type: ignore[attr-defined]
