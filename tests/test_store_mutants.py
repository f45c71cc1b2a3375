"""rf2/store.py's upgrade path and writer details, in-process and by hand: results directories of
format 1 and 2 built file by file (no sweep), so ``upgrade_results`` and ``_relabel_runs`` are
checked against hand-written expectations. Written against mutants that survived the suite
(benchmarks/MUTATION.md)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from rf2 import __version__
from rf2 import store as S
from rf2.config import RunConfig
from rf2.store import FORMAT, MARKER, ResultsFormatError, ResultsStore, SweepLockedError, upgrade_results
from rf2.sweep import run_id

AUC = {"none": {"low": 0.6, "mid": 0.7, "high": 0.8, "overall": 0.7},
       "quant:1:2:8": {"low": 0.45, "mid": 0.7, "high": 0.8, "overall": 0.65}}


def run_csv(cfg: dict, auc: dict[str, float]) -> str:
    rows = [{"tier": t, "metric": "auc", "value": v, "n_events": 10, "n_users": 5,
             **{k: (str(x) if isinstance(x, dict) else x) for k, x in cfg.items()}} for t, v in auc.items()]
    return pd.DataFrame(rows).to_csv(index=False)


def config(optimization: str, mapping: str = "random") -> dict:
    return RunConfig(dataset="synthetic", mapping=mapping, optimization=optimization).to_dict()


def relabelled_id(cfg: dict) -> str:
    from rf2.upgrade import relabel_config

    return run_id(RunConfig.from_dict(relabel_config(cfg)))


def format1_dir(path: Path) -> Path:
    """rf2 0.1's layout: no marker, records without checksums. Sorted: a CSV without a record, a
    damaged record, then the two good runs (so `continue` and `break` differ)."""
    runs = path / "runs"
    runs.mkdir(parents=True)
    (runs / "a_orphan.csv").write_text(run_csv(config("none"), AUC["none"]))
    (runs / "b_damaged.csv").write_text(run_csv(config("none"), AUC["none"]))
    (runs / "b_damaged.json").write_text("{not json")
    for name, opt in (("c_base", "none"), ("d_quant", "quant:1:2:8")):
        (runs / f"{name}.csv").write_text(run_csv(config(opt), AUC[opt]))
        (runs / f"{name}.json").write_text(json.dumps({"id": name, "config": config(opt), "seconds": 1.5}))
    return path


def marker(path: Path) -> dict:
    return json.loads((path / MARKER).read_text())


# -- upgrade_results ----------------------------------------------------------------------------------
def test_format1_upgrade_keeps_vouched_runs_and_names_the_damaged_record(tmp_path, capsys):
    d = format1_dir(tmp_path / "old")
    assert upgrade_results(d) == 2
    assert marker(d) == {"format": FORMAT, "rf2": __version__, "upgraded_from": 1}
    err = capsys.readouterr().err
    rec = d / "runs" / "b_damaged.json"
    assert re.search(rf"^rf2: warning: {re.escape(str(rec))} is damaged \(JSONDecodeError: .+\); its run is left out$",
                     err, re.M), err
    want = {relabelled_id(config(o)) for o in ("none", "quant:1:2:8")}
    assert set(ResultsStore(d).finished()) == want
    assert (d / "runs" / "a_orphan.csv").exists()  # left as it is, not vouched for
    assert upgrade_results(d) == 2  # already current: nothing to do, the count of finished runs
    assert marker(d)["upgraded_from"] == 1


def test_a_crash_after_the_format1_pass_leaves_a_format2_directory_that_upgrades(tmp_path, monkeypatch):
    d = format1_dir(tmp_path / "old")

    def crash(store):
        raise RuntimeError("simulated crash in the relabelling")

    monkeypatch.setattr(S, "_relabel_runs", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        upgrade_results(d)
    assert marker(d) == {"format": 2, "rf2": __version__, "upgraded_from": 1}
    for name, opt in (("c_base", "none"), ("d_quant", "quant:1:2:8")):
        text = (d / "runs" / f"{name}.json").read_text()
        rec = json.loads(text)
        assert rec == {"id": name, "config": config(opt), "seconds": 1.5, "format": 2, "n_rows": 4,
                       "csv_sha256": hashlib.sha256((d / "runs" / f"{name}.csv").read_bytes()).hexdigest()}
        assert text == json.dumps(rec, indent=2)  # laid out like every other record
    monkeypatch.undo()
    assert upgrade_results(d) == 2  # the lock was released; the format-2 directory upgrades
    assert marker(d) == {"format": FORMAT, "rf2": __version__, "upgraded_from": 2}


def test_upgrade_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ResultsFormatError, match=rf"^{re.escape(str(tmp_path))} is not a results directory "
                                                 r"\(no runs/ folder\)$"):
        upgrade_results(tmp_path)
    (tmp_path / MARKER).write_text("[1, 2")
    with pytest.raises(ResultsFormatError, match=rf"^{re.escape(str(tmp_path / MARKER))} is corrupt \(.+\)$"):
        upgrade_results(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"format": FORMAT + 1}))
    with pytest.raises(ResultsFormatError, match=rf"format {FORMAT + 1}, this rf2 reads format {FORMAT}; use the rf2 "
                                                 "version that wrote it"):
        upgrade_results(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"format": "2"}))  # not a number: not upgraded as one
    with pytest.raises(ResultsFormatError, match="format '2', this rf2 reads format"):
        upgrade_results(tmp_path)


def test_upgrade_waits_for_a_sweep_holding_the_lock(tmp_path):
    d = format1_dir(tmp_path / "old")
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SweepLockedError, match=rf"^a sweep is writing to {re.escape(str(d))}; upgrade it when it "
                                                   "has finished$"):
            upgrade_results(d)
    finally:
        os.close(fd)
    assert MARKER not in os.listdir(d)  # nothing was changed


# -- _relabel_runs (format 2 -> 3) --------------------------------------------------------------------
SWEEP_TOML = """[sweep]
mappings = ["random", "dirichlet:0.05"]
optimizations = ["none", "overselect:0.2"]
seeds = [0, 1]
noise_floor = true

