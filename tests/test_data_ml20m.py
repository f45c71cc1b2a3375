"""MovieLens-20M/25M: RF² preprocessing on small files in GroupLens' exact CSV format, chunked
reading, bad input, the md5-checked download (from a local server)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rf2.data import ChecksumError, DataFormatError, DataNotFoundError, FeatureEncoder, load_dataset
from rf2.data import movielens_20m as ml20m
from rf2.data.loading import UnpinnedChecksumWarning, download_release

MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,Jumanji (1995),Adventure|Children|Fantasy
11,"American President, The (1995)",Comedy|Drama|Romance
47,Seven (a.k.a. Se7en) (1995),Mystery|Thriller
50,"Usual Suspects, The (1995)",Crime|Mystery|Thriller
131262,Innocence (2014),Adventure|Fantasy|Horror
131254,Kein Bund für's Leben (2007),(no genres listed)
200,"Dark Knight, The (2008)",Action|Crime|Drama|IMAX
"""
RATINGS = [  # userId,movieId,rating,timestamp: sorted by user then movie, like the original file
    (1, 2, 3.5, 1112486027), (1, 11, 5.0, 1112484676), (1, 47, 5.0, 1112484819), (1, 50, 4.5, 1112484727),
    (1, 200, 5.0, 1112484727),
    (3, 1, 5.0, 944919407), (3, 131262, 0.5, 944919407),
    (7, 47, 4.0, 1011204596),
]
GENRES = sorted({"Adventure", "Animation", "Children", "Comedy", "Fantasy", "Drama", "Romance", "Mystery",
                 "Thriller", "Crime", "Horror", "Action", "IMAX"})


def write_ml20m(folder: Path, ratings=RATINGS, movies=MOVIES_CSV) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r:.1f},{t}" for u, m, r, t in ratings]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    return folder


@pytest.fixture
def ml20m_dir(tmp_path) -> Path:
    return write_ml20m(tmp_path / "ml-20m")


def load(folder, **kw):
    return load_dataset("ml-20m", path=folder, verify=False, **kw)


def test_counts_labels_and_schema(ml20m_dir):
    ds = load(ml20m_dir)
    assert (ds.n_users, ds.n_items, ds.n_events) == (3, 8, 8)  # items: every movie of movies.csv
    assert [f.name for f in ds.schema.features] == ["hist_movie_id", "movie_id", "genres"]  # no user features
    assert ds.users.shape == (3, 0)
    assert int(ds.events["label"].sum()) == 4  # rating 5.0 (RF² §5.1)
    assert int(load(ml20m_dir, click_threshold=4.5).events["label"].sum()) == 5
    ev = ds.events
    assert (ev["user"].dtype, ev["item"].dtype, ev["label"].dtype, ev["timestamp"].dtype) == (
        np.int32, np.int32, np.int8, np.int64)


def test_user_events_split_and_history_by_hand(ml20m_dir):
    ds = load(ml20m_dir, history_maxlen=4)
    # movie ids sorted: 1, 2, 11, 47, 50, 200, 131254, 131262 -> item 0..7
    ev = ds.events[ds.events["user"] == 0]  # userId 1, by (timestamp, item)
    assert ev["timestamp"].tolist() == [1112484676, 1112484727, 1112484727, 1112484819, 1112486027]
    assert ev["item"].tolist() == [2, 4, 5, 3, 1]
    assert ev["label"].tolist() == [1, 0, 1, 1, 0]
    assert ev["is_test"].tolist() == [False] * 4 + [True]
    X = FeatureEncoder(ds).encode_numpy(ev.index.to_numpy())
    a, b = ds.schema.columns["hist_movie_id"]
    # clicks: item 2 @..676, item 5 @..727, item 3 @..819; the click at ..727 is not history at ..727
    assert X[:, a:b].tolist() == [[0, 0, 0, 0], [3, 0, 0, 0], [3, 0, 0, 0], [3, 6, 0, 0], [3, 6, 4, 0]]
    assert ds.events[ds.events["user"] == 1]["is_test"].tolist() == [False, True]


