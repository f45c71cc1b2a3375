"""Find a dataset's raw files; download them only when asked.

Search order (first hit wins):

1. an explicit ``path`` (a folder holding the files, or a folder holding ``<name>/``);
   an explicit path that lacks the files is an error, never silently skipped;
2. ``$RF2_DATA_DIR/<name>/``;
3. the cache, ``$RF2_CACHE_DIR/<name>/`` (default ``~/.cache/rf2/<name>/``);
4. a copy shipped by an installed package (MovieLens-100K: the ``recbole==1.2.1`` wheel);
5. the official source, **only** with ``download=True`` (``rf2 download <name>`` or
   ``--download``): streamed to a temporary file, every extracted file checked against a pinned
   sha256, then moved into the cache atomically.

Nothing here touches the network unless ``download=True``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ENV_DATA_DIR = "RF2_DATA_DIR"
ENV_CACHE_DIR = "RF2_CACHE_DIR"


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found; the message says where to put the files."""


class ChecksumError(RuntimeError):
    """A downloaded file does not match its pinned sha256."""


@dataclass(frozen=True)
class RemoteArchive:
    """A zip archive at an official URL, with the sha256 of every file rf2 reads from it."""

    url: str
    folder: str  # the folder inside the archive that holds the files
    sha256: dict[str, str]  # file name -> sha256 of its content
    homepage: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> size in bytes (extraction stops beyond it)


@dataclass(frozen=True)
class Located:
    path: Path
    kind: str  # "files" (original format) or the name of a packaged format, e.g. "recbole"
    origin: str  # human-readable: which step of the search order found it
    sha256: dict[str, str] = field(default_factory=dict)  # expected digests of the files found here


@dataclass(frozen=True)
class PackagedCopy:
    """A copy of the data inside an installed Python package (in its own format)."""

    kind: str
    find: Callable[[], Path | None]
    install_hint: str
    sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    name: str
    files: tuple[str, ...]  # the original files the loader needs
    remote: RemoteArchive | None = None
    packaged: tuple[PackagedCopy, ...] = field(default_factory=tuple)
    manual_hint: str = ""  # for data that cannot be downloaded automatically


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "rf2")


def _expand(path: str | os.PathLike, what: str) -> Path:
    """``path`` with ``~``/``~user`` expanded; an unknown user is a :class:`DataNotFoundError`."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:  # pathlib: "Could not determine home directory." for ~nobody
        raise DataNotFoundError(f"{what} {os.fspath(path)!r}: cannot expand '~' ({exc}); give the folder's full path") from None


def _holds(folder: Path, files: tuple[str, ...]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def locate(spec: DataSpec, path: str | os.PathLike | None = None, download: bool = False) -> Located:
    """Find ``spec``'s files following the search order above."""
    digests = dict(spec.remote.sha256) if spec.remote else {}
    if path is not None:
        p = _expand(path, f"{spec.name}: data path")
        for cand in (p, p / spec.name):
            if _holds(cand, spec.files):
                return Located(cand, "files", f"explicit path {cand}", digests)
        missing = [f for f in spec.files if not (p / f).is_file() and not (p / spec.name / f).is_file()]
        raise DataNotFoundError(
            f"{spec.name}: {p} does not hold the dataset's files (missing {missing}). "
            f"Put {list(spec.files)} in {p} or {p / spec.name}, or drop the explicit path to use the default search."
        )
    tried = []
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        cand = _expand(env, f"{spec.name}: ${ENV_DATA_DIR}") / spec.name
        if _holds(cand, spec.files):
            return Located(cand, "files", f"${ENV_DATA_DIR} ({cand})", digests)
        tried.append(f"${ENV_DATA_DIR}/{spec.name} = {cand}")
    cand = cache_dir() / spec.name
    if _holds(cand, spec.files):
        return Located(cand, "files", f"cache ({cand})", digests)
    tried.append(f"cache {cand}")
    for pkg in spec.packaged:
        found = pkg.find()
        if found is not None:
            return Located(found, pkg.kind, f"installed package copy ({found})", dict(pkg.sha256))
        tried.append(f"package copy ({pkg.install_hint})")
    if download and spec.remote is not None:
        return Located(fetch(spec), "files", f"downloaded from {spec.remote.url}", digests)
    how = [f"put {list(spec.files)} in {cache_dir() / spec.name} (or in $RF2_DATA_DIR/{spec.name})"]
    if spec.remote is not None:
        how.append(f"download it with `rf2 download {spec.name}` (from {spec.remote.url}, sha256-checked)")
    how += [f"install a packaged copy: {pkg.install_hint}" for pkg in spec.packaged]
    if spec.manual_hint:
        how.append(spec.manual_hint)
    raise DataNotFoundError(
        f"{spec.name}: no copy found (looked in: {'; '.join(tried)}). To fix, " + ", or ".join(how) + "."
    )


