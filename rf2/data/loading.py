"""Helpers shared by the full-size loaders (``ml-1m``, ``ml-1m-implicit``, ``ml-20m``/``ml-25m``,
``taobao``).

* **Where the files are**: :func:`locate_pinned` follows :func:`rf2.data.fetch.locate`'s search
  order (explicit path > ``$RF2_DATA_DIR`` > cache > download only if asked) and attaches the
  sha256 digests pinned by the loader module; :func:`check_files` verifies the pinned files and
  *reports* (:class:`UnpinnedChecksumWarning`) the ones no official digest exists for.
* **Downloads**: GroupLens publishes one md5 per zip archive (``<url>.md5``), not a digest per
  file, so :func:`download_release` checks the archive's md5 (and the per-file sha256 where one is
  pinned), streams the files out of the archive and moves them into the cache atomically.
* **Reading**: :func:`read_columns` reads selected columns of a large delimited file with compact
  dtypes, in chunks, into preallocated arrays (peak memory ~ the final arrays plus one chunk); any
  problem (missing column, wrong separator, malformed line) is a
  :class:`~rf2.data.dataset.DataFormatError` naming the file, and the line when there is one.
* **Indexing**: :func:`codes_in` maps raw ids to dense indices; :func:`event_order` sorts events by
  ``(user, timestamp, item)`` with one int64 key when the three fit in 63 bits.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .dataset import DataFormatError
from .fetch import DataNotFoundError, DataSpec, Located, download_archive, locate
from .fetch import verify as verify_files


class UnpinnedChecksumWarning(UserWarning):
    """A file was read without a sha256 check because no official digest is pinned for it."""


# -- finding and checking files ----------------------------------------------------------------------
@dataclass(frozen=True)
class ZipRelease:
    """An official zip archive whose publisher gives an md5 of the whole archive."""

    name: str  # cache folder name
    url: str
    folder: str  # folder inside the archive
    md5: str  # the publisher's md5 of the archive
    files: tuple[str, ...]  # files extracted into the cache
    sha256: Mapping[str, str] = field(default_factory=dict)  # per-file digests, where known
    homepage: str = ""


def locate_pinned(
    spec: DataSpec,
    pins: Mapping[str, str],
    path: str | os.PathLike | None = None,
    download: bool = False,
    release: ZipRelease | None = None,
) -> Located:
    """:func:`rf2.data.fetch.locate`, with ``pins`` as the expected digests and, when
    ``download=True`` and no copy exists, a download of ``release`` into the cache."""
    try:
        found = locate(spec, path=path, download=False)
    except DataNotFoundError:
        if not download or release is None or path is not None:
            raise
        folder = download_release(release)
        found = Located(folder, "files", f"downloaded from {release.url}")
    return dataclasses.replace(found, sha256=dict(pins))


def check_files(found: Located, files: Sequence[str], verify: bool, unpinned_reason: str = "") -> None:
    """Verify ``files`` against the pinned digests; warn about files that have none."""
    if not verify:
        return
    verify_files(found, tuple(files))
    unpinned = [f for f in files if f not in found.sha256]
    if unpinned:
        warnings.warn(
            f"{found.path}: no pinned sha256 for {unpinned}, read without a checksum"
            + (f" ({unpinned_reason})" if unpinned_reason else ""),
            UnpinnedChecksumWarning,
            stacklevel=3,
        )


def download_release(release: ZipRelease, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``release`` into ``<cache>/<name>/`` (md5 of the archive and any pinned sha256
    checked; nothing cached on failure, :func:`rf2.data.fetch.download_archive`); returns the folder.
    ``url`` overrides the archive's URL (a mirror, or a local server in tests)."""
    return download_archive(release.name, url or release.url, release.folder, tuple(release.files),
                            dict(release.sha256), md5=release.md5, timeout=timeout)


