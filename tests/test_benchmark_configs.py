"""The benchmark files stay valid: every sweep file parses into valid runs, and the HeteFedRec
table script's configurations are valid and are named back correctly from their results."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rf2.config import RunConfig
from rf2.simulation import Simulation
from rf2.sweep import SweepSpec

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script():
    spec = importlib.util.spec_from_file_location("hetefedrec_ml1m", BENCH / "hetefedrec_ml1m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.toml")), ids=lambda p: p.name)
def test_sweep_files_are_valid(path):
    spec = SweepSpec.from_toml(path)
    assert spec.configs()  # validated, one RunConfig per run


def test_hetefedrec_table_configurations_are_valid_and_labelled():
    mod = load_script()
    base = RunConfig.from_toml(mod.TOML, "run")
    labels = [label for label, _, _ in mod.CONFIGS]
    assert len(set(labels)) == len(labels)
    for label, opt, sizes in mod.CONFIGS:
        RunConfig.from_dict({**base.to_dict(), "optimization": opt, "model_options": {**base.model_options, "sizes": sizes}})
        assert mod.label_of(opt, sizes) == label
    assert mod.label_of("none", [8, 16, 32]) == "All Large"
    assert mod.slug("Directly Aggregate (w/o RESKD, DDR, UDL)") == "Directly_Aggregate_w_o_RESKD_DDR_UDL"
    assert mod.label_of("hetefedrec:8,16", [8, 16]) == "hetefedrec:8,16 (sizes [8, 16])"


def test_hetefedrec_table_reads_run_results(tmp_path):
    mod = load_script()
    for opt, sizes in (("hetefedrec:4,8:kd=off", [4, 8]), ("hetefedrec:4", [4])):
        cfg = RunConfig(dataset="synthetic", dataset_options={"n_users": 40, "n_items": 20, "user_id": True},
                        model="hetencf", model_options={"sizes": sizes}, optimization=opt, clients_per_round=20,
                        ranking_k=20, client_optimizer="adam", client_lr=0.01)
        Simulation(cfg, progress=False).run().rows().to_csv(tmp_path / f"{opt}.csv", index=False)
    t = mod.table([tmp_path])
    assert list(t["configuration"]) == ["hetefedrec:4 (sizes [4])", "hetefedrec:4,8:kd=off (sizes [4, 8])"]
    assert set(t["client_optimizer"]) == {"adam"}
    assert {"ndcg@20", "recall@20", "auc", "upload_mb"} <= set(t.columns)
    assert mod.markdown(t).count("\n") == 3

    # per tier, with MDAC (RF² Eq. 1-2) against a chosen baseline, recomputed by hand
    base_label = "hetefedrec:4 (sizes [4])"
    tt = mod.tier_table([tmp_path], baseline=base_label).set_index("configuration")
    rows = mod.load_rows([tmp_path]).query("metric == 'ndcg@20'").set_index(["configuration", "tier"])["value"]
    other = "hetefedrec:4,8:kd=off (sizes [4, 8])"
    rc = [(rows[(other, t)] - rows[(base_label, t)]) / rows[(base_label, t)] for t in ("low", "mid", "high")]
    assert tt.loc[other, "MDAC % vs " + base_label] == pytest.approx(100 * (max(rc) - min(rc)))
    assert tt.loc[base_label, "MDAC % vs " + base_label] == 0
    mod.plot_groups(tt.reset_index(), tmp_path / "groups.png")
    assert (tmp_path / "groups.png").stat().st_size > 10_000


def test_hetefedrec_table_leaves_out_noise_floor_replicates_and_names_none(tmp_path):
    mod = load_script()
    cfg = RunConfig(dataset="synthetic", dataset_options={"n_users": 40, "n_items": 20, "user_id": True},
                    model="hetencf", model_options={"sizes": [8]}, optimization="none", clients_per_round=20,
                    ranking_k=20, client_optimizer="adam", client_lr=0.01)
    rows = Simulation(cfg, progress=False).run().rows()
    rows.to_csv(tmp_path / "none.csv", index=False)
    rep = rows.assign(replicate=1, value=rows["value"] + 1.0)  # a sweep's retrained `none`: not a configuration
    (tmp_path / "runs").mkdir()
    rep.to_csv(tmp_path / "runs" / "none_rep.csv", index=False)
    t = mod.table([tmp_path]).set_index("configuration")
    assert list(t.index) == ["All Small"]  # `none` on sizes [8]
    want = rows.query("tier == 'overall' and metric == 'ndcg@20'")["value"].item()
    assert t.loc["All Small", "ndcg@20"] == pytest.approx(want)
    assert mod.label_of("none", [32]) == "All Large"


def test_hetefedrec_script_refuses_a_missing_config(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(BENCH / "hetefedrec_ml1m.py"), "run", str(tmp_path / "out"),
                        "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