def verify(found: Located, files: tuple[str, ...] | None = None) -> None:
    """Check the files a loader is about to read against their pinned sha256.

    A mismatch means a truncated, corrupt or modified copy: loading it would give silently wrong
    results, so it is an error (loaders take ``verify=False`` to read a modified copy on purpose).
    """
    for name in files if files is not None else found.sha256:
        expected = found.sha256.get(name)
        if expected is None:
            continue
        actual = sha256_of(found.path / name)
        if actual != expected:
            raise ChecksumError(
                f"{found.path / name} is not the official file (sha256 {actual[:12]}..., expected {expected[:12]}...): "
                f"it is truncated, corrupt or modified. Replace it (e.g. `rf2 download`), or pass verify=False "
                f"(dataset option) to load a modified copy on purpose."
            )


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(spec: DataSpec, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``spec.remote`` into the cache, verifying every file's sha256. Returns the folder.

    ``url`` overrides the archive's URL (a mirror, or a local server in tests); the checksums are
    the same either way.
    """
    if spec.remote is None:
        raise DataNotFoundError(f"{spec.name} has no official download. {spec.manual_hint}")
    remote = spec.remote
    return download_archive(spec.name, url or remote.url, remote.folder, tuple(remote.sha256), remote.sha256,
                            timeout=timeout, sizes=remote.sizes)


def download_archive(
    name: str,
    url: str,
    folder: str,
    files: tuple[str, ...],
    sha256: dict[str, str],
    md5: str | None = None,
    timeout: float = 60.0,
    sizes: dict[str, int] | None = None,
) -> Path:
    """Download a zip archive into ``<cache>/<name>/``; returns the folder.

    The archive is streamed to a temporary file (its md5 compared with ``md5``, the publisher's,
    when given), the ``files`` of its ``folder`` streamed out of it (each checked against its
    pinned ``sha256``, where known), and the folder moved into the cache atomically: a failed or
    corrupt download caches nothing. A file with a pinned size (``sizes``) is refused as soon as
    the archive declares, or extraction reaches, more bytes than that (a zip bomb stops early).
    """
    sizes = dict(sizes or {})
    target = cache_dir() / name
    if target.is_symlink():
        raise DataNotFoundError(f"{name}: the cache entry {target} is a symlink; rf2 does not download through links "
                                f"in its cache: remove it (or point ${ENV_DATA_DIR} at the data it links to)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-download-") as tmp:
        tmp = Path(tmp)
        archive = tmp / "archive.zip"
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as out:
                while block := resp.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as exc:
            raise DataNotFoundError(
                f"{name}: download from {url} failed ({exc}). Check the connection, or put the files "
                f"{list(files)} in {target} by hand."
            ) from exc
        if md5 is not None and digest.hexdigest() != md5:
            raise ChecksumError(
                f"{name}: the archive from {url} has md5 {digest.hexdigest()}, expected {md5} "
                f"(published by the data owner next to the archive). The download is corrupt or not the "
                f"official file; nothing was cached."
            )
        extracted = tmp / name
        extracted.mkdir()
        try:
            with zipfile.ZipFile(archive) as zf:
                for file in files:
                    member = f"{folder}/{file}"
                    h = hashlib.sha256()
                    limit = sizes.get(file)
                    try:
                        info = zf.getinfo(member)
                        if limit is not None and info.file_size != limit:
                            raise _too_big(name, file, url, info.file_size, limit)
                        n = 0
                        with zf.open(info) as src, open(extracted / file, "wb") as dst:
                            while block := src.read(1 << 20):
                                n += len(block)
                                if limit is not None and n > limit:
                                    raise _too_big(name, file, url, n, limit)
                                h.update(block)
                                dst.write(block)
                    except KeyError:
                        raise ChecksumError(f"{name}: the archive from {url} lacks {member}") from None
                    expected = sha256.get(file)
                    if expected is not None and h.hexdigest() != expected:
                        raise ChecksumError(
                            f"{name}: {file} from {url} has sha256 {h.hexdigest()}, expected {expected}. "
                            f"The download is corrupt or not the official file; nothing was cached."
                        )
        except zipfile.BadZipFile as exc:
            raise ChecksumError(f"{name}: {url} did not return a valid zip archive ({exc})") from exc
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    return target


def _too_big(name: str, file: str, url: str, size: int, limit: int) -> ChecksumError:
    return ChecksumError(f"{name}: {file} from {url} has {size:,} bytes or more, the official file {limit:,}; "
                         "extraction stopped (corrupt, or not the official archive); nothing was cached.")
