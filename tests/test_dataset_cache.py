"""The on-disk dataset cache (rf2/data/cache.py): what is cached, that a cached dataset is the
dataset, that it is read back memory-mapped without regenerating it, and its key and atomicity."""
from __future__ import annotations

import os

import numpy as np
import pytest

from rf2.config import RunConfig
from rf2.data import cache, load_dataset
from rf2.simulation import Simulation

SMALL = dict(n_users=120, n_items=80, events_per_user=12, seed=3)


def same_dataset(a, b) -> None:
    for frame in ("events", "users", "items"):
        x, y = getattr(a, frame), getattr(b, frame)
        assert list(x.columns) == list(y.columns) and x.index.equals(y.index)
        for c in y.columns:
            assert x[c].dtype == y[c].dtype and np.array_equal(x[c].to_numpy(), y[c].to_numpy()), (frame, c)
    assert a.schema == b.schema and a.name == b.name and a.description == b.description
    assert sorted(a.item_sequences) == sorted(b.item_sequences)
    for k in b.item_sequences:
        assert np.array_equal(a.item_sequences[k], b.item_sequences[k])
    assert (a.eval_negatives is None) == (b.eval_negatives is None)
    if b.eval_negatives is not None:
        assert np.array_equal(a.eval_negatives, b.eval_negatives)


@pytest.mark.parametrize("options", [SMALL, {**SMALL, "n_items": 400, "split": "leave-one-out", "user_id": True}],
                         ids=["temporal", "leave-one-out"])
def test_a_cached_dataset_is_the_dataset_and_is_read_back_mapped(tmp_path, monkeypatch, options):
    fresh = load_dataset("synthetic", **options)
    first = cache.load("synthetic", options, tmp_path)
    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and entries[0].name.startswith("synthetic-") and (entries[0] / "meta.json").is_file()
    same_dataset(first, fresh)

    import rf2.data as data

    def never(**kw):
        raise AssertionError("the generator ran although the dataset is cached")

    never.cacheable = True
    monkeypatch.setitem(data.DATASETS, "synthetic", never)
    second = cache.load("synthetic", options, tmp_path)
    same_dataset(second, fresh)
    user = second.events["user"].to_numpy()
    import mmap

    chain, x = [], user
    while x is not None:
        chain.append(x)
        x = getattr(x, "base", None)
    assert any(isinstance(y, (np.memmap, mmap.mmap)) for y in chain)  # backed by the file, not a copy
    assert not user.flags.writeable  # read-only: a run cannot change the cached files
    if any(f.source == "history" for f in fresh.schema.features):  # the click history comes with it, mapped
        assert "history" in second.__dict__
        for part in ("clicked", "begin", "end"):
            assert np.array_equal(getattr(second.history, part), getattr(fresh.history, part))


def test_the_key_follows_the_options_and_the_code(tmp_path, monkeypatch):
    a = cache.cache_key("synthetic", SMALL)
    assert a == cache.cache_key("synthetic", dict(reversed(list(SMALL.items()))))  # order does not matter
    assert a != cache.cache_key("synthetic", {**SMALL, "seed": 4})
    assert a != cache.cache_key("ml-100k", SMALL)
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "another version of rf2/data")
    assert a != cache.cache_key("synthetic", SMALL)


def test_code_fingerprint_reads_every_data_module():
    import rf2.data.synthetic as synthetic

    cache.code_fingerprint.cache_clear()
    fp = cache.code_fingerprint()
    assert len(fp) == 64 and fp == cache.code_fingerprint()
    # recompute by hand from the files, in a different way: names and bytes in name order
    import hashlib
    from pathlib import Path

    folder = Path(synthetic.__file__).parent
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            h.update(name.encode() + (folder / name).read_bytes())
    assert fp == h.hexdigest()


def test_file_based_datasets_and_no_cache_dir_write_nothing(tmp_path, monkeypatch):
    calls = []
    import rf2.data as data

    def loader(**kw):
        calls.append(kw)
        return load_dataset("synthetic", **SMALL)

    monkeypatch.setitem(data.DATASETS, "filebased", loader)  # no `cacheable` attribute
    cache.load("filebased", {}, tmp_path)
    cache.load("filebased", {}, tmp_path)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
    monkeypatch.delenv(cache.ENV, raising=False)
    cache.load("synthetic", SMALL, None)  # no directory given, none in the environment
    assert list(tmp_path.iterdir()) == []