def test_genres_from_movies_csv(ml20m_dir):
    ds = load(ml20m_dir)
    g = ds.item_sequences["genres"]
    code = {name: i + 1 for i, name in enumerate(GENRES)}
    assert ds.schema.feature("genres").vocab_size == len(GENRES) + 1  # IMAX included, "(no genres listed)" not
    assert g.shape == (8, 5)  # Toy Story has 5 genres
    assert g[2].tolist() == [code["Comedy"], code["Drama"], code["Romance"], 0, 0]  # quoted title with a comma
    assert g[5].tolist() == [code["Action"], code["Crime"], code["Drama"], code["IMAX"], 0]
    assert g[6].tolist() == [0] * 5  # (no genres listed)


def test_chunked_reading_matches_one_pass(ml20m_dir):
    one = ml20m.read_ratings(ml20m_dir / "ratings.csv")
    small = ml20m.read_ratings(ml20m_dir / "ratings.csv", chunk_rows=3)
    for c in one:
        assert np.array_equal(one[c], small[c]) and one[c].dtype == small[c].dtype
    assert one["rating"].dtype == np.float32 and one["user_raw"].dtype == np.int32
    assert one["rating"].tolist() == [r for _, _, r, _ in RATINGS]


def test_crlf_and_no_final_newline(tmp_path):
    d = write_ml20m(tmp_path / "x")
    text = (d / "ratings.csv").read_text().rstrip("\n").replace("\n", "\r\n")
    (d / "ratings.csv").write_bytes(text.encode())
    assert load(d).n_events == len(RATINGS)


@pytest.mark.parametrize("header, match", [
    ("userId,movieId,timestamp", r"ratings\.csv.*missing columns \['rating'\]"),
    ("userId;movieId;rating;timestamp", r"ratings\.csv.*wrong separator, it uses ';'"),
])
def test_bad_header(ml20m_dir, header, match):
    lines = (ml20m_dir / "ratings.csv").read_text().splitlines()
    (ml20m_dir / "ratings.csv").write_text("\n".join([header] + lines[1:]) + "\n")
    with pytest.raises(DataFormatError, match=match):
        load(ml20m_dir)


