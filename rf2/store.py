"""A sweep's results directory: layout, atomic commits, one writer at a time, format version.

Layout (format :data:`FORMAT`)::

    rf2-results.json      {"format": 3, "rf2": "<version>"}: what wrote this directory
    .lock                 held (flock) by the sweep writing here; released when it exits or dies
    sweep.toml            the sweep as last run (provenance)
    runs/<id>.csv         tidy rows of one finished run (tier, metric, value, ... + every config field)
    runs/<id>.scores.npz  its test events' user, tier, label and score, and per-user ranking metrics
                          (rf2.evaluation.scores), from which intervals are bootstrapped
    runs/<id>.json        its commit record: config, timings, the CSV's sha256 and row count, the scores' sha256
    runs/<id>.failed.json a run that raised or diverged: the reason and traceback; retried next time
    tiers/<mapping>__seed<k>.csv, tiers/summary.csv    heterogeneity reports (Figure 4)
    results.csv, mdac.csv combined tables, rewritten at the end of every sweep (mdac.csv: per run,
    mdac_summary.csv      with bootstrap intervals and verdicts; mdac_summary.csv: per cell over seeds)

**Crash safety.** Every file is written to a hidden temporary name, fsynced, and renamed into
place. A run is *finished* only when its ``.json`` exists and records the sha256 of its ``.csv``;
the ``.json`` is renamed into place last. A sweep killed at any moment (SIGKILL included) leaves
at worst a ``.csv`` without its record or a stray temporary file: both are ignored by every
reader, and ``rf2 sweep`` again recomputes exactly those runs.

**One writer.** A sweep holds an exclusive ``flock`` on ``.lock`` for its whole duration; a
second sweep on the same directory is refused with a message naming the holder. The kernel
releases the lock when the holder exits, however it exits, so a killed sweep never leaves a
stale lock.

**Versions.** Directories written by an older rf2 (no ``rf2-results.json``, or another format
number) are refused by readers and writers with a message saying how to upgrade them
(``rf2 upgrade-results DIR``). Format 3 changed defaults to the RF² authors' simulator
(:mod:`rf2.upgrade`): upgrading a format-2 directory relabels its runs with the old defaults
spelled out, so old and new runs never share a row of a table.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

FORMAT = 3
MARKER = "rf2-results.json"
TMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp


class ResultsFormatError(ValueError):
    """A results directory was written by another rf2 version, or is not one at all."""


class SweepLockedError(RuntimeError):
    """Another sweep is writing to the same results directory."""


#: entries of a results directory that must be real files or folders, never symlinks (a planted
#: link would make the sweep write through it, e.g. truncate the link's target)
ENTRIES = (MARKER, ".lock", "sweep.toml", "runs", "tiers", "plots", "results.csv", "mdac.csv", "mdac_summary.csv")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it into
    place. The temporary name is unpredictable and created exclusively (``mkstemp``: ``O_EXCL``,
    so never through a planted link); the rename replaces a symlink at ``path`` rather than
    writing through it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version() -> str:
    from rf2 import __version__

    return __version__


_WARNED: set = set()


def warn_damaged(path: Path, why: str, treated: str = "treated as not done") -> None:
    """One warning line per damaged file (per process), naming it; the caller goes on without it."""
    key = (str(path), why)
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"rf2: warning: {path} is damaged ({why}); {treated}", file=sys.stderr)


def remove_stray_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left behind (never read)."""
    removed = []
    for folder in (path, path / "runs", path / "tiers"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for f in folder.glob(f".*{TMP_SUFFIX}"):
            if f.is_symlink() or f.is_file():
                try:
                    f.unlink()
                    removed.append(f)
                except OSError:
                    pass
    return removed


def check_entries(path: Path) -> None:
    """Refuse a results directory whose own entries (:data:`ENTRIES`) are symlinks."""
    links = [name for name in ENTRIES if (Path(path) / name).is_symlink()]
    if links:
        raise ResultsFormatError(f"{path}: {', '.join(links)} {'is a symlink' if len(links) == 1 else 'are symlinks'}; "
                                 "rf2 does not write through links in a results directory: remove them (or sweep "
                                 "into a new directory)")


def _open_lock(path: Path) -> int:
    try:
        return os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if (path / ".lock").is_symlink():
            raise ResultsFormatError(f"{path}: .lock is a symlink; rf2 does not write through links in a results "
                                     "directory: remove it") from None
        raise


def check_format(path: Path) -> None:
    """Raise :class:`ResultsFormatError` unless ``path`` is an empty/new directory or one in the
    current format."""
    path = Path(path)
    check_entries(path)
    marker = path / MARKER
    if marker.exists():
        try:
            fmt = json.loads(marker.read_text()).get("format")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ResultsFormatError(f"{marker} is corrupt ({exc}); it should hold {{\"format\": {FORMAT}}}") from exc
        if fmt != FORMAT:
            raise ResultsFormatError(
                f"{path} holds results in format {fmt!r}, this rf2 reads format {FORMAT}; "
                + ("upgrade it with `rf2 upgrade-results DIR`" if isinstance(fmt, int) and fmt < FORMAT
                   else "use the rf2 version that wrote it")
            )
        return
    runs = path / "runs"
    if runs.is_dir() and any(runs.glob("*.csv")):
        raise ResultsFormatError(
            f"{path} was written by an older rf2 (no {MARKER}): its runs are not read as they may not be "
            f"complete; upgrade it with `rf2 upgrade-results {path}` or sweep into a new directory"
        )


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.runs = self.path / "runs"
        self._lock_fd: int | None = None

    # -- the writer's lock ----------------------------------------------------------------------
    @contextmanager
    def lock(self):
        self.path.mkdir(parents=True, exist_ok=True)
        check_format(self.path)
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise SweepLockedError(
                f"another sweep is writing to {self.path} ({holder}); wait for it to finish, or sweep into another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self._lock_fd = fd
        try:
            remove_stray_temporaries(self.path)
            self.runs.mkdir(parents=True, exist_ok=True)
            if not (self.path / MARKER).exists():
                atomic_write(self.path / MARKER, json.dumps({"format": FORMAT, "rf2": _version()}))
            yield self
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("ResultsStore: writes need the directory lock (use `with store.lock():`)")

    # -- runs ------------------------------------------------------------------------------------
    def commit_run(self, rid: str, rows_csv: str, info: dict, scores: bytes = b"") -> None:
        """CSV and scores first, then the record that vouches for them (the commit point)."""
        self._require_lock()
        rows = pd.read_csv(io.StringIO(rows_csv)).assign(run_id=rid)
        data = rows.to_csv(index=False).encode()
        atomic_write(self.runs / f"{rid}.csv", data)
        extra = {}
        if scores:
            atomic_write(self.runs / f"{rid}.scores.npz", scores)
            extra = {"scores_sha256": _sha256(scores), "scores_bytes": len(scores)}
        record = {"format": FORMAT, "id": rid, **info, "csv_sha256": _sha256(data), "n_rows": len(rows), **extra}
        atomic_write(self.runs / f"{rid}.json", json.dumps(record, indent=2))
        fail = self.runs / f"{rid}.failed.json"
        if fail.exists():
            fail.unlink()

    def record_failure(self, rid: str, config: dict, error: str, tb: str) -> None:
        self._require_lock()
        atomic_write(self.runs / f"{rid}.failed.json",
                     json.dumps({"format": FORMAT, "config": config, "error": error, "traceback": tb}, indent=2))

    def finished(self) -> dict[str, Path]:
        """run id -> CSV path, for every run whose record vouches for its CSV's exact bytes."""
        out = {}
        if not self.runs.is_dir():
            return out
        for rec in sorted(self.runs.glob("*.json")):
            if rec.name.endswith(".failed.json") or rec.name.startswith("."):
                continue
            rid = rec.name[: -len(".json")]
            csv = self.runs / f"{rid}.csv"
            if rec.is_symlink() or csv.is_symlink():  # not written by rf2: never vouched for
                continue
            try:
                want = json.loads(rec.read_text(encoding="utf-8")).get("csv_sha256")
                ok = want is not None and csv.exists() and _sha256(csv.read_bytes()) == want
            except (ValueError, AttributeError) as exc:  # not UTF-8, not JSON, not an object
                warn_damaged(rec, f"{type(exc).__name__}: {exc}")
                ok = False
            except OSError:
                ok = False
            if ok:
                out[rid] = csv
        return out

    def scores(self, rid: str):
        """The run's :class:`~rf2.evaluation.scores.EvalScores`, or ``None`` when it has none (a run
        from before they were stored) or the file does not match its record's sha256."""
        from rf2.evaluation.scores import EvalScores

        try:
            want = json.loads((self.runs / f"{rid}.json").read_text()).get("scores_sha256")
            if want is None:
                return None
            data = (self.runs / f"{rid}.scores.npz").read_bytes()
        except (OSError, ValueError, AttributeError):
            return None
        if _sha256(data) != want:
            return None
        return EvalScores.from_bytes(data)

    def finished_ids(self) -> set[str]:
        check_format(self.path)
        return set(self.finished())

    def write_spec(self, toml: str) -> None:
        self._require_lock()
        atomic_write(self.path / "sweep.toml", toml)

    # -- tier reports and combined tables ------------------------------------------------------
    def write_tier_report(self, cfg, rep) -> None:
        self._require_lock()
        d = self.path / "tiers"
        d.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{cfg.mapping}__seed{cfg.seed}")
        top = rep.top_items.assign(mapping=cfg.mapping, seed=cfg.seed, dataset=cfg.dataset)
        atomic_write(d / f"{slug}.csv", top.to_csv(index=False))
        summary_path = d / "summary.csv"
        row = pd.DataFrame([{**rep.summary(), "seed": cfg.seed, "dataset": cfg.dataset}])
        if summary_path.exists():
            try:
                old = pd.read_csv(summary_path)
                old = old[~((old["mapping"] == cfg.mapping) & (old["seed"] == cfg.seed) & (old["dataset"] == cfg.dataset))]
            except (ValueError, KeyError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
                warn_damaged(summary_path, f"{type(exc).__name__}: {exc}", "rewritten from the tiers reported now")
                old = None
            if old is not None:
                row = pd.concat([old, row], ignore_index=True)
        atomic_write(summary_path, row.to_csv(index=False))

    def write_tables(self, n_boot: int = 1000) -> None:
        """``results.csv`` (every row), ``mdac.csv`` (per run, with intervals and verdicts) and
        ``mdac_summary.csv`` (per cell over seeds), for AUC and every ranking metric present."""
        from rf2.results import load_results, mdac_tables

        self._require_lock()
        rows = load_results(self.path)
        if len(rows):
            atomic_write(self.path / "results.csv", rows.to_csv(index=False))
            per_run, summary = [], []
            metrics = ["auc"] + sorted(m for m in rows["metric"].unique() if "@" in str(m))
            for metric in metrics:
                t, s = mdac_tables(rows, metric, scores=self.path, n_boot=n_boot)
                if len(t):
                    per_run.append(t.assign(metric=metric))
                if len(s):
                    summary.append(s.assign(metric=metric))
            for name, parts in (("mdac.csv", per_run), ("mdac_summary.csv", summary)):
                table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
                table = keep_earlier_intervals(table, self.path / name)
                atomic_write(self.path / name, table.to_csv(index=False))


# the columns an interval row is computed from (its identity is every other column)
_VALUE_COLUMNS = re.compile(r"^(rc_.*|mdac.*|mean_mdac.*|floor.*|verdict|p_within|.*@\d+_.*|auc_.*)$")


def _key_part(x) -> str:
    """One cell of a row's identity, the same whether it was computed or read back from CSV."""
    try:
        return repr(float(x))
    except (TypeError, ValueError):
        return str(x)


def keep_earlier_intervals(table: pd.DataFrame, earlier_path: Path) -> pd.DataFrame:
    """``table`` (``mdac.csv`` or ``mdac_summary.csv`` as computed now) with every row that has no
    interval now (verdict ``no scores``: its runs' per-user scores are gone, e.g. a fresh clone,
    where ``*.scores.npz`` are not committed) taken from ``earlier_path`` where that file holds the
    same row *with* its interval: same identity (every non-value column, which for ``mdac.csv``
    includes the run id) and the same point estimates (overall change and MDAC, to 1e-6). Rewriting
    a directory's tables so never throws away intervals it computed before."""
    from rf2.evaluation.uncertainty import NO_SCORES

    if table.empty or "verdict" not in table.columns or not earlier_path.is_file():
        return table
    missing = table.index[table["verdict"] == NO_SCORES]
    if not len(missing):
        return table
    try:
        old = pd.read_csv(earlier_path)
    except (ValueError, pd.errors.ParserError) as exc:
        warn_damaged(earlier_path, f"{type(exc).__name__}: {exc}", "its earlier intervals are not kept")
        return table
    ident = [c for c in table.columns if not _VALUE_COLUMNS.match(c)]
    if "verdict" not in old.columns or any(c not in old.columns for c in ident):
        return table
    old = old[old["verdict"] != NO_SCORES]
    by_key = {tuple(_key_part(v) for v in r[ident]): r for _, r in old.iterrows()}
    shared = [c for c in table.columns if c in old.columns]
    out, kept = table.copy(), 0
    out[shared] = out[shared].astype(object)  # an old row's values go in as read
    for i in missing:
        o = by_key.get(tuple(_key_part(v) for v in table.loc[i, ident]))
        if o is None:
            continue
        same = all(abs(float(o[c]) - float(table.loc[i, c])) <= 1e-6
                   for c in ("rc_overall", "mdac", "mean_mdac") if c in table.columns and c in old.columns
                   and pd.notna(table.loc[i, c]) and pd.notna(o[c]))
        if same:
            out.loc[i, shared] = o[shared].values
            kept += 1
    if kept:
        print(f"rf2: {earlier_path.name}: {kept} row(s) keep the intervals computed earlier "
              f"(their runs' scores files are gone)", file=sys.stderr)
    return out


def upgrade_results(path: str | Path) -> int:
    """Bring a results directory to the current format; returns the number of runs kept.

    Format 1 (rf2 before the results store): every run with both a CSV and a JSON record is vouched
    for as it is; CSVs without a record are left out (rerun them). Format 2 (defaults before the
    RF² authors' protocol): every run's config is relabelled with the old defaults made explicit
    (:func:`rf2.upgrade.relabel_config`) and its files renamed to the relabelled run's id; tier
    reports and ``sweep.toml`` are relabelled the same way; the combined tables are rewritten."""
    path = Path(path)
    store = ResultsStore(path)
    fmt = 1
    if (path / MARKER).exists():
        try:
            fmt = json.loads((path / MARKER).read_text()).get("format")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ResultsFormatError(f"{path / MARKER} is corrupt ({exc})") from exc
        if fmt == FORMAT:
            return len(store.finished())
        if not isinstance(fmt, int) or fmt > FORMAT:
            check_format(path)
    elif not store.runs.is_dir():
        raise ResultsFormatError(f"{path} is not a results directory (no runs/ folder)")
    check_entries(path)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepLockedError(f"a sweep is writing to {path}; upgrade it when it has finished") from None
        if fmt == 1:
            for csv in sorted(store.runs.glob("*.csv")):
                rec = csv.with_suffix(".json")
                if not rec.exists():
                    continue
                try:
                    info = json.loads(rec.read_text(encoding="utf-8"))
                except ValueError as exc:
                    warn_damaged(rec, f"{type(exc).__name__}: {exc}", "its run is left out")
                    continue
                data = csv.read_bytes()
                info.update({"format": 2, "csv_sha256": _sha256(data), "n_rows": len(pd.read_csv(io.BytesIO(data)))})
                atomic_write(rec, json.dumps(info, indent=2))
            atomic_write(path / MARKER, json.dumps({"format": 2, "rf2": _version(), "upgraded_from": 1}))
        kept = _relabel_runs(store)
        atomic_write(path / MARKER, json.dumps({"format": FORMAT, "rf2": _version(), "upgraded_from": fmt}))
        store._lock_fd = fd
        try:
            store.write_tables()
        finally:
            store._lock_fd = None
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return kept


def _relabel_runs(store: "ResultsStore") -> int:
    """Format 2 -> 3: relabel every finished (and failed) run, its tier reports and sweep.toml."""
    from rf2.config import RunConfig
    from rf2.sweep import SweepSpec, run_id
    from rf2.upgrade import (
        OLD_DATASET_DEFAULTS, OLD_SYSTEM_PRESET, RF2_MOVIELENS, relabel_config, relabel_mapping, relabel_optimization,
    )

    kept = 0
    for rid, csv in sorted(store.finished().items()):
        rec = store.runs / f"{rid}.json"
        info = json.loads(rec.read_text())
        cfg = RunConfig.from_dict(relabel_config(info["config"]))
        new = run_id(cfg)
        rows = pd.read_csv(csv)
        for k, v in cfg.to_dict().items():
            rows[k] = v if not isinstance(v, dict) else str(v)
        rows["run_id"] = new
        data = rows.to_csv(index=False).encode()
        atomic_write(store.runs / f"{new}.csv", data)
        info.update({"format": FORMAT, "id": new, "config": cfg.to_dict(), "csv_sha256": _sha256(data),
                     "n_rows": len(rows), "relabelled_from": rid})
        if cfg.optimization.lower().startswith("overselect"):
            info["relabel_approximate"] = "rf2 0.1 drew K + ceil(K r) candidates; the relabelled spec draws floor(K (1 + r))"
        old_scores = store.runs / f"{rid}.scores.npz"
        if old_scores.exists() and new != rid:
            os.replace(old_scores, store.runs / f"{new}.scores.npz")
        atomic_write(store.runs / f"{new}.json", json.dumps(info, indent=2))
        if new != rid:
            for f in (rec, csv):
                f.unlink(missing_ok=True)
        kept += 1
    for fail in sorted(store.runs.glob("*.failed.json")):
        try:
            info = json.loads(fail.read_text(encoding="utf-8"))
        except ValueError as exc:
            warn_damaged(fail, f"{type(exc).__name__}: {exc}", "left as it is")
            continue
        try:
            cfg = RunConfig.from_dict(relabel_config(info["config"]))
        except (KeyError, ValueError):
            continue
        info["config"] = cfg.to_dict()
        atomic_write(store.runs / f"{run_id(cfg)}.failed.json", json.dumps(info, indent=2))
        if fail.name != f"{run_id(cfg)}.failed.json":
            fail.unlink()
    tiers = store.path / "tiers"
    if tiers.is_dir():
        for f in sorted(tiers.glob("*.csv")):
            t = pd.read_csv(f)
            if "mapping" in t:
                t["mapping"] = t["mapping"].map(lambda m: relabel_mapping(m) if isinstance(m, str) else m)
            name = f.name
            if name.startswith("random__seed"):
                name = "random-shuffle" + name[len("random"):]
            atomic_write(tiers / name, t.to_csv(index=False))
            if name != f.name:
                f.unlink()
    spec_path = store.path / "sweep.toml"
    if spec_path.exists():
        try:
            spec = SweepSpec.from_toml(spec_path)
        except ValueError:
            spec = None
        if spec is not None:
            base = dict(spec.base)
            if base.get("dataset", "ml-100k") in RF2_MOVIELENS:
                base["dataset_options"] = {**OLD_DATASET_DEFAULTS, **(base.get("dataset_options") or {})}
            base["system_options"] = {"preset": OLD_SYSTEM_PRESET, **(base.get("system_options") or {})}
            relabelled = SweepSpec(base=base, mappings=tuple(relabel_mapping(m) for m in spec.mappings),
                                   optimizations=tuple(relabel_optimization(o) for o in spec.optimization_list if o != "none"),
                                   seeds=spec.seeds, noise_floor=False)
            atomic_write(spec_path, relabelled.to_toml())
    return kept
