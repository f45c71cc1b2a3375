"""An on-disk cache of generated datasets, memory-mapped on the next load.

A synthetic population at MovieLens-20M size (138,000 users, 18.7M events) takes 15-40 s to
generate on two cores; every worker process of a sweep used to generate it again. With a cache
directory (``rf2 run/sweep --dataset-cache DIR``, or ``$RF2_DATASET_CACHE``) the first load writes
the dataset there, one ``.npy`` file per column, and every later load in any process maps those
files read-only (``numpy.load(mmap_mode="r")``): well under a second, and the pages are shared by
all the processes of the machine through the page cache.

**What is cached**: only datasets whose loader is marked ``cacheable = True`` -- today the
``synthetic`` generator, a pure function of its options and rf2's data code. File-based loaders
(MovieLens, Taobao) are not cached: their output also depends on which files are found where, which
this cache does not track; they load as before.

With history features in its schema, the entry also holds the click history index
(:class:`~rf2.data.history.ClickHistory`), built once when the entry is written.

**The key** is the dataset name, its options, a fingerprint of rf2's data code (the source of every
module in ``rf2/data/``: a change to any loader makes a new entry) and this file's format version,
so a cached dataset is never one that today's code would not produce. An entry is a folder
``<name>-<key>``; it is written into a temporary folder and renamed when complete, so a crash or
a concurrent writer never leaves a half entry behind (a leftover temporary folder is ignored).
rf2 writes nothing into the cache directory but these folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import InteractionDataset
from .history import ClickHistory

FORMAT = 1
_FRAMES = ("events", "users", "items")
ENV = "RF2_DATASET_CACHE"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the source of every module of ``rf2/data/`` (name and bytes, sorted by name)."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(name: str, options: dict) -> str:
    blob = json.dumps({"format": FORMAT, "name": name, "options": options, "code": code_fingerprint()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cacheable(name: str) -> bool:
    from . import _loader

    return bool(getattr(_loader(name), "cacheable", False))


def resolve_root(root: str | os.PathLike | None) -> Path | None:
    """The cache directory: ``root``, else ``$RF2_DATASET_CACHE``, else None (no cache)."""
    value = root if root is not None else os.environ.get(ENV) or None
    return None if value in (None, "") else Path(value).expanduser()


def load(name: str, options: dict | None = None, root: str | os.PathLike | None = None) -> InteractionDataset:
    """``load_dataset(name, **options)``, through the cache under ``root`` (see the module
    docstring) when the dataset is cacheable and a cache directory is set."""
    from . import load_dataset

    options = dict(options or {})
    folder = None
    base = resolve_root(root)
    if base is not None and cacheable(name):
        folder = base / f"{name}-{cache_key(name, options)}"
        if (folder / "meta.json").is_file():
            return read(folder)
    ds = load_dataset(name, **options)
    if folder is not None:
        try:
            write(ds, folder)
        except (OSError, ValueError) as exc:  # the dataset is loaded; only the cache could not be written
            warnings.warn(f"dataset cache: could not write {folder} ({exc}); loading without it", stacklevel=2)
    return ds


def write(ds: InteractionDataset, folder: Path) -> None:
    """Write ``ds`` as the complete entry ``folder`` (atomically: a temporary sibling, renamed)."""
    for frame in _FRAMES:
        df = getattr(ds, frame)
        if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
            raise ValueError(f"dataset cache: {ds.name}.{frame} must have a 0-based RangeIndex")
        for c in df.columns:
            if df[c].dtype == object:
                raise ValueError(f"dataset cache: column {frame}.{c} holds Python objects, which are not cached")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        columns = {}
        for frame in _FRAMES:
            df = getattr(ds, frame)
            columns[frame] = [str(c) for c in df.columns]
            for i, c in enumerate(df.columns):
                np.save(tmp / f"{frame}.{i}.npy", np.ascontiguousarray(df[c].to_numpy()), allow_pickle=False)
        seqs = sorted(ds.item_sequences)
        for i, k in enumerate(seqs):
            np.save(tmp / f"seq.{i}.npy", np.ascontiguousarray(ds.item_sequences[k]), allow_pickle=False)
        if ds.eval_negatives is not None:
            np.save(tmp / "eval_negatives.npy", np.ascontiguousarray(ds.eval_negatives), allow_pickle=False)
        history = any(f.source == "history" for f in ds.schema.features)
        if history:  # the click history index, which a run with history features builds first
            for part in ("clicked", "begin", "end"):
                np.save(tmp / f"history.{part}.npy", getattr(ds.history, part), allow_pickle=False)
        (tmp / "schema.pkl").write_bytes(pickle.dumps(ds.schema, protocol=5))
        meta = {"format": FORMAT, "name": ds.name, "description": ds.description, "source": ds.source,
                "columns": columns, "sequences": seqs, "eval_negatives": ds.eval_negatives is not None,
                "history": history,
                "rows": {f: len(getattr(ds, f)) for f in _FRAMES}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # last: marks the entry complete
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # not a concurrent writer that got there first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read(folder: Path) -> InteractionDataset:
    """The dataset of a complete entry, its arrays memory-mapped read-only."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"dataset cache: {folder} has format {meta.get('format')}, expected {FORMAT}; delete it")
    frames = {}
    for frame in _FRAMES:
        cols = {c: np.load(folder / f"{frame}.{i}.npy", mmap_mode="r") for i, c in enumerate(meta["columns"][frame])}
        df = pd.DataFrame(cols, copy=False) if cols else pd.DataFrame(index=pd.RangeIndex(meta["rows"][frame]))
        frames[frame] = df
    seqs = {k: np.load(folder / f"seq.{i}.npy", mmap_mode="r") for i, k in enumerate(meta["sequences"])}
    neg = np.load(folder / "eval_negatives.npy", mmap_mode="r") if meta["eval_negatives"] else None
    schema = pickle.loads((folder / "schema.pkl").read_bytes())
    ds = InteractionDataset(name=meta["name"], events=frames["events"], users=frames["users"], items=frames["items"],
                            schema=schema, item_sequences=seqs, description=meta["description"], source=meta["source"],
                            eval_negatives=neg)
    if meta.get("history"):  # the cached_property's value, mapped
        ds.__dict__["history"] = ClickHistory(*(np.load(folder / f"history.{p}.npy", mmap_mode="r")
                                                for p in ("clicked", "begin", "end")))
    return ds