def test_the_environment_names_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "c"))
    cache.load("synthetic", SMALL)
    assert len(list((tmp_path / "c").iterdir())) == 1


def test_an_incomplete_entry_is_rebuilt_and_temporary_folders_do_not_remain(tmp_path):
    folder = tmp_path / f"synthetic-{cache.cache_key('synthetic', SMALL)}"
    folder.mkdir()
    (folder / "events.0.npy").write_bytes(b"half written")  # no meta.json: not complete
    with pytest.raises(OSError):  # the complete entry cannot replace a folder that is in the way...
        cache.write(load_dataset("synthetic", **SMALL), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # ...and no temporary folder is left
    with pytest.warns(UserWarning, match="could not write"):  # loading still works, without the cache
        ds = cache.load("synthetic", SMALL, tmp_path)
    same_dataset(ds, load_dataset("synthetic", **SMALL))
    import shutil

    shutil.rmtree(folder)
    cache.load("synthetic", SMALL, tmp_path)
    assert (folder / "meta.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_an_entry_of_another_format_is_an_error_that_says_what_to_do(tmp_path):
    cache.load("synthetic", SMALL, tmp_path)
    folder = next(tmp_path.iterdir())
    meta = (folder / "meta.json").read_text().replace('"format": 1', '"format": 99')
    (folder / "meta.json").write_text(meta)
    with pytest.raises(ValueError, match="delete it"):
        cache.load("synthetic", SMALL, tmp_path)


@pytest.mark.parametrize("cfg", [
    RunConfig(dataset="synthetic", dataset_options=SMALL, model="dlrm", clients_per_round=16, max_rounds=3,
              optimization="quant:2:4:8"),
    RunConfig(dataset="synthetic", dataset_options={**SMALL, "n_items": 400, "split": "leave-one-out", "user_id": True},
              model="fcf", model_options={"embedding_dim": 4, "adapter": [8, 4, 1]}, optimization="fedem:agg_ratio=0.25",
              clients_per_round=20, max_rounds=3, local_epochs=2, local_batch_size=16, train_negatives=4,
              client_optimizer="adam", client_lr=0.1, sampled_k=10)], ids=["dlrm-quant", "fcf-fedem-loo"])
def test_a_run_on_a_cached_dataset_equals_a_run_on_a_generated_one(tmp_path, monkeypatch, cfg):
    plain = Simulation(cfg, progress=False).run().table()
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    Simulation(cfg, progress=False).run()  # writes the entry
    cached = Simulation(cfg, progress=False).run()  # reads it back, mapped read-only
    assert len(list(tmp_path.iterdir())) == 1
    assert cached.table().equals(plain)


def test_cli_dataset_cache_flag(tmp_path, monkeypatch):
    from rf2.cli import main

    monkeypatch.setenv(cache.ENV, "")  # the flag sets it for this process: restored after the test

    out = tmp_path / "rows.csv"
    rc = main(["run", "--dataset", "synthetic", "--dataset-options", "n_users=120", "n_items=80",
               "events_per_user=12", "--max-rounds", "1", "--clients-per-round", "8", "--quiet",
               "--dataset-cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0 and len(list((tmp_path / "cache").iterdir())) == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="not a directory"):
        main(["run", "--dataset", "synthetic", "--max-rounds", "1", "--dataset-cache", str(tmp_path / "file")])


def test_a_dataset_the_cache_cannot_hold_still_loads(tmp_path, monkeypatch):
    def refuse(ds, folder):
        raise ValueError("dataset cache: column items.x holds Python objects, which are not cached")

    monkeypatch.setattr(cache, "write", refuse)
    with pytest.warns(UserWarning, match="Python objects"):
        ds = cache.load("synthetic", SMALL, tmp_path)
    same_dataset(ds, load_dataset("synthetic", **SMALL))
