"""MovieLens-1M: ``ml-1m`` (RF² preprocessing) and ``ml-1m-implicit`` (HeteFedRec §V-A).

The original ``ratings.dat`` is not available here, so ``ml-1m`` is checked on small files written
in GroupLens' exact format (``::`` separators, latin-1); ``ml-1m-implicit`` is checked on such
files and on the real implicit copy (``$RF2_DATA_DIR/ml-1m-implicit``, skipped when absent).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from rf2.data import ChecksumError, DataFormatError, DataNotFoundError, FeatureEncoder, load_dataset
from rf2.data import movielens_1m as ml1m
from rf2.data.loading import UnpinnedChecksumWarning
from rf2.data.movielens import build_movielens, read_ml100k_files
from rf2.data.rated_log import build_rated_log
from rf2.data.schema import SparseFeature

# -- a hand-made MovieLens-1M in the original format ------------------------------------------------------
USERS = [  # UserID::Gender::Age::Occupation::Zip-code
    (1, "F", 1, 10, "48067"),
    (2, "M", 56, 16, "70072"),
    (3, "M", 25, 15, "55117-1234"),
]
MOVIES = [  # MovieID::Title::Genres
    (1, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (2, "Jumanji (1995)", "Adventure|Children's|Fantasy"),
    (5, "Star Wars: Episode IV - A New Hope (1977)", "Action|Adventure|Fantasy|Sci-Fi"),
    (7, "Città, La (1998)", "Drama"),  # latin-1 title with a comma
    (9, "Never Rated (2000)", "Horror"),
]
RATINGS = [  # UserID::MovieID::Rating::Timestamp, not in time order (like the original)
    (1, 5, 5, 300), (1, 1, 5, 100), (1, 2, 3, 200), (1, 7, 5, 200), (1, 9, 2, 500),
    (2, 1, 4, 50), (2, 2, 5, 60),
    (3, 7, 5, 10),
]


def write_ml1m(folder: Path, ratings=RATINGS, users=USERS, movies=MOVIES, ratings_file=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if ratings_file:
        (folder / "ratings.dat").write_bytes("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings).encode("latin-1"))
    (folder / "users.dat").write_bytes("".join("::".join(map(str, row)) + "\n" for row in users).encode("latin-1"))
    (folder / "movies.dat").write_bytes("".join("::".join(map(str, row)) + "\n" for row in movies).encode("latin-1"))
    return folder


def write_interactions(folder: Path, pairs) -> None:
    with gzip.open(folder / "interactions.csv.gz", "wt") as fh:
        fh.write("user_id,movie_id\n")
        fh.writelines(f"{u},{m}\n" for u, m in pairs)


@pytest.fixture
def ml1m_dir(tmp_path) -> Path:
    return write_ml1m(tmp_path / "ml-1m")


# -- ml-1m: RF² preprocessing, oracle checks -----------------------------------------------------------------
def test_ml1m_counts_labels_and_features(ml1m_dir):
    ds = load_dataset("ml-1m", path=ml1m_dir, verify=False)
    assert (ds.n_users, ds.n_items, ds.n_events) == (3, 5, 8)  # items: every movie of movies.dat
    names = [f.name for f in ds.schema.features]
    assert names == ["age_bucket", "gender", "occupation", "hist_movie_id", "movie_id", "genres"]
    assert "user_id" not in names  # RF² §5.1: no user id
    # users.dat: age code -> index in (1, 18, 25, 35, 45, 50, 56); F = 1; occupation code as is
    assert ds.users.to_dict("list") == {"age_bucket": [0, 6, 2], "gender": [1, 0, 0], "occupation": [10, 16, 15]}
    # user 1 (index 0), by (timestamp, item): movie 1 @100 (5*), movie 2 @200 (3*), movie 7 @200 (5*),
    # movie 5 @300 (5*), movie 9 @500 (2*); item index = rank of the movie id among 1, 2, 5, 7, 9
    ev = ds.events[ds.events["user"] == 0]
    assert ev["item"].tolist() == [0, 1, 3, 2, 4]
    assert ev["timestamp"].tolist() == [100, 200, 200, 300, 500]
    assert ev["label"].tolist() == [1, 0, 1, 1, 0]
    assert ev["is_test"].tolist() == [False] * 4 + [True]  # floor(0.2 * 5) = 1, the latest
    assert ds.events[ds.events["user"] == 1]["is_test"].tolist() == [False, True]
    assert ds.events[ds.events["user"] == 2]["is_test"].tolist() == [False]  # one rating: kept for training
    # genres of movie 5 (item 2): Action, Adventure, Fantasy, Sci-Fi -> README order + 1
    assert ds.item_sequences["genres"][2].tolist() == [1, 2, 9, 15, 0, 0]
    assert ds.item_sequences["genres"][3].tolist() == [8, 0, 0, 0, 0, 0]  # Città, La: Drama


def test_ml1m_history_by_hand(ml1m_dir):
    ds = load_dataset("ml-1m", path=ml1m_dir, verify=False, history_maxlen=3)
    X = FeatureEncoder(ds).encode_numpy(np.arange(5))  # user 0's events
    a, b = ds.schema.columns["hist_movie_id"]
    (ln, _) = ds.schema.columns["hist_length"]
    # clicks: movie 1 @100, movie 7 @200, movie 5 @300; the click at 200 is not history for the
    # other event at 200 (same second)
    assert X[:, a:b].tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 4, 0], [1, 4, 3]]
    assert X[:, ln].tolist() == [0, 1, 1, 2, 3]


def test_ml1m_click_threshold(ml1m_dir):
    ds = load_dataset("ml-1m", path=ml1m_dir, verify=False, click_threshold=4)
    assert int(ds.events["label"].sum()) == sum(r >= 4 for _, _, r, _ in RATINGS)
    with pytest.raises(ValueError, match="click_threshold"):
        load_dataset("ml-1m", path=ml1m_dir, verify=False, click_threshold=6)


def test_generic_builder_equals_ml100k_builder(ml100k_files):
    """ml-100k's frame front end (``build_movielens``: its own checks and encodings) and the array
    input ml-1m/ml-20m hand to ``build_rated_log`` give the same dataset (both end in
    ``build_rated_log``; the ml-100k result itself is checked against the raw files in
    ``tests/test_data_movielens.py``)."""
    raw = read_ml100k_files(ml100k_files)
    a = build_movielens(raw, "ml-100k")
    user_ids = np.sort(raw.users["user_raw"].unique())
    item_ids = np.sort(raw.items["item_raw"].unique())
    ratings = {
        "user_raw": raw.ratings["user_raw"].to_numpy(np.int32), "item_raw": raw.ratings["item_raw"].to_numpy(np.int32),
        "rating": raw.ratings["rating"].to_numpy(np.float32), "timestamp": raw.ratings["timestamp"].to_numpy(),
    }
    b = build_rated_log(
        "ml-100k", ratings,
        user_ids=user_ids, item_ids=item_ids, users=a.users,
        user_features=[f for f in a.schema.features if isinstance(f, SparseFeature) and f.source == "user"],
        genres=a.item_sequences["genres"], n_genres=a.schema.feature("genres").vocab_size - 1,
    )
    assert a.events.equals(b.events)
    assert a.items.equals(b.items)
    assert a.schema == b.schema


# -- ml-1m: checksums and bad input ---------------------------------------------------------------------------
def test_ml1m_fixture_is_not_the_official_users_file(ml1m_dir):
    with pytest.raises(ChecksumError, match=r"users\.dat.*not the official file"):
        load_dataset("ml-1m", path=ml1m_dir)


def test_ml1m_real_side_files_pass_and_unpinned_ratings_are_reported(tmp_path):
    real = implicit_dir_or_none()
    if real is None:
        pytest.skip("needs ml-1m-implicit's original users.dat/movies.dat: set RF2_DATA_DIR (CI: ../shared/data)")
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    for f in ("users.dat", "movies.dat"):
        (folder / f).write_bytes((real / f).read_bytes())
    rng = np.random.default_rng(0)
    movie_ids = [int(line.split("::")[0]) for line in (real / "movies.dat").read_text("latin-1").splitlines()]
    rows = [(u, m, int(rng.integers(1, 6)), 978300000 + u * 10 + k)
            for u in range(1, 6041) for k, m in enumerate(rng.choice(movie_ids, 3, replace=False))]
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in rows))
    with pytest.warns(UnpinnedChecksumWarning, match=r"ratings\.dat"):
        ds = load_dataset("ml-1m", path=folder)
    assert (ds.n_users, ds.n_items, ds.n_events) == (6040, 3883, 3 * 6040)
    assert int(ds.events["label"].sum()) == sum(r == 5 for _, _, r, _ in rows)


@pytest.mark.parametrize("line, match", [
    ("1,5,5,300", r"ratings\.dat.*'::'"),  # wrong separator
    ("1::5::5", r"ratings\.dat.*'::'"),  # a field missing
    ("1::x::5::300", r"ratings\.dat.*line 1"),  # not an integer
])
def test_ml1m_malformed_first_ratings_line(ml1m_dir, line, match):
    lines = (ml1m_dir / "ratings.dat").read_text("latin-1").splitlines()
    (ml1m_dir / "ratings.dat").write_text("\n".join([line] + lines[1:]) + "\n")
    with pytest.raises(DataFormatError, match=match):
        load_dataset("ml-1m", path=ml1m_dir, verify=False)


def test_ml1m_empty_ratings_file(ml1m_dir):
    (ml1m_dir / "ratings.dat").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: empty file"):
        load_dataset("ml-1m", path=ml1m_dir, verify=False)


def test_ml1m_malformed_later_line_is_located(ml1m_dir):
    lines = (ml1m_dir / "ratings.dat").read_text("latin-1").splitlines()
    lines[5] = "2::1::4::5O"  # letter O for zero
    (ml1m_dir / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat.*line 6.*5O"):
        load_dataset("ml-1m", path=ml1m_dir, verify=False)


@pytest.mark.parametrize("file, bad, match", [
    ("users.dat", "4::X::25::1::12345", "gender"),
    ("users.dat", "4::M::30::1::12345", "age 30"),
    ("users.dat", "4::M::25::21::12345", "occupation 21"),
    ("users.dat", "4|M|25|1|12345", r"users\.dat.*line 4.*'::'"),
    ("movies.dat", "11::Heat (1995)::Action|Westerns", r"movies\.dat.*line 6.*Westerns"),
    ("movies.dat", "abc::Heat (1995)::Action", r"movies\.dat.*line 6"),
])
def test_ml1m_bad_side_files(ml1m_dir, file, bad, match):
    with open(ml1m_dir / file, "a", encoding="latin-1") as fh:
        fh.write(bad + "\n")
    with pytest.raises(DataFormatError, match=match):
        load_dataset("ml-1m", path=ml1m_dir, verify=False)


def test_ml1m_unknown_ids_and_duplicates(tmp_path):
    d = write_ml1m(tmp_path / "a", ratings=RATINGS + [(1, 4, 5, 900)])
    with pytest.raises(DataFormatError, match=r"movies.*movies\.dat.*\[4\]"):
        load_dataset("ml-1m", path=d, verify=False)
    d = write_ml1m(tmp_path / "b", ratings=RATINGS + [(8, 1, 5, 900)])
    with pytest.raises(DataFormatError, match=r"users.*users\.dat.*\[8\]"):
        load_dataset("ml-1m", path=d, verify=False)
    d = write_ml1m(tmp_path / "c", ratings=RATINGS + [(1, 1, 3, 900)])
    with pytest.raises(DataFormatError, match="at most once"):
        load_dataset("ml-1m", path=d, verify=False)
    d = write_ml1m(tmp_path / "d", ratings=RATINGS + [(2, 5, 6, 900)])
    with pytest.raises(DataFormatError, match="ratings must lie in"):
        load_dataset("ml-1m", path=d, verify=False)


def test_ml1m_missing_files_say_what_and_where(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r"ratings\.dat"):
        load_dataset("ml-1m", path=tmp_path)
    monkeypatch.delenv("RF2_DATA_DIR", raising=False)
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("ml-1m")
    msg = str(err.value)
    assert str(tmp_path / "cache" / "ml-1m") in msg and "download=True" in msg and "ml-1m.zip" in msg


# -- ml-1m-implicit on hand-made files ---------------------------------------------------------------------------
IMPLICIT_MOVIES = [(m, f"Movie {m} (1999)", "Drama") for m in range(1, 13)]  # movie 12 is never rated
IMPLICIT_USERS = [(u, "M", 25, 4, "12345") for u in (1, 2, 3, 4)]
IMPLICIT_PAIRS = (
    [(1, m) for m in (3, 1, 4, 10, 5, 9, 2, 6, 8, 7)]  # 10 pairs: 2 test
    + [(2, m) for m in range(1, 12) if m != 6]  # every rated movie except 6: all its negatives are 6
    + [(3, 2)]  # one pair: kept for training
    + [(4, m) for m in (11, 7, 3, 5, 1)]  # 5 pairs: 1 test
)


@pytest.fixture
def implicit_dir(tmp_path) -> Path:
    d = write_ml1m(tmp_path / "ml-1m-implicit", users=IMPLICIT_USERS, movies=IMPLICIT_MOVIES, ratings_file=False)
    write_interactions(d, IMPLICIT_PAIRS)
    return d


def positives_by_user(ds) -> dict[int, set[int]]:
    ev = ds.events[ds.events["label"] == 1]
    return {u: set(g["item"]) for u, g in ev.groupby("user")}


def test_implicit_protocol_by_hand(implicit_dir):
    ds = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False)
    assert (ds.n_users, ds.n_items) == (4, 11)  # items: the 11 rated movies (movie 12 is never rated)
    assert ds.n_events == 5 * len(IMPLICIT_PAIRS)
    ev = ds.events
    pos = positives_by_user(ds)
    assert pos[0] == set(range(10)) and pos[2] == {1}
    # user 2 rated every item but movie 6 (item 5): each of its 40 negatives is item 5
    neg1 = ev[(ev["user"] == 1) & (ev["label"] == 0)]
    assert len(neg1) == 40 and set(neg1["item"]) == {5}
    for u, items in pos.items():  # a negative is never one of the user's positives
        assert not set(ev[(ev["user"] == u) & (ev["label"] == 0)]["item"]) & items
    # split: floor(0.2 n) test positives (at least 1, never all)
    n_test = ev[ev["label"] == 1].groupby("user")["is_test"].sum().to_dict()
    assert n_test == {0: 2, 1: 2, 2: 0, 3: 1}
    # every positive has 4 negatives with the same pseudo-time and split
    for (u, t), g in ev.groupby(["user", "timestamp"]):
        assert (g["label"] == 1).sum() * 5 == len(g) and g["is_test"].nunique() == 1, (u, t)


def test_implicit_pseudo_time(implicit_dir):
    ds = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False)
    ev = ds.events[ds.events["label"] == 1]
    for u, g in ev.groupby("user"):
        n_train = int((~g["is_test"]).sum())
        assert sorted(g.loc[~g["is_test"], "timestamp"]) == list(range(n_train))  # ranks of a random order
        assert set(g.loc[g["is_test"], "timestamp"]) <= {n_train}  # every test positive: after all of them


def test_implicit_features_and_history(implicit_dir):
    ds = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False, history=True, history_maxlen=12)
    names = [f.name for f in ds.schema.features]
    assert names[:4] == ["user_id", "age_bucket", "gender", "occupation"]
    assert {"movie_id", "genres", "hist_movie_id"} <= set(names)
    assert ds.schema.feature("user_id").table == "user_id" and ds.schema.feature("user_id").vocab_size == 5
    assert ds.schema.feature("movie_id").table == "movie_id" and ds.schema.feature("movie_id").vocab_size == 12
    assert ds.users["user_id"].tolist() == [1, 2, 3, 4]  # = GroupLens UserID
    enc = FeatureEncoder(ds)
    ev = ds.events
    a, b = ds.schema.columns["hist_movie_id"]
    for u in range(4):
        mine = ev[ev["user"] == u]
        train_pos = mine[(mine["label"] == 1) & ~mine["is_test"]].sort_values("timestamp")
        expected = sorted((train_pos["item"] + 1).tolist())
        for e in mine.index[mine["is_test"].to_numpy()]:  # a test event sees all training positives, nothing else
            row = enc.encode_numpy(np.array([e]))[0]
            assert sorted(int(x) for x in row[a:b] if x) == expected
        for e, t in zip(train_pos.index, train_pos["timestamp"]):  # a training positive: those ranked before it
            row = enc.encode_numpy(np.array([e]))[0]
            assert [int(x) for x in row[a:b] if x] == (train_pos["item"] + 1).tolist()[:t]
    assert "hist_movie_id" not in [f.name for f in load_dataset("ml-1m-implicit", path=implicit_dir, verify=False).schema.features]


def test_implicit_is_deterministic_and_seeded(implicit_dir):
    a = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False)
    b = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False)
    c = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False, seed=1)
    assert a.events.equals(b.events)
    assert not a.events.equals(c.events)


def test_implicit_options(implicit_dir):
    ds = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False, negatives=1, test_fraction=0.5)
    assert ds.n_events == 2 * len(IMPLICIT_PAIRS)
    n_test = ds.events[ds.events["label"] == 1].groupby("user")["is_test"].sum().to_dict()
    assert n_test == {0: 5, 1: 5, 2: 0, 3: 2}
    assert load_dataset("ml-1m-implicit", path=implicit_dir, verify=False, negatives=0).n_events == len(IMPLICIT_PAIRS)


def test_implicit_from_ratings_dat_is_the_same(implicit_dir, tmp_path):
    d = write_ml1m(tmp_path / "orig" / "ml-1m", users=IMPLICIT_USERS, movies=IMPLICIT_MOVIES,
                   ratings=[(u, m, 1 + (u * m) % 5, 1000 - u * m) for u, m in IMPLICIT_PAIRS])
    a = load_dataset("ml-1m-implicit", path=implicit_dir, verify=False)
    b = load_dataset("ml-1m-implicit", path=d, verify=False)
    assert a.events.equals(b.events) and a.users.equals(b.users)
    assert "ratings.dat" in b.source


def test_implicit_bad_input(tmp_path):
    d = write_ml1m(tmp_path / "a", users=IMPLICIT_USERS, movies=IMPLICIT_MOVIES, ratings_file=False)
    with gzip.open(d / "interactions.csv.gz", "wt") as fh:
        fh.write("user_id;movie_id\n1;2\n")
    with pytest.raises(DataFormatError, match=r"interactions\.csv\.gz.*wrong separator"):
        load_dataset("ml-1m-implicit", path=d, verify=False)
    write_interactions(d, [(1, 2), (1, "x")])
    with pytest.raises(DataFormatError, match=r"interactions\.csv\.gz"):
        load_dataset("ml-1m-implicit", path=d, verify=False)
    write_interactions(d, [(1, 2), (9, 2)])
    with pytest.raises(DataFormatError, match=r"users\.dat does not list.*\[9\]"):
        load_dataset("ml-1m-implicit", path=d, verify=False)
    write_interactions(d, [(1, 2), (1, 99)])
    with pytest.raises(DataFormatError, match=r"movies\.dat does not list.*\[99\]"):
        load_dataset("ml-1m-implicit", path=d, verify=False)
    write_interactions(d, [(1, 2), (2, 3), (2, 2), (1, 3)])  # user 1 interacted with every item
    with pytest.raises(DataFormatError, match="every item"):
        load_dataset("ml-1m-implicit", path=d, verify=False)


def test_implicit_missing_copy_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("RF2_DATA_DIR", raising=False)
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("ml-1m-implicit")
    msg = str(err.value)
    assert "interactions.csv.gz" in msg and str(tmp_path / "cache" / "ml-1m-implicit") in msg
    assert "no official download" in msg and "ratings.dat" in msg
    with pytest.raises(DataNotFoundError, match=r"interactions\.csv\.gz"):
        load_dataset("ml-1m-implicit", path=tmp_path)


# -- ml-1m-implicit on the real copy --------------------------------------------------------------------------------
def implicit_dir_or_none() -> Path | None:
    root = os.environ.get("RF2_DATA_DIR")
    p = Path(root) / "ml-1m-implicit" if root else None
    return p if p is not None and (p / "interactions.csv.gz").is_file() else None


@pytest.fixture(scope="module")
def real_implicit():
    if implicit_dir_or_none() is None:
        pytest.skip("needs the ml-1m-implicit copy: set RF2_DATA_DIR (CI: ../shared/data)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedChecksumWarning)  # every file it reads is pinned
        return load_dataset("ml-1m-implicit")


def test_real_implicit_counts(real_implicit):
    ds = real_implicit
    ev = ds.events
    label = ev["label"].to_numpy()
    assert (ds.n_users, ds.n_items) == (6040, 3706)
    assert int(label.sum()) == 1_000_209 and ds.n_events == 5 * 1_000_209
    per_user = np.bincount(ev["user"].to_numpy(), weights=label, minlength=6040)
    assert per_user.min() >= 20  # every ML-1M user has at least 20 ratings
    neg_per_user = np.bincount(ev["user"].to_numpy(), weights=1 - label, minlength=6040)
    assert np.array_equal(neg_per_user, 4 * per_user)


def test_real_implicit_negatives_are_never_positives(real_implicit):
    ev = real_implicit.events
    key = ev["user"].to_numpy().astype(np.int64) * real_implicit.n_items + ev["item"].to_numpy()
    label = ev["label"].to_numpy() == 1
    assert not np.isin(key[~label], key[label]).any()
    # and the pairs are exactly interactions.csv.gz's
    with gzip.open(implicit_dir_or_none() / "interactions.csv.gz", "rt") as fh:
        next(fh)
        pairs = np.array([line.strip().split(",") for line in fh], dtype=np.int64)
    movie_ids = np.unique(pairs[:, 1])
    expected = np.sort((pairs[:, 0] - 1) * len(movie_ids) + np.searchsorted(movie_ids, pairs[:, 1]))
    assert np.array_equal(np.sort(key[label]), expected)


def test_real_implicit_split_fractions(real_implicit):
    ev = real_implicit.events[real_implicit.events["label"] == 1]
    g = ev.groupby("user")["is_test"]
    n, n_test = g.size().to_numpy(), g.sum().to_numpy()
    assert np.array_equal(n_test, np.maximum(1, np.floor(0.2 * n)).astype(int))
    assert 0.19 < real_implicit.events["is_test"].mean() <= 0.2
    t = real_implicit.events.groupby("is_test")["label"].mean()
    assert t[True] == pytest.approx(0.2) and t[False] == pytest.approx(0.2)  # 1:4 in both splits


def test_real_implicit_is_deterministic(real_implicit):
    again = load_dataset("ml-1m-implicit")
    assert again.events.equals(real_implicit.events)
    other = load_dataset("ml-1m-implicit", seed=1)

    def test_positives(ds):
        ev = ds.events
        return set(map(tuple, ev.loc[ev["is_test"] & (ev["label"] == 1), ["user", "item"]].to_numpy().tolist()))

    a, b = test_positives(real_implicit), test_positives(other)
    assert len(a) == len(b) and len(a & b) < 0.3 * len(a)  # another random split (~20% overlap by chance)


def test_pinned_digests_match_shared_sha256sums():
    root = os.environ.get("RF2_DATA_DIR")
    sums = Path(root) / "SHA256SUMS" if root else None
    if sums is None or not sums.is_file():
        pytest.skip("needs $RF2_DATA_DIR/SHA256SUMS")
    listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
    for name, digest in ml1m.ML1M_IMPLICIT_SHA256.items():
        assert listed[f"ml-1m-implicit/{name}"] == digest
    assert ml1m.ML1M_RELEASE.sha256["README"] == listed["ml-1m-implicit/README"]
    real = implicit_dir_or_none()
    if real is not None:
        assert hashlib.sha256((real / "users.dat").read_bytes()).hexdigest() == ml1m.ML1M_SHA256["users.dat"]


# -- defaults: the RF² authors' simulator (90/10 split, 10-click history); rf2 0.1's as options -----------------
def test_rf2_movielens_defaults_follow_the_authors_simulator():
    from rf2.data import dataset_options

    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-25m"):
        opts = dataset_options(name)
        assert (opts["test_fraction"], opts["history_maxlen"]) == (0.1, 10), name
    # HeteFedRec's protocol keeps its 80/20 random split
    assert dataset_options("ml-1m-implicit")["test_fraction"] == 0.2


def test_ml1m_default_split_is_90_10_and_old_split_is_an_option(tmp_path):
    # user 1 clicks movies 1..20 at times 1..20; user 2 has one rating
    folder = tmp_path / "ml-1m"
    movies = [(m, f"Movie {m} (2000)", "Drama") for m in range(1, 21)]
    ratings = [(1, m, 5, m) for m in range(1, 21)] + [(2, 1, 5, 1)]
    write_ml1m(folder, ratings=ratings, movies=movies, users=USERS[:2])
    ds = load_dataset("ml-1m", path=folder, verify=False)
    ev = ds.events[ds.events["user"] == 0]
    assert ev["is_test"].tolist() == [False] * 18 + [True] * 2  # floor(0.1 * 20) = 2, the latest
    a, b = ds.schema.columns["hist_movie_id"]
    assert b - a == 10
    X = FeatureEncoder(ds).encode_numpy(ev.index.to_numpy())
    # the last event (movie 20) sees the 10 most recent earlier clicks, movies 10..19 (code = movie id here)
    assert sorted(X[-1, a:b].tolist()) == list(range(10, 20))
    old = load_dataset("ml-1m", path=folder, verify=False, test_fraction=0.2, history_maxlen=50)
    assert old.events[old.events["user"] == 0]["is_test"].tolist() == [False] * 16 + [True] * 4
    a, b = old.schema.columns["hist_movie_id"]
    assert b - a == 50
