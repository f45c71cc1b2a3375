"""Typos that used to run: every run echoes what its optimisation does per tier, wrong option types,
deep TOML and negative --top are one-line errors, a zip bomb stops at the pinned sizes."""
from __future__ import annotations

import io
import zipfile

import pytest

from rf2.cli import main
from rf2.config import RunConfig, load_toml

SYN = ["--dataset", "synthetic", "--dataset-options", "n_users=120", "n_items=50", "events_per_user=10"]


def test_run_and_list_echo_the_bits_each_tier_gets(capsys):
    # 1:2:9 is not a Table 1 ratio: it maps to 32 * r / 9 bits = 4/7/32, said at the start of the run
    assert main(["run", *SYN, "--optimization", "quant:1:2:9", "--max-rounds", "1", "--quiet"]) == 0
    assert "low/mid/high: 4/7/32 bits" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "paper-table1" in out and "quant:1:2:8" in out and "4/8/32 bits" in out


@pytest.mark.parametrize("value", [16.5, "abc", True])
def test_model_options_of_the_wrong_type_are_value_errors(value):
    with pytest.raises(ValueError, match="model_options: embedding_dim"):
        RunConfig(dataset="synthetic", model="dlrm", model_options={"embedding_dim": value})


def test_deeply_nested_toml_names_the_file(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match="deep.toml"):
        load_toml(deep)


def test_tiers_top_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["tiers", "--dataset", "synthetic", "--top", "-5"])
    assert "--top" in capsys.readouterr().err


def test_a_zip_bomb_stops_at_the_pinned_size(tmp_path, monkeypatch, server):
    from rf2.data import ChecksumError
    from rf2.data.fetch import fetch
    from rf2.data.movielens import ML100K

    state, url = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", b"\0" * 50_000_000)  # 50 MB of zeros, ~50 kB compressed
    state["payload"] = buf.getvalue()
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    read = []
    real_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: read.append(len(b := real_read(self, n))) or b)
    with pytest.raises(ChecksumError, match="u.data"):
        fetch(ML100K, url=url)
    assert sum(read) <= 3_000_000  # stopped near u.data's pinned 1,979,173 bytes, not after 50 MB
