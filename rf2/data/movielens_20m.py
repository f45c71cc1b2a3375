"""MovieLens-20M (and -25M), RF² preprocessing (RF² §5.1: the paper's MovieLens dataset).

Original GroupLens files (UTF-8 CSV with a header):

* ``ratings.csv``: ``userId,movieId,rating,timestamp`` (MovieLens-20M: 20,000,263 half-star
  ratings 0.5-5.0 by 138,493 users; MovieLens-25M: 25,000,095 by 162,541 users);
* ``movies.csv``: ``movieId,title,genres`` (27,278 / 62,423 movies; titles containing commas
  are double-quoted; genres ``|``-separated, ``(no genres listed)`` for none).

Preprocessing (as ``ml-100k``): click = rating >= ``click_threshold`` (5.0, RF² §5.1); no user
features exist and the user id is not used (privacy), so the user side is the click history
``hist_movie_id`` only; item features movie id and genres (vocabulary = the genres found in
``movies.csv``, sorted; code = index + 1); items = all movies of ``movies.csv``; per-user
temporal split, the last 10% of each user's events for test, and a 10-click history (the RF²
authors' simulator's defaults, :mod:`rf2.data.rated_log`; rf2 0.1 used 20% and 50).

Memory: ratings are read in chunks into preallocated int32/float32/int64 arrays (20 bytes per
rating), freed as soon as they are indexed; the canonical event table takes 18 bytes per rating
(343 MB at full size). On a synthetic full-size ``ratings.csv`` (20,000,263 rows) loading takes
~9 s and peaks at ~1.15 GB RSS on a 2-core machine, rf2's import (torch, ~0.3 GB) included
(``benchmarks/bench_data_loading.py``).

Checksums: GroupLens publishes an md5 per zip archive (``ml-20m.zip.md5``, ``ml-25m.zip.md5``),
not a digest per file. A download (``download=True``) checks the archive's md5; the sha256 of
``ratings.csv``/``movies.csv`` are **not pinned** (no copy was available to compute them), so
``verify=True`` warns (:class:`rf2.data.loading.UnpinnedChecksumWarning`) that a local copy is
read unchecked.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataFormatError, InteractionDataset
from .fetch import DataSpec
from .loading import ZipRelease, check_files, locate_pinned, read_columns, sorted_unique
from .rated_log import HISTORY_MAXLEN, TEST_FRACTION, build_rated_log

#: name -> (URL, GroupLens' published md5 of the zip, homepage)
RELEASES = {
    "ml-20m": ZipRelease(
        name="ml-20m",
        url="https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        folder="ml-20m",
        md5="cd245b17a1ae2cc31bb14903e1204af3",  # https://files.grouplens.org/datasets/movielens/ml-20m.zip.md5
        files=("ratings.csv", "movies.csv", "README.txt"),
        sha256={},  # per-file sha256 not pinned: see the module docstring
        homepage="https://grouplens.org/datasets/movielens/20m/",
    ),
    "ml-25m": ZipRelease(
        name="ml-25m",
        url="https://files.grouplens.org/datasets/movielens/ml-25m.zip",
        folder="ml-25m",
        md5="6b51fb2759a8657d3bfcbfc42b592ada",  # https://files.grouplens.org/datasets/movielens/ml-25m.zip.md5
        files=("ratings.csv", "movies.csv", "README.txt"),
        sha256={},
        homepage="https://grouplens.org/datasets/movielens/25m/",
    ),
}
SPECS = {
    name: DataSpec(
        name=name,
        files=("ratings.csv", "movies.csv"),
        manual_hint=f"download it with load_dataset('{name}', download=True) (from {rel.url}, md5-checked)",
    )
    for name, rel in RELEASES.items()
}
ML20M, ML25M = SPECS["ml-20m"], SPECS["ml-25m"]
NO_GENRES = "(no genres listed)"


def read_ratings(path: Path, chunk_rows: int = 1 << 21) -> dict[str, np.ndarray]:
    """``ratings.csv`` -> ``user_raw``/``item_raw`` (int32), ``rating`` (float32), ``timestamp`` (int64)."""
    cols = read_columns(
        path, {"userId": np.int32, "movieId": np.int32, "rating": np.float32, "timestamp": np.int64},
        "MovieLens ratings.csv (header userId,movieId,rating,timestamp)", chunk_rows=chunk_rows,
    )
    if cols["userId"].size == 0:
        raise DataFormatError(f"{path}: no ratings (the file has only a header)")
    return {"user_raw": cols["userId"], "item_raw": cols["movieId"], "rating": cols["rating"], "timestamp": cols["timestamp"]}


def read_movies(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``movies.csv`` -> (sorted movie ids, ``[n, maxlen]`` genre codes (1-based, 0-padded), genre names)."""
    path = Path(path)
    what = "MovieLens movies.csv (header movieId,title,genres; titles with commas double-quoted)"
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{path}: not a valid {what} ({exc})") from exc
    if not rows or [c.strip() for c in rows[0]] != ["movieId", "title", "genres"]:
        header = rows[0] if rows else []
        raise DataFormatError(f"{path}: not a valid {what}: the header is {header}, expected ['movieId', 'title', 'genres']")
    ids, lists = [], []
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 3:
            raise DataFormatError(
                f"{path}: not a valid {what}: record {lineno} has {len(row)} fields, expected 3 "
                f"(a title with a comma must be double-quoted): {','.join(row)[:120]!r}"
            )
        try:
            ids.append(int(row[0]))
        except ValueError:
            raise DataFormatError(f"{path}: record {lineno}: movieId {row[0]!r} is not an integer") from None
        lists.append([g for g in row[2].split("|") if g and g != NO_GENRES])
    if not ids:
        raise DataFormatError(f"{path}: no movies")
    ids = np.array(ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError(f"{path}: duplicate movieId values")
    names = tuple(sorted({g for gl in lists for g in gl}))
    lookup = {g: i + 1 for i, g in enumerate(names)}
    genres = np.zeros((len(ids), max((len(gl) for gl in lists), default=0)), dtype=np.int32)
    for r, gl in enumerate(lists):
        genres[r, : len(gl)] = [lookup[g] for g in gl]
    order = np.argsort(ids, kind="stable")
    return ids[order].astype(np.int32), genres[order], names


def _load(
    name: str, path, download: bool, click_threshold: float, test_fraction: float, history_maxlen: int, verify: bool
) -> InteractionDataset:
    spec, release = SPECS[name], RELEASES[name]
    found = locate_pinned(spec, release.sha256, path=path, download=download, release=release)
    check_files(found, spec.files, verify, f"GroupLens publishes only the md5 of {name}.zip, which a download checks")
    ratings = read_ratings(found.path / "ratings.csv")
    item_ids, genres, genre_names = read_movies(found.path / "movies.csv")
    user_ids = sorted_unique(ratings["user_raw"])  # no user file: the users are the raters
    return build_rated_log(
        name,
        ratings,  # consumed: the raw arrays are freed as soon as they are indexed
        user_ids=user_ids, item_ids=item_ids,
        users=pd.DataFrame(index=pd.RangeIndex(len(user_ids), name="user")), user_features=[],
        genres=genres, n_genres=len(genre_names),
        click_threshold=click_threshold, rating_range=(0.5, 5.0), test_fraction=test_fraction,
        history_maxlen=history_maxlen, users_listed_in="ratings.csv", items_listed_in="movies.csv",
        source=found.origin,
        description=(
            f"MovieLens ({name}), RF² §5.1: click = rating >= {click_threshold:g}; no user features (no user id), "
            f"last {history_maxlen} clicked movies; item features movie id, genres ({len(genre_names)}); "
            f"last {test_fraction:.0%} of each user's events (by time) for test"
        ),
    )


def load_ml20m(
    path: str | None = None,
    download: bool = False,
    click_threshold: float = 5.0,
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    verify: bool = True,
) -> InteractionDataset:
    """MovieLens-20M (138,493 users, 27,278 movies, 20,000,263 ratings), RF² §5.1 preprocessing
    (module docstring). ``download=True`` fetches ``ml-20m.zip`` (md5-checked) when no copy is found."""
    return _load("ml-20m", path, download, click_threshold, test_fraction, history_maxlen, verify)


def load_ml25m(
    path: str | None = None,
    download: bool = False,
    click_threshold: float = 5.0,
    test_fraction: float = TEST_FRACTION,
    history_maxlen: int = HISTORY_MAXLEN,
    verify: bool = True,
) -> InteractionDataset:
    """MovieLens-25M (162,541 users, 62,423 movies, 25,000,095 ratings): same format and preprocessing
    as :func:`load_ml20m`."""
    return _load("ml-25m", path, download, click_threshold, test_fraction, history_maxlen, verify)
