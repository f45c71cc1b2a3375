"""MovieLens-100K: RF² preprocessing, the two on-disk formats, split and history, bad input."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rf2.data import ChecksumError, DataFormatError, DataNotFoundError, FeatureEncoder, load_dataset
from rf2.data.movielens import ML100K, _recbole_ml100k, read_ml100k_files, read_ml100k_recbole


def read_udata(folder: Path) -> list[tuple[int, int, int, int]]:
    with open(folder / "u.data") as fh:
        return [tuple(int(x) for x in row) for row in csv.reader(fh, delimiter="\t")]


def test_grouplens_counts_and_clicks(ml100k_files):
    ratings = read_udata(ml100k_files)
    ds = load_dataset("ml-100k", path=ml100k_files)
    assert (ds.n_users, ds.n_items, ds.n_events) == (943, 1682, 100_000)
    assert ds.events["label"].sum() == sum(1 for r in ratings if r[2] == 5)
    ds4 = load_dataset("ml-100k", path=ml100k_files, click_threshold=4)
    assert ds4.events["label"].sum() == sum(1 for r in ratings if r[2] >= 4)


def test_recbole_copy_has_the_same_ratings(ml100k_files):
    folder = _recbole_ml100k()
    assert folder is not None, "install the offline copy: pip install --no-deps recbole==1.2.1 (make setup does)"
    ours = Counter(read_udata(ml100k_files))
    raw = read_ml100k_recbole(folder).ratings
    theirs = Counter(map(tuple, raw[["user_raw", "item_raw", "rating", "timestamp"]].to_numpy().tolist()))
    assert sum(theirs.values()) == 100_000
    assert theirs == ours
    a = load_dataset("ml-100k", path=ml100k_files)
    from rf2.data.movielens import build_movielens

    b = build_movielens(read_ml100k_recbole(folder), "ml-100k")
    assert a.events.equals(b.events) and a.users.equals(b.users) and a.items.equals(b.items)
    assert np.array_equal(a.item_sequences["genres"], b.item_sequences["genres"])


def test_rf2_features_no_user_id(ml100k):
    names = [f.name for f in ml100k.schema.features]
    assert "user_id" not in names and "user" not in names
    assert {"age_bucket", "gender", "occupation", "movie_id", "genres", "hist_movie_id"} <= set(names)
    assert ml100k.schema.feature("hist_movie_id").table == "movie_id"


def test_user_features_match_u_user(ml100k_files):
    ds = load_dataset("ml-100k", path=ml100k_files)
    with open(ml100k_files / "u.user") as fh:
        rows = [r.strip().split("|") for r in fh]
    for uid, age, gender, occ, _ in rows[:50]:
        u = int(uid) - 1  # GroupLens ids are 1..943, contiguous
        bucket = sum(int(age) >= b for b in (18, 25, 35, 45, 50, 56))
        assert ds.users.loc[u, "age_bucket"] == bucket
        assert ds.users.loc[u, "gender"] == ("M", "F").index(gender)


def test_split_is_last_tenth_of_each_user_in_time(ml100k):
    # default: the RF² authors' 90/10 per-user temporal split
    ev = ml100k.events
    rng = np.random.default_rng(0)
    for u in rng.choice(ml100k.n_users, 40, replace=False):
        rows = ev[ev["user"] == u].sort_values(["timestamp", "item"])
        n = len(rows)
        n_test = max(1, int(np.floor(0.1 * n)))
        assert rows["is_test"].tolist() == [False] * (n - n_test) + [True] * n_test


def test_history_only_strictly_earlier_clicks(ml100k):
    ev = ml100k.events
    enc = FeatureEncoder(ml100k)
    a, b = ml100k.schema.columns["hist_movie_id"]
    maxlen = b - a
    rng = np.random.default_rng(1)
    idx = rng.choice(ml100k.n_events, 300, replace=False)
    X = enc.encode_numpy(idx)
    user = ev["user"].to_numpy()
    ts = ev["timestamp"].to_numpy()
    item = ev["item"].to_numpy()
    label = ev["label"].to_numpy()
    for row, e in zip(X, idx):
        mine = np.flatnonzero((user == user[e]) & (label == 1) & (ts < ts[e]))
        mine = mine[np.lexsort((item[mine], ts[mine]))][-maxlen:]
        expected = np.zeros(maxlen)
        expected[: mine.size] = item[mine] + 1
        assert np.array_equal(row[a:b], expected), f"event {e}"
        lo, _ = ml100k.schema.columns["hist_length"]
        assert row[lo] == mine.size


def test_movie_and_genre_columns(ml100k_files):
    ds = load_dataset("ml-100k", path=ml100k_files)
    enc = FeatureEncoder(ds)
    with open(ml100k_files / "u.item", encoding="latin-1") as fh:
        flags = {int(r.split("|")[0]): [int(x) for x in r.strip().split("|")[5:]] for r in fh}
    idx = np.arange(0, ds.n_events, 997)
    X = enc.encode_numpy(idx)
    ma, _ = ds.schema.columns["movie_id"]
    ga, gb = ds.schema.columns["genres"]
    for row, e in zip(X, idx):
        movie = int(row[ma])  # item index + 1 == GroupLens movie id (contiguous 1..1682)
        assert movie == ds.events["item"].iloc[e] + 1
        genres = sorted(int(g) - 1 for g in row[ga:gb] if g)
        assert genres == [j for j, f in enumerate(flags[movie]) if f]


def test_loading_is_deterministic(ml100k_files):
    a = load_dataset("ml-100k", path=ml100k_files)
    b = load_dataset("ml-100k", path=ml100k_files)
    assert a.events.equals(b.events)


# -- bad input -------------------------------------------------------------------------------------
def copy_ml100k(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("u.data", "u.user", "u.item"):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_malformed_rating_file_names_the_file(ml100k_files, tmp_path):
    d = copy_ml100k(ml100k_files, tmp_path / "ml-100k")
    lines = (d / "u.data").read_text().splitlines()
    lines[10] = "196\tabc\t3\t881250949"
    (d / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(ChecksumError, match=r"u\.data.*not the official file"):
        load_dataset("ml-100k", path=d)
    with pytest.raises(DataFormatError, match=r"u\.data"):
        load_dataset("ml-100k", path=d, verify=False)


def test_truncated_rating_file_is_an_error(ml100k_files, tmp_path):
    d = copy_ml100k(ml100k_files, tmp_path / "ml-100k")
    data = (d / "u.data").read_bytes()
    (d / "u.data").write_bytes(data[: len(data) // 2 - 3])  # cut mid-line: still 4 columns per row
    with pytest.raises(ChecksumError, match="truncated"):
        load_dataset("ml-100k", path=d)


def test_ratings_of_unknown_movies_are_an_error(ml100k_files, tmp_path):
    d = copy_ml100k(ml100k_files, tmp_path / "ml-100k")
    with open(d / "u.data", "a") as fh:
        fh.write("1\t99999\t5\t881250949\n")
    with pytest.raises(DataFormatError, match="movies"):
        load_dataset("ml-100k", path=d, verify=False)


def test_explicit_path_without_files_says_what_is_missing(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"u\.data"):
        load_dataset("ml-100k", path=tmp_path)


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'movielens-7'.*ml-100k"):
        load_dataset("movielens-7")
    with pytest.raises(ValueError, match="no option"):
        load_dataset("ml-100k", clik_threshold=4)


def test_threshold_out_of_range(ml100k_files):
    with pytest.raises(ValueError, match="click_threshold"):
        load_dataset("ml-100k", path=ml100k_files, click_threshold=6)


def test_read_files_and_recbole_agree_on_items(ml100k_files):
    folder = _recbole_ml100k()
    assert folder is not None
    a = read_ml100k_files(ml100k_files).items.set_index("item_raw")["genres"].map(sorted)
    b = read_ml100k_recbole(folder).items.set_index("item_raw")["genres"].map(sorted)
    assert a.sort_index().equals(b.sort_index())


def test_spec_files_are_the_loader_inputs():
    assert set(ML100K.files) <= set(ML100K.remote.sha256)