# -- reading delimited files ---------------------------------------------------------------------------
_SEPARATORS = (",", "\t", ";", "|", "::", " ")


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def read_header(path: Path, sep: str, expected: Sequence[str], what: str) -> list[str]:
    """The header's column names (stripped); every name in ``expected`` must be present."""
    try:
        with _open_text(path) as fh:
            line = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read {what} ({exc})") from exc
    line = line.rstrip("\r\n")
    if not line:
        raise DataFormatError(f"{path}: empty file; expected a {what} with header {list(expected)}")
    fields = [f.strip() for f in line.split(sep)]
    missing = [c for c in expected if c not in fields]
    if missing:
        hint = ""
        if len(fields) == 1:
            other = next((s for s in _SEPARATORS if s != sep and s in line), None)
            hint = f" (no {sep!r} in the header: wrong separator" + (f", it uses {other!r}" if other else "") + "?)"
        raise DataFormatError(
            f"{path}: not a valid {what}: missing columns {missing}; the header is {fields}{hint}"
        )
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise DataFormatError(f"{path}: not a valid {what}: duplicate columns {dupes} in the header")
    return fields


def count_lines(path: Path, block: int = 1 << 24) -> int:
    """Number of lines (a last line without a newline counts)."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


_NA_TOKENS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})


def _check_value(text: str, dtype) -> str | None:
    """Why ``text`` is not a valid value of ``dtype`` (None if it is)."""
    if dtype == "category":
        return None if text != "" else "empty value"
    kind = np.dtype(dtype).kind
    try:
        if kind in "iu":
            v = int(text)
            info = np.iinfo(dtype)
            if not info.min <= v <= info.max:
                return f"{v} is out of range for {np.dtype(dtype).name}"
        elif text not in _NA_TOKENS:  # pandas reads these as NaN in a float column
            float(text)
    except ValueError:
        return f"{text!r} is not a{'n integer' if kind in 'iu' else ' number'}"
    return None


def first_bad_line(
    path: Path, sep: str, fields: Sequence[str], columns: Mapping[str, object], start: int = 2, limit: int | None = None
) -> str | None:
    """Describe the first line (>= ``start``, 1-based, header = line 1) that does not have
    ``len(fields)`` fields or whose ``columns`` do not parse; None if none is found."""
    idx = {c: fields.index(c) for c in columns}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno < start:
                continue
            if limit is not None and lineno >= start + limit:
                break
            text = line.rstrip("\r\n")
            if not text:
                continue
            parts = text.split(sep)
            if len(parts) != len(fields):
                return f"line {lineno} has {len(parts)} fields, expected {len(fields)} {list(fields)}: {text[:120]!r}"
            for c, j in idx.items():
                problem = _check_value(parts[j].strip(), columns[c])
                if problem:
                    return f"line {lineno}, column {c!r}: {problem}: {text[:120]!r}"
    return None


def read_columns(
    path: Path,
    columns: Mapping[str, object],
    what: str,
    sep: str = ",",
    chunk_rows: int = 1 << 21,
    na_values: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read ``columns`` (name -> numpy dtype, or ``"category"``) of a delimited file with a header.

    Numeric columns come back with exactly the requested dtype; a ``"category"`` column comes
    back as int32 codes into its sorted distinct values, returned under ``<name>:categories``.
    Uncompressed files are read in ``chunk_rows`` chunks into preallocated arrays.
    """
    path = Path(path)
    fields = read_header(path, sep, list(columns), what)
    capacity = None if path.suffix == ".gz" else max(count_lines(path) - 1, 0)
    numeric = {c: d for c, d in columns.items() if d != "category"}
    cats = [c for c, d in columns.items() if d == "category"]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    out: dict[str, np.ndarray] = {}
    if capacity is not None:
        out = {c: np.empty(capacity, dtype=d) for c, d in numeric.items()}
        out.update({c: np.empty(capacity, dtype=np.int32) for c in cats})
    seen: dict[str, dict[str, int]] = {c: {} for c in cats}
    row = 0
    try:
        # every column is parsed (unrequested ones as throw-away categories): with ``usecols`` the C
        # parser silently accepts lines with extra fields
        reader = pd.read_csv(
            path, sep=sep, header=0, names=fields, dtype={f: columns.get(f, "category") for f in fields},
            chunksize=chunk_rows, engine="c", na_values=na_values, keep_default_na=na_values is None,
            encoding="utf-8-sig",
        )
        for chunk in reader:
            n = len(chunk)
            if capacity is not None and row + n > capacity:  # cannot happen with a header line
                raise DataFormatError(f"{path}: more rows than lines")
            for c in columns:
                col = chunk[c]
                if c in seen:
                    if col.isna().any():
                        raise ValueError(f"empty value in column {c!r}")
                    lookup = seen[c]
                    for v in col.cat.categories:
                        lookup.setdefault(str(v), len(lookup))
                    remap = np.array([lookup[str(v)] for v in col.cat.categories], dtype=np.int32)
                    vals = remap[col.cat.codes.to_numpy()]
                else:
                    vals = col.to_numpy()
                if capacity is not None:
                    out[c][row:row + n] = vals
                else:
                    parts[c].append(vals)
            row += n
    except (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        if isinstance(exc, DataFormatError):
            raise
        where = None
        if path.suffix != ".gz":
            where = first_bad_line(path, sep, fields, columns, start=row + 2, limit=chunk_rows + 1)
        raise DataFormatError(f"{path}: not a valid {what}: {where or exc}") from exc
    if capacity is not None:
        result = {c: a[:row] for c, a in out.items()}
    else:
        result = {
            c: (np.concatenate(p) if p else np.empty(0, dtype=np.int32 if c in seen else columns[c]))
            for c, p in parts.items()
        }
    for c in cats:  # codes into the sorted category names: independent of the order of appearance
        names = sorted(seen[c])
        position = {name: i for i, name in enumerate(names)}
        rank = np.array([position[name] for name in seen[c]], dtype=np.int32)  # first-seen code -> rank
        if len(names):
            result[c] = rank[result[c]]
        result[f"{c}:categories"] = np.array(names, dtype=object)
    return result


def read_dat_lines(path: Path, n_fields: int, what: str, encoding: str = "latin-1") -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a GroupLens ``::``-separated file; a line with another number
    of fields is a :class:`DataFormatError` naming the file and the line."""
    try:
        with open(path, encoding=encoding, newline="") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read {what} ({exc})") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != n_fields:
            hint = " (GroupLens .dat files separate fields with '::')" if len(parts) == 1 else ""
            raise DataFormatError(
                f"{path}: not a valid {what}: line {lineno} has {len(parts)} '::'-separated fields, "
                f"expected {n_fields}{hint}: {line[:120]!r}"
            )
        yield lineno, parts


def read_dat_numeric(path: Path, names: Sequence[str], dtypes: Mapping[str, object], what: str) -> dict[str, np.ndarray]:
    """Read a large all-integer GroupLens ``::`` file (``ratings.dat``) with compact dtypes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read {what} ({exc})") from exc
    if not raw.strip():
        raise DataFormatError(f"{path}: empty file; expected a {what}")
    first = raw[: raw.find(b"\n")] if b"\n" in raw else raw
    if first.count(b"::") != len(names) - 1:
        raise DataFormatError(
            f"{path}: not a valid {what}: line 1 has {first.count(b'::') + 1} '::'-separated fields, expected "
            f"{len(names)} (GroupLens .dat files separate fields with '::'): {first[:120]!r}"
        )
    if b"\t" in raw:
        line = raw[: raw.find(b"\t")].count(b"\n") + 1
        raise DataFormatError(f"{path}: not a valid {what}: line {line} contains a tab")
    try:
        df = pd.read_csv(
            io.BytesIO(raw.replace(b"::", b"\t")), sep="\t", header=None, names=list(names),
            dtype=dict(dtypes), engine="c", encoding="latin-1",
        )
    except (ValueError, OverflowError, pd.errors.ParserError) as exc:
        del raw
        problem = None
        pattern = re.compile(r"^-?\d+(::-?\d+){%d}$" % (len(names) - 1))
        with open(path, encoding="latin-1") as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.rstrip("\r\n")
                if text and not pattern.match(text):
                    problem = f"line {lineno} is not {len(names)} '::'-separated integers: {text[:120]!r}"
                    break
        raise DataFormatError(f"{path}: not a valid {what}: {problem or exc}") from exc
    return {c: df[c].to_numpy() for c in names}


# -- ids and ordering ---------------------------------------------------------------------------------
_TABLE_LIMIT = 1 << 26  # raw ids up to this use a direct lookup table (<= 256 MB of int32)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` for non-negative integer ids, via a presence table when the ids are small."""
    values = np.asarray(values)
    if values.size and values.dtype.kind in "iu" and values.min() >= 0 and values.max() < _TABLE_LIMIT:
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        return np.flatnonzero(present).astype(values.dtype)
    return np.unique(values)


def codes_in(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in the sorted array ``ids`` (int32), and a mask of values not in ``ids``
    (their position is 0)."""
    ids = np.asarray(ids)
    values = np.asarray(values)
    if ids.size == 0:
        return np.zeros(values.size, dtype=np.int32), np.ones(values.size, dtype=bool)
    if ids.dtype.kind in "iu" and values.dtype.kind in "iu" and ids[0] >= 0 and ids[-1] < _TABLE_LIMIT:
        table = np.full(int(ids[-1]) + 1, -1, dtype=np.int32)
        table[ids] = np.arange(ids.size, dtype=np.int32)
        inside = (values >= 0) & (values <= ids[-1])
        pos = np.where(inside, table[np.where(inside, values, 0)], -1)
        missing = pos < 0
        pos[missing] = 0
        return pos.astype(np.int32, copy=False), missing
    pos = np.searchsorted(ids, values)
    np.minimum(pos, ids.size - 1, out=pos)
    missing = ids[pos] != values
    pos[missing] = 0
    return pos.astype(np.int32), missing


def event_order(user: np.ndarray, timestamp: np.ndarray, item: np.ndarray) -> np.ndarray:
    """A stable permutation sorting events by ``(user, timestamp, item)`` (user and item are dense
    non-negative indices).

    One stable argsort of a packed int64 key when the three fit in 63 bits (MovieLens-20M: 18 + 30 +
    15 bits; Taobao: 21 + 20 + 20), else two (``(timestamp, item)``, then user); both are much faster
    than ``np.lexsort`` on tens of millions of rows.
    """
    n = len(user)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(timestamp.min())
    bu = int(user.max()).bit_length()
    bt = int(timestamp.max() - t0).bit_length()
    bi = int(item.max()).bit_length()
    if bu + bt + bi <= 63:
        key = user.astype(np.int64) << (bt + bi)
        key |= (timestamp.astype(np.int64) - t0) << bi
        key |= item.astype(np.int64)
        return np.argsort(key, kind="stable")
    if bt + bi <= 63:
        key = (timestamp.astype(np.int64) - t0) << bi
        key |= item.astype(np.int64)
        first = np.argsort(key, kind="stable")
        del key
        return first[np.argsort(user[first], kind="stable")]
    return np.lexsort((item, timestamp, user))


def split_counts(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Test events per user, with :func:`rf2.data.split.temporal_split`'s rule: ``floor(f * n)``,
    at least 1 when ``f > 0``, and never all of a user's events."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = np.floor(counts * test_fraction).astype(np.int64)
    if test_fraction > 0:
        n_test = np.clip(n_test, 1, None)
    return np.minimum(n_test, np.maximum(counts - 1, 0))