[run]
dataset = "DATASET"
clients_per_round = 16
"""


def format2_dir(path: Path, dataset: str | None = "synthetic") -> Path:
    """A format-2 directory written by hand: a baseline (no scores file) and an Overselect run (with
    one), three failure records, tier reports and the sweep file."""
    st = ResultsStore(path)
    with st.lock():
        st.commit_run("base_old", run_csv(config("none"), AUC["none"]), {"config": config("none"), "seconds": 2.0})
        st.commit_run("over_old", run_csv(config("overselect:0.2", "dirichlet:0.05"), AUC["quant:1:2:8"]),
                      {"config": config("overselect:0.2", "dirichlet:0.05"), "seconds": 3.0})
    runs = path / "runs"
    (runs / "over_old.scores.npz").write_bytes(b"not read here")  # no sha256 in its record: never read
    (runs / "a_damaged.failed.json").write_text("{oops")
    (runs / "b_noconfig.failed.json").write_text(json.dumps({"error": "boom"}))
    (runs / "c_old.failed.json").write_text(json.dumps({"format": 2, "config": config("quant:1:2:8"), "error": "diverged"}))
    tiers = path / "tiers"
    tiers.mkdir()
    (tiers / "random__seed0.csv").write_text("item,share,mapping\n7,0.5,random\n")
    (tiers / "dirichlet-0.05__seed0.csv").write_text("item,share,mapping\n3,0.25,dirichlet:0.05\n")
    (tiers / "summary.csv").write_text("mapping,seed,users_low\nrandom,0,4\ndirichlet:0.05,0,5\n,1,6\n")
    (tiers / "notes.csv").write_text("x,y\n1,2\n")
    toml = SWEEP_TOML.replace('dataset = "DATASET"\n', f'dataset = "{dataset}"\n' if dataset else "")
    (path / "sweep.toml").write_text(toml)
    (path / MARKER).write_text(json.dumps({"format": 2, "rf2": "0.1.5"}))
    return path


def test_format2_runs_are_relabelled_renamed_and_vouched_for(tmp_path):
    d = format2_dir(tmp_path / "old")
    runs = d / "runs"
    base_cfg, over_cfg = config("none"), config("overselect:0.2", "dirichlet:0.05")
    from rf2.upgrade import relabel_config

    base_new, over_new = relabelled_id(base_cfg), relabelled_id(over_cfg)
    assert upgrade_results(d) == 2
    assert marker(d) == {"format": FORMAT, "rf2": __version__, "upgraded_from": 2}
    assert set(ResultsStore(d).finished()) == {base_new, over_new}
    assert not any((runs / f"{r}.{e}").exists() for r in ("base_old", "over_old") for e in ("csv", "json", "scores.npz"))
    assert (runs / f"{over_new}.scores.npz").read_bytes() == b"not read here"  # the scores follow their run
    for old, new, cfg, seconds in (("base_old", base_new, base_cfg, 2.0), ("over_old", over_new, over_cfg, 3.0)):
        csv = (runs / f"{new}.csv").read_bytes()
        rows = pd.read_csv(runs / f"{new}.csv")
        label = RunConfig.from_dict(relabel_config(cfg)).to_dict()
        assert list(rows.columns[:5]) == ["tier", "metric", "value", "n_events", "n_users"]  # no index column
        assert len(rows) == 4 and (rows["run_id"] == new).all() and (rows["mapping"] == label["mapping"]).all()
        assert (rows["optimization"] == label["optimization"]).all()
        text = (runs / f"{new}.json").read_text()
        rec = json.loads(text)
        assert text == json.dumps(rec, indent=2)  # laid out like every other record
        want = {"format": FORMAT, "id": new, "config": label, "seconds": seconds, "n_rows": 4,
                "csv_sha256": hashlib.sha256(csv).hexdigest(), "relabelled_from": old}
        if old == "over_old":
            want.update(relabel_approximate="rf2 0.1 drew K + ceil(K r) candidates; the relabelled spec draws "
                                            "floor(K (1 + r))")
        assert rec == want
    assert label["optimization"] == "overselect:0.2:drop=time"


def test_format2_failures_are_relabelled_and_damaged_ones_left_alone(tmp_path, capsys):
    d = format2_dir(tmp_path / "old")
    runs = d / "runs"
    upgrade_results(d)
    from rf2.upgrade import relabel_config

    new = runs / f"{relabelled_id(config('quant:1:2:8'))}.failed.json"
    text = new.read_text()
    assert text == json.dumps({"format": 2, "config": RunConfig.from_dict(relabel_config(config("quant:1:2:8"))).to_dict(),
                               "error": "diverged"}, indent=2)
    assert json.loads(text)["config"]["optimization"] == "quant:1:2:8:scope=update"
    assert not (runs / "c_old.failed.json").exists()
    assert (runs / "a_damaged.failed.json").read_text() == "{oops"
    assert (runs / "b_noconfig.failed.json").read_text() == json.dumps({"error": "boom"})
    rec = runs / "a_damaged.failed.json"
    assert re.search(rf"^rf2: warning: {re.escape(str(rec))} is damaged \(JSONDecodeError: .+\); left as it is$",
                     capsys.readouterr().err, re.M)


def test_format2_tier_reports_are_relabelled(tmp_path):
    d = format2_dir(tmp_path / "old")
    upgrade_results(d)
    tiers = d / "tiers"
    assert sorted(p.name for p in tiers.iterdir()) == ["dirichlet-0.05__seed0.csv", "notes.csv",
                                                       "random-shuffle__seed0.csv", "summary.csv"]
    assert (tiers / "random-shuffle__seed0.csv").read_text() == "item,share,mapping\n7,0.5,random:shuffle\n"
    assert (tiers / "dirichlet-0.05__seed0.csv").read_text() == \
        "item,share,mapping\n3,0.25,dirichlet:0.05:draw=bernoulli:null=last\n"
    assert (tiers / "summary.csv").read_text() == \
        "mapping,seed,users_low\nrandom:shuffle,0,4\ndirichlet:0.05:draw=bernoulli:null=last,0,5\n,1,6\n"
    assert (tiers / "notes.csv").read_text() == "x,y\n1,2\n"


@pytest.mark.parametrize("dataset,options", [
    ("synthetic", None),
    ("ml-100k", {"test_fraction": 0.2, "history_maxlen": 50}),  # the old MovieLens defaults spelled out
    (None, {"test_fraction": 0.2, "history_maxlen": 50}),  # no dataset: the default, ml-100k
])
def test_format2_sweep_file_is_relabelled(tmp_path, dataset, options):
    from rf2.sweep import SweepSpec

    d = format2_dir(tmp_path / "old", dataset)
    upgrade_results(d)
    spec = SweepSpec.from_toml(d / "sweep.toml")
    base = {"clients_per_round": 16, "system_options": {"preset": "rf2-0.1"}}
    if dataset:
        base["dataset"] = dataset
    if options:
        base["dataset_options"] = options
    assert spec.base == base
    assert spec.mappings == ("random:shuffle", "dirichlet:0.05:draw=bernoulli:null=last")
    assert spec.optimizations == ("overselect:0.2:drop=time",) and spec.seeds == (0, 1) and spec.noise_floor is False


def test_format2_sweep_file_keeps_explicit_settings_and_a_damaged_one_is_left(tmp_path):
    from rf2.sweep import SweepSpec

    d = format2_dir(tmp_path / "old", "ml-100k")
    toml = (d / "sweep.toml").read_text() + 'dataset_options = {history_maxlen = 20}\nsystem_options = {preset = "flash"}\n'
    (d / "sweep.toml").write_text(toml)
    upgrade_results(d)
    spec = SweepSpec.from_toml(d / "sweep.toml")
    assert spec.base["dataset_options"] == {"test_fraction": 0.2, "history_maxlen": 20}
    assert spec.base["system_options"] == {"preset": "flash"}
    e = format2_dir(tmp_path / "damaged")
    (e / "sweep.toml").write_text("[sweep]\nbogus = 1\n")
    upgrade_results(e)
    assert (e / "sweep.toml").read_text() == "[sweep]\nbogus = 1\n"


# -- ResultsStore -------------------------------------------------------------------------------------
def test_a_failure_record_holds_format_config_error_and_traceback(tmp_path):
    st = ResultsStore(tmp_path)
    with st.lock():
        st.record_failure("r1", {"optimization": "quant:1:2:8"}, "DivergenceError: loss is nan", "Traceback ...\n")
    text = (tmp_path / "runs" / "r1.failed.json").read_text()
    want = {"format": FORMAT, "config": {"optimization": "quant:1:2:8"}, "error": "DivergenceError: loss is nan",
            "traceback": "Traceback ...\n"}
    assert json.loads(text) == want and text == json.dumps(want, indent=2)


def test_a_damaged_record_is_named_once_per_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for rid in ("r1", "r2"):  # two damaged records with the same fault: one warning each
        (runs / f"{rid}.csv").write_text("tier,metric,value\n")
        (runs / f"{rid}.json").write_text("{bad")
    st = ResultsStore(tmp_path)
    assert st.finished() == {} and st.finished() == {}  # read twice: still one warning per file
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    for rid, line in zip(("r1", "r2"), lines):
        assert re.fullmatch(rf"rf2: warning: {re.escape(str(runs / f'{rid}.json'))} is damaged \(JSONDecodeError: .+\); "
                            "treated as not done", line), line


def test_write_tables_bootstraps_1000_times_by_default_for_auc_and_each_ranking_metric(tmp_path, monkeypatch):
    import rf2.results

    calls = []

    def spy(rows, metric, scores=None, n_boot=None):
        calls.append((metric, n_boot, Path(scores)))
        if metric == "auc":  # one per-run row and one cell for auc, nothing for the ranking metric
            return pd.DataFrame({"mdac": [0.1]}), pd.DataFrame({"cell": [1]})
        return pd.DataFrame(), pd.DataFrame()

    monkeypatch.setattr(rf2.results, "mdac_tables", spy)
    st = ResultsStore(tmp_path)
    csv = run_csv(config("none"), AUC["none"]).replace("\nlow,auc,", "\nlow,recall@20,", 1)
    with st.lock():
        st.commit_run("base", csv, {"config": config("none")})
        st.write_tables()
    assert calls == [("auc", 1000, tmp_path), ("recall@20", 1000, tmp_path)]
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header.startswith("tier,metric,value,")  # no index column
    assert (tmp_path / "mdac.csv").read_text() == "mdac,metric\n0.1,auc\n"
    assert (tmp_path / "mdac_summary.csv").read_text() == "cell,metric\n1,auc\n"
    calls.clear()
    monkeypatch.setattr(rf2.results, "mdac_tables", lambda *a, **k: (pd.DataFrame(), pd.DataFrame()))
    with st.lock():
        st.write_tables(n_boot=5)
    assert (tmp_path / "mdac.csv").read_text() == "\n" and (tmp_path / "mdac_summary.csv").read_text() == "\n"


def test_tier_report_file_name_keeps_letters_digits_and_dot_underscore_equals_dash(tmp_path):
    from types import SimpleNamespace

    top = pd.DataFrame({"item": [7], "share": [0.5]})
    rep = SimpleNamespace(top_items=top, summary=lambda: {"mapping": "Hetero-HIGH:a b/c", "users_low": 1})
    cfg = SimpleNamespace(mapping="Hetero-HIGH:a b/c", seed=2, dataset="synthetic")
    st = ResultsStore(tmp_path)
    with st.lock():
        st.write_tier_report(cfg, rep)
    assert sorted(p.name for p in (tmp_path / "tiers").iterdir()) == ["Hetero-HIGH-a-b-c__seed2.csv", "summary.csv"]
    assert (tmp_path / "tiers" / "Hetero-HIGH-a-b-c__seed2.csv").read_text() == \
        "item,share,mapping,seed,dataset\n7,0.5,Hetero-HIGH:a b/c,2,synthetic\n"


def test_a_damaged_tier_summary_is_named_and_rewritten(tmp_path, capsys):
    from types import SimpleNamespace

    (tmp_path / "tiers").mkdir()
    summary = tmp_path / "tiers" / "summary.csv"
    summary.write_text("x,y\n1,2\n")  # no mapping column
    rep = SimpleNamespace(top_items=pd.DataFrame({"item": [7]}), summary=lambda: {"mapping": "random", "users_low": 1})
    st = ResultsStore(tmp_path)
    with st.lock():
        st.write_tier_report(SimpleNamespace(mapping="random", seed=0, dataset="synthetic"), rep)
    assert capsys.readouterr().err == (f"rf2: warning: {summary} is damaged (KeyError: 'mapping'); "
                                       "rewritten from the tiers reported now\n")
    assert summary.read_text() == "mapping,users_low,seed,dataset\nrandom,1,0,synthetic\n"


def test_a_run_record_is_indented_json_with_the_csv_checksum(tmp_path):
    st = ResultsStore(tmp_path)
    with st.lock():
        st.commit_run("r1", "tier,metric,value\nlow,auc,0.5\n", {"config": {"seed": 0}})
    text = (tmp_path / "runs" / "r1.json").read_text()
    csv = (tmp_path / "runs" / "r1.csv").read_bytes()
    assert csv == b"tier,metric,value,run_id\nlow,auc,0.5,r1\n"
    want = {"format": FORMAT, "id": "r1", "config": {"seed": 0}, "csv_sha256": hashlib.sha256(csv).hexdigest(), "n_rows": 1}
    assert json.loads(text) == want and text == json.dumps(want, indent=2)


def test_stray_temporaries_are_removed_from_each_existing_folder_never_through_links(tmp_path):
    from rf2.store import remove_stray_temporaries

    d = tmp_path / "res"
    (d / "tiers").mkdir(parents=True)  # no runs/ folder: tiers/ is still cleaned
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (d / "runs").symlink_to(elsewhere, target_is_directory=True)
    strays = [d / ".results.csv.a1.tmp", d / "tiers" / ".summary.csv.b2.tmp"]
    for f in [*strays, elsewhere / ".r.csv.c3.tmp"]:
        f.write_text("partial")
    assert sorted(remove_stray_temporaries(d)) == sorted(strays)
    assert not any(f.exists() for f in strays)
    assert (elsewhere / ".r.csv.c3.tmp").exists()  # behind a symlinked runs/: not touched
    (d / "runs").unlink()
    assert remove_stray_temporaries(d) == []


def test_hidden_records_are_not_runs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for rid in ("r1", ".r2"):
        (runs / f"{rid}.csv").write_bytes(b"tier\nlow\n")
        (runs / f"{rid}.json").write_text(json.dumps({"csv_sha256": hashlib.sha256(b"tier\nlow\n").hexdigest()}))
    assert ResultsStore(tmp_path).finished() == {"r1": runs / "r1.csv"}


def test_finished_runs_are_exactly_those_whose_record_vouches_for_their_csv(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    data = b"tier\nlow\n"
    good = json.dumps({"csv_sha256": hashlib.sha256(data).hexdigest()})
    (runs / "a.failed.json").write_text("{}")  # a failure record: skipped, the loop goes on
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(good)
    (runs / "b.csv").write_bytes(data)
    (runs / "b.json").symlink_to(elsewhere)  # a planted record: skipped, the loop goes on
    (runs / "c.csv").write_bytes(data)
    (runs / "c.json").write_text(good)
    (runs / "d.csv").write_bytes(b"tier\nhigh\n")  # torn or edited: its bytes are not the vouched ones
    (runs / "d.json").write_text(good)
    (runs / "e.json").write_text(good)  # a record without its CSV
    (runs / "f.json").mkdir()  # unreadable as a file (OSError)
    (runs / "f.csv").write_bytes(data)
    (runs / "g.csv").write_bytes(data)
    (runs / "g.json").write_text(json.dumps({"n_rows": 1}))  # no checksum at all
    assert ResultsStore(tmp_path).finished() == {"c": runs / "c.csv"}


def test_check_format_messages(tmp_path):
    from rf2.store import check_format

    (tmp_path / MARKER).write_text("{broken")
    with pytest.raises(ResultsFormatError, match=rf'^{re.escape(str(tmp_path / MARKER))} is corrupt \(.+\); it should '
                                                 rf'hold {{"format": {FORMAT}}}$'):
        check_format(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"format": 2}))
    with pytest.raises(ResultsFormatError, match=rf"^{re.escape(str(tmp_path))} holds results in format 2, this rf2 "
                                                 rf"reads format {FORMAT}; upgrade it with `rf2 upgrade-results DIR`$"):
        check_format(tmp_path)


def test_writing_without_the_lock_is_refused_with_the_way_out():
    with pytest.raises(RuntimeError, match=r"^ResultsStore: writes need the directory lock \(use `with store.lock\(\):`\)$"):
        ResultsStore("/nonexistent")._require_lock()


def test_a_directory_without_marker_is_refused_only_when_it_holds_run_csvs(tmp_path):
    from rf2.store import check_format

    (tmp_path / "runs").mkdir()
    check_format(tmp_path)  # empty runs/ (a sweep that never finished a run): fine
    (tmp_path / "runs" / "r.csv").write_text("tier\n")
    with pytest.raises(ResultsFormatError, match="written by an older rf2"):
        check_format(tmp_path)


def test_the_lock_file_is_rw_r__r__and_never_opened_through_a_link(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    os.close(S._open_lock(tmp_path))
    assert (tmp_path / ".lock").stat().st_mode & 0o777 == 0o644 & ~umask
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".lock").unlink()
    (tmp_path / ".lock").symlink_to(victim)  # planted after check_entries ran: open refuses it all the same
    with pytest.raises(ResultsFormatError, match=rf"^{re.escape(str(tmp_path))}: \.lock is a symlink; rf2 does not "
                                                 "write through links in a results directory: remove it$"):
        S._open_lock(tmp_path)
    assert victim.read_text() == "precious"


# -- atomic_write's temporary files and modes; check_entries' message (mutmut run on becae75) ----------
def test_atomic_write_temporaries_are_hidden_named_after_their_target_and_swept(tmp_path, monkeypatch):
    """The temporary file is ``.<name>.<random>.tmp`` next to the target (so a write a crash cut
    short is recognisable and is what remove_stray_temporaries deletes), and the written file is
    rw-rw-rw- under the process umask, like any file rf2 creates (rw-r--r-- under 022)."""
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(Path(src))
        shutil.copy(src, tmp_path / "runs" / Path(src).name)  # the stray copy a kill at this moment leaves
        return real_replace(src, dst)

    import shutil

    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(os, "replace", replace)
    S.atomic_write(tmp_path / "results.csv", "a\n1\n")
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0].parent == tmp_path
    assert re.fullmatch(r"\.results\.csv\.[^/]+\.tmp", seen[0].name), seen[0].name
    assert (tmp_path / "results.csv").read_text() == "a\n1\n" and not seen[0].exists()
    assert S.remove_stray_temporaries(tmp_path) == [tmp_path / "runs" / seen[0].name]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "results.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_linked_entries_are_named_with_the_fix(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    d = tmp_path / "r"
    d.mkdir()
    (d / "runs").symlink_to(target)
    one = (f"{d}: runs is a symlink; rf2 does not write through links in a results directory: remove them (or "
           "sweep into a new directory)")
    with pytest.raises(ResultsFormatError) as e:
        S.check_entries(d)
    assert str(e.value) == one
    (d / "results.csv").symlink_to(target / "x.csv")
    with pytest.raises(ResultsFormatError) as e:
        S.check_entries(d)
    assert str(e.value) == one.replace("runs is a symlink", "runs, results.csv are symlinks")
