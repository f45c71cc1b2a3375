"""Where data comes from: search order, offline errors, a sha256-checked download (from a local server)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from rf2.data import ChecksumError, DataNotFoundError
from rf2.data import fetch as fetch_mod
from rf2.data.fetch import DataSpec, PackagedCopy, fetch, locate, sha256_of
from rf2.data.movielens import ML100K


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No RF2_DATA_DIR, an empty cache."""
    monkeypatch.delenv("RF2_DATA_DIR", raising=False)
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def spec_without_package(spec: DataSpec) -> DataSpec:
    return DataSpec(spec.name, spec.files, spec.remote, packaged=())


def test_offline_with_no_copy_says_where_to_put_files(isolated):
    with pytest.raises(DataNotFoundError) as err:
        locate(spec_without_package(ML100K))
    msg = str(err.value)
    assert str(isolated / "cache" / "ml-100k") in msg
    assert "rf2 download ml-100k" in msg and "u.data" in msg


def test_missing_package_copy_is_reported_with_install_hint(isolated):
    spec = DataSpec(ML100K.name, ML100K.files, ML100K.remote,
                    packaged=(PackagedCopy("recbole", lambda: None, "pip install --no-deps recbole==1.2.1"),))
    with pytest.raises(DataNotFoundError, match="recbole==1.2.1"):
        locate(spec)


def test_search_order(isolated, ml100k_files, monkeypatch):
    spec = ML100K
    # nothing local: the packaged copy (if installed) is used
    found = locate(spec)
    assert found.kind == "recbole"
    # the cache beats the package
    cache = isolated / "cache" / "ml-100k"
    cache.mkdir(parents=True)
    for f in spec.files:
        (cache / f).write_bytes((ml100k_files / f).read_bytes())
    assert locate(spec).path == cache
    # RF2_DATA_DIR beats the cache
    monkeypatch.setenv("RF2_DATA_DIR", str(ml100k_files.parent))
    assert locate(spec).path == ml100k_files
    # an explicit path beats everything, and may name the dataset folder's parent
    assert locate(spec, path=cache.parent).path == cache


def make_zip(ml100k_files: Path, tamper: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ML100K.remote.sha256:
            data = (ml100k_files / name).read_bytes()
            if name == tamper:
                data = data.replace(b"\t5\t", b"\t4\t", 1)
            zf.writestr(f"ml-100k/{name}", data)
    return buf.getvalue()


def test_download_verifies_and_caches(isolated, ml100k_files, server):
    state, url = server
    state["payload"] = make_zip(ml100k_files)
    path = fetch(ML100K, url=url)
    assert path == isolated / "cache" / "ml-100k"
    for name, digest in ML100K.remote.sha256.items():
        assert sha256_of(path / name) == digest
    assert locate(spec_without_package(ML100K)).path == path


def test_tampered_download_is_rejected_and_not_cached(isolated, ml100k_files, server):
    state, url = server
    state["payload"] = make_zip(ml100k_files, tamper="u.data")
    with pytest.raises(ChecksumError, match=r"u\.data.*sha256"):
        fetch(ML100K, url=url)
    assert not (isolated / "cache" / "ml-100k").exists()


def test_not_a_zip_is_rejected(isolated, server):
    state, url = server
    state["payload"] = b"<html>login required</html>"
    with pytest.raises(ChecksumError, match="zip"):
        fetch(ML100K, url=url)


def test_unreachable_server_is_a_clear_error(isolated):
    with pytest.raises(DataNotFoundError, match="download from"):
        fetch(ML100K, url="http://127.0.0.1:9/ml-100k.zip", timeout=2)


def test_locate_never_downloads_unless_asked(isolated, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network access without download=True")

    monkeypatch.setattr(fetch_mod, "fetch", boom)
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", boom)
    with pytest.raises(DataNotFoundError):
        locate(spec_without_package(ML100K))


def test_remote_pins_every_file_by_sha256():
    for digest in ML100K.remote.sha256.values():
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert ML100K.remote.url.startswith("https://files.grouplens.org/")


def test_spec_without_remote_explains_manual_download(isolated):
    spec = DataSpec("taobao", ("raw_sample.csv",), manual_hint="get it from Tianchi (login needed)")
    with pytest.raises(DataNotFoundError, match="Tianchi"):
        locate(spec, download=True)
