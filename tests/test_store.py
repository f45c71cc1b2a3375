"""The results directory's writer (rf2/store.py): every file goes through a temporary name and a
rename, so a crash at any moment leaves the old file or the new one, never a torn one; tier
reports are kept once per (dataset, mapping, seed) however often a sweep is resumed."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rf2 import store as S
from rf2.config import RunConfig
from rf2.store import ResultsStore, atomic_write


class Renames:
    """Spy on os.replace / os.rename: records (src, dst, bytes of src) and optionally fails."""

    def __init__(self, monkeypatch, fail_for: str | None = None):
        self.calls: list[tuple[Path, Path, bytes]] = []
        self.fail_for = fail_for
        for name in ("replace", "rename"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def spy(src, dst, *a, **kw):
            src, dst = Path(src), Path(dst)
            self.calls.append((src, dst, src.read_bytes() if src.is_file() else b""))
            if self.fail_for is not None and dst.name == self.fail_for:
                raise OSError("simulated crash before the rename")
            return real(src, dst, *a, **kw)
        return spy

    def into(self, path: Path) -> list[tuple[Path, Path, bytes]]:
        return [c for c in self.calls if c[1] == Path(path)]


def assert_written_by_rename(spy: Renames, path: Path) -> None:
    """``path`` holds exactly the bytes of a sibling temporary file renamed onto it."""
    calls = spy.into(path)
    assert calls, f"{path.name} was written in place, not renamed into place"
    src, dst, data = calls[-1]
    assert src != dst and src.parent == dst.parent  # same directory: the rename is atomic
    assert data == path.read_bytes()
    assert not src.exists()


# -- atomic_write ------------------------------------------------------------------------------------
def test_atomic_write_goes_through_a_temporary_file_and_a_rename(tmp_path, monkeypatch):
    spy = Renames(monkeypatch)
    target = tmp_path / "results.csv"
    atomic_write(target, "a,b\n1,2\n")
    assert target.read_bytes() == b"a,b\n1,2\n"
    assert_written_by_rename(spy, target)
    atomic_write(target, b"\x00\x01")  # bytes as they are, replacing the old content
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no temporary left behind


@pytest.mark.parametrize("name", ["rf2-results.json", "sweep.toml", "results.csv", "mdac.csv", "summary.csv"])
def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path, monkeypatch, name):
    target = tmp_path / name
    old = b"old,complete\n" * 1000
    target.write_bytes(old)
    spy = Renames(monkeypatch, fail_for=name)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write(target, "new\n" * 5000)
    assert target.read_bytes() == old  # not truncated, not half new
    # the new content was complete in the temporary file when the crash came
    assert spy.into(target) and spy.into(target)[-1][2] == b"new\n" * 5000


# -- every file of a results directory is committed atomically -----------------------------------------
def fake_rows(optimization: str, auc: dict[str, float]) -> str:
    cfg = RunConfig(dataset="synthetic", optimization=optimization).to_dict()
    rows = []
    for tier, v in auc.items():
        rows.append({"tier": tier, "metric": "auc", "value": v, "n_events": 10, "n_users": 5,
                     **{k: (str(x) if isinstance(x, dict) else x) for k, x in cfg.items()}})
    return pd.DataFrame(rows).to_csv(index=False)


def test_every_results_file_is_renamed_into_place(tmp_path, monkeypatch):
    spy = Renames(monkeypatch)
    st = ResultsStore(tmp_path)
    with st.lock():
        st.write_spec("seeds = [0]\n")
        st.commit_run("base", fake_rows("none", {"low": 0.6, "mid": 0.7, "high": 0.8, "overall": 0.7}), {"config": {}})
        st.commit_run("q", fake_rows("quant:1:2:4", {"low": 0.5, "mid": 0.7, "high": 0.8, "overall": 0.66}),
                      {"config": {}})
        st.write_tier_report(RunConfig(dataset="synthetic", mapping="dirichlet:0.05"), fake_report("dirichlet:0.05", 1))
        st.write_tables(n_boot=10)
    files = [tmp_path / "rf2-results.json", tmp_path / "sweep.toml", tmp_path / "results.csv", tmp_path / "mdac.csv",
             tmp_path / "mdac_summary.csv", tmp_path / "tiers" / "summary.csv",
             *[tmp_path / "runs" / f"{r}.{ext}" for r in ("base", "q") for ext in ("csv", "json")]]
    for f in files:
        assert_written_by_rename(spy, f)
    (report,) = [p for p in (tmp_path / "tiers").iterdir() if p.name != "summary.csv"]
    assert_written_by_rename(spy, report)
    mdac = pd.read_csv(tmp_path / "mdac.csv")
    assert len(mdac) == 1 and mdac["mdac"].iloc[0] == pytest.approx(abs(0.5 / 0.6 - 1.0))


def test_a_run_is_committed_data_first_record_last(tmp_path, monkeypatch):
    spy = Renames(monkeypatch)
    st = ResultsStore(tmp_path)
    with st.lock():
        st.record_failure("q", {"optimization": "quant:1:2:4"}, "diverged", "tb")
        assert_written_by_rename(spy, tmp_path / "runs" / "q.failed.json")
        st.commit_run("q", fake_rows("quant:1:2:4", {"low": 0.5, "overall": 0.5}), {"config": {}}, scores=b"scores")
    runs = tmp_path / "runs"
    for f in ("q.csv", "q.scores.npz", "q.json"):
        assert_written_by_rename(spy, runs / f)
    # the record, which vouches for the CSV and the scores, is renamed into place after both
    order = [c[1] for c in spy.calls]
    assert order.index(runs / "q.json") > max(order.index(runs / "q.csv"), order.index(runs / "q.scores.npz"))
    rec = json.loads((runs / "q.json").read_text())
    assert rec["scores_bytes"] == 6 and rec["n_rows"] == 2 and rec["id"] == "q"
    assert not (runs / "q.failed.json").exists()  # a finished run is no longer listed as failed
    assert set(st.finished()) == {"q"}


def test_writes_need_the_lock(tmp_path):
    st = ResultsStore(tmp_path)
    for write in (lambda: st.write_spec("x"), lambda: st.write_tables(),
                  lambda: st.write_tier_report(RunConfig(dataset="synthetic"), fake_report("random", 1)),
                  lambda: st.commit_run("r", "tier\nlow\n", {}), lambda: st.record_failure("r", {}, "e", "tb")):
        with pytest.raises(RuntimeError, match="need the directory lock"):
            write()
    assert not (tmp_path / "tiers").exists() and not (tmp_path / "sweep.toml").exists()


# -- tier reports ---------------------------------------------------------------------------------------
def fake_report(mapping: str, marker: int) -> SimpleNamespace:
    """A heterogeneity report whose numbers identify it (``marker``)."""
    top = pd.DataFrame({"item": [7, 3], "rank": [1, 2], "tier": ["low", "high"], "share": [0.5, 0.25 * marker]})
    return SimpleNamespace(top_items=top, summary=lambda: {"mapping": mapping, "users_low": marker, "mean_jsd": marker / 10})


def summary(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "tiers" / "summary.csv").sort_values(["dataset", "mapping", "seed"]).reset_index(drop=True)


def test_tier_summary_has_one_row_per_dataset_mapping_and_seed_after_resumes(tmp_path):
    st = ResultsStore(tmp_path)
    writes = [("synthetic", "random", 0, 1), ("synthetic", "dirichlet:0.05", 0, 2), ("synthetic", "random", 1, 3),
              ("ml-100k", "random", 0, 4)]
    with st.lock():
        for ds, m, seed, marker in writes:
            st.write_tier_report(RunConfig(dataset=ds, mapping=m, seed=seed), fake_report(m, marker))
    first = summary(tmp_path)
    assert len(first) == 4
    # a resumed sweep writes the same reports again, one of them changed: replaced, not duplicated
    with st.lock():
        for ds, m, seed, marker in writes:
            st.write_tier_report(RunConfig(dataset=ds, mapping=m, seed=seed), fake_report(m, 10 + marker if m == "random" and seed == 1 else marker))
    again = summary(tmp_path)
    assert len(again) == 4
    assert list(again.columns) == ["mapping", "users_low", "mean_jsd", "seed", "dataset"]
    expected = pd.DataFrame({"mapping": ["random", "dirichlet:0.05", "random", "random"],
                             "users_low": [4, 2, 1, 13], "mean_jsd": [0.4, 0.2, 0.1, 1.3], "seed": [0, 0, 0, 1],
                             "dataset": ["ml-100k", "synthetic", "synthetic", "synthetic"]})
    expected = expected.sort_values(["dataset", "mapping", "seed"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected)


def test_tier_report_file_holds_the_top_items_with_their_run(tmp_path):
    st = ResultsStore(tmp_path)
    with st.lock():
        st.write_tier_report(RunConfig(dataset="synthetic", mapping="dirichlet:0.05", seed=2), fake_report("dirichlet:0.05", 2))
        st.write_tier_report(RunConfig(dataset="synthetic", mapping="random", seed=2), fake_report("random", 3))
    files = sorted(p for p in (tmp_path / "tiers").iterdir() if p.name != "summary.csv")
    assert len(files) == 2
    tables = {pd.read_csv(f)["mapping"].iloc[0]: pd.read_csv(f) for f in files}
    t = tables["dirichlet:0.05"]
    assert t["item"].tolist() == [7, 3] and t["share"].tolist() == [0.5, 0.5]
    assert (t["seed"] == 2).all() and (t["dataset"] == "synthetic").all() and (t["mapping"] == "dirichlet:0.05").all()
    assert tables["random"]["share"].tolist() == [0.5, 0.75]
    # file names are plain (no ':' or '/'), and name the mapping and seed
    for f in files:
        assert ":" not in f.name and f.suffix == ".csv" and "seed2" in f.name


def test_real_heterogeneity_report_lands_in_the_summary(tmp_path):
    from rf2.data import make_synthetic
    from tier_mapping import map_tiers
    from tier_mapping.report import report_for

    ds = make_synthetic(n_users=120, n_items=60, events_per_user=10, seed=5)
    cfg = RunConfig(dataset="synthetic", mapping="dirichlet:0.1", seed=4)
    rep = report_for(ds, map_tiers(ds, cfg.mapping, 3, seed=cfg.seed))
    st = ResultsStore(tmp_path)
    with st.lock():
        st.write_tier_report(cfg, rep)
    row = pd.read_csv(tmp_path / "tiers" / "summary.csv").iloc[0]
    assert row["mapping"] == "dirichlet:0.1" and row["seed"] == 4 and row["dataset"] == "synthetic"
    assert [row[f"users_{t}"] for t in ("low", "mid", "high")] == list(rep.users_per_tier)
    assert row["users_low"] + row["users_mid"] + row["users_high"] == 120
    assert row["mean_jsd"] == pytest.approx(rep.mean_jsd)