@pytest.mark.parametrize("bad, match", [
    ("1,3,4.0,1112486027,7", r"line 5 has 5 fields"),
    ("1,3,four,1112486027", r"line 5, column 'rating'.*'four'"),
    ("1,,4.0,1112486027", r"line 5, column 'movieId'"),
    ("1,3,4.0", r"line 5"),
])
def test_malformed_line_is_located(ml20m_dir, bad, match):
    lines = (ml20m_dir / "ratings.csv").read_text().splitlines()
    lines.insert(4, bad)
    (ml20m_dir / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv.*" + match):
        load(ml20m_dir)
    with pytest.raises(DataFormatError, match=r"ratings\.csv.*" + match):  # found in a later chunk, too
        ml20m.read_ratings(ml20m_dir / "ratings.csv", chunk_rows=2)


def test_bad_movies_and_ids(tmp_path):
    d = write_ml20m(tmp_path / "a", movies=MOVIES_CSV + "300,Heat, Again (1995),Action\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv.*record 10 has 4 fields.*double-quoted"):
        load(d)
    d = write_ml20m(tmp_path / "b", movies=MOVIES_CSV.replace("movieId,title,genres", "movieId\ttitle\tgenres"))
    with pytest.raises(DataFormatError, match=r"movies\.csv.*header"):
        load(d)
    d = write_ml20m(tmp_path / "c", ratings=RATINGS + [(9, 999, 4.0, 1)])
    with pytest.raises(DataFormatError, match=r"movies that movies\.csv does not list \(e\.g\. \[999\]\)"):
        load(d)
    d = write_ml20m(tmp_path / "d", ratings=RATINGS + [(1, 2, 4.0, 1)])
    with pytest.raises(DataFormatError, match="at most once"):
        load(d)
    d = write_ml20m(tmp_path / "e", ratings=RATINGS + [(9, 2, 5.5, 1)])
    with pytest.raises(DataFormatError, match=r"ratings must lie in \[0\.5, 5\]"):
        load(d)
    d = write_ml20m(tmp_path / "f", ratings=[])
    with pytest.raises(DataFormatError, match=r"ratings\.csv: no ratings"):
        load(d)
    (d / "ratings.csv").write_text("")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: empty file"):
        load(d)


def test_verify_reports_unpinned_checksums(ml20m_dir):
    with pytest.warns(UnpinnedChecksumWarning, match=r"ratings\.csv.*md5 of ml-20m\.zip"):
        load_dataset("ml-20m", path=ml20m_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedChecksumWarning)
        load_dataset("ml-20m", path=ml20m_dir, verify=False)


def test_ml25m_name_and_folder(tmp_path, monkeypatch):
    write_ml20m(tmp_path / "ml-25m")
    monkeypatch.setenv("RF2_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    ds = load_dataset("ml-25m", verify=False)
    assert ds.name == "ml-25m" and str(tmp_path / "ml-25m") in ds.source
    with pytest.raises(DataNotFoundError, match=r"ml-20m.*ratings\.csv.*ml-20m\.zip"):
        load_dataset("ml-20m", verify=False)  # $RF2_DATA_DIR holds ml-25m only


# -- download ----------------------------------------------------------------------------------------------------------


def zipped(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("ratings.csv", "movies.csv"):
            zf.writestr(f"ml-20m/{name}", (folder / name).read_bytes())
        zf.writestr("ml-20m/README.txt", "fixture")
    return buf.getvalue()


def test_download_checks_the_archive_md5(tmp_path, ml20m_dir, server, monkeypatch):
    monkeypatch.delenv("RF2_DATA_DIR", raising=False)
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    state, url = server
    state["payload"] = zipped(ml20m_dir)
    good = dataclasses.replace(ml20m.RELEASES["ml-20m"], url=url, md5=hashlib.md5(state["payload"]).hexdigest())
    monkeypatch.setitem(ml20m.RELEASES, "ml-20m", good)
    with pytest.raises(DataNotFoundError, match="download=True"):
        load_dataset("ml-20m", verify=False)  # never downloads unless asked
    ds = load_dataset("ml-20m", download=True, verify=False)
    assert ds.n_events == len(RATINGS) and "downloaded" in ds.source
    assert (tmp_path / "cache" / "ml-20m" / "ratings.csv").read_bytes() == (ml20m_dir / "ratings.csv").read_bytes()
    assert "cache" in load_dataset("ml-20m", verify=False).source  # found in the cache from now on


def test_download_with_wrong_md5_caches_nothing(tmp_path, ml20m_dir, server, monkeypatch):
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    state, url = server
    state["payload"] = zipped(ml20m_dir)
    with pytest.raises(ChecksumError, match="md5"):
        download_release(ml20m.RELEASES["ml-20m"], url=url)  # the official md5: our fixture is not the file
    assert not (tmp_path / "cache" / "ml-20m").exists()


def test_official_release_metadata():
    for name, rel in ml20m.RELEASES.items():
        assert rel.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert len(rel.md5) == 32 and int(rel.md5, 16) >= 0
        assert rel.sha256 == {}  # no official per-file digest: reported by verify, not invented


# -- helpers used at full size ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ts_bits", [10, 40, 62])
def test_event_order_is_lexsort(ts_bits):
    """The packed-key sort (one or two passes) orders like np.lexsort, ties kept in input order."""
    from rf2.data.loading import event_order

    rng = np.random.default_rng(ts_bits)
    user, item = rng.integers(0, 50, 5000), rng.integers(0, 30, 5000)
    ts = rng.integers(0, 2**ts_bits, 5000)
    ts[::7] = ts[0]
    item[::11] = 3
    assert np.array_equal(event_order(user, ts, item), np.lexsort((item, ts, user)))


def test_codes_for_small_and_huge_ids():
    from rf2.data.loading import codes_in, sorted_unique

    for values in (np.array([7, 3, 3, 900, 7], dtype=np.int32), np.array([7, 3, 3, 2**40, 7], dtype=np.int64)):
        ids = sorted_unique(values)
        assert ids.tolist() == sorted(set(values.tolist()))
        pos, missing = codes_in(ids, np.append(values, [5, -1]))
        assert pos[:5].tolist() == [1, 0, 0, 2, 1] and missing.tolist() == [False] * 5 + [True, True]
