"""``rf2 report``: one self-contained HTML page (no external URL, figures as data URIs) holding the
MDAC table with verdicts and the floor, the tier diagnostics, the cost, failed and missing runs,
with every text from the directory escaped."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from rf2.cli import main
from rf2.report import build_report, esc, html_table, planned_runs
from rf2.sweep import Sweep, SweepSpec, run_id

HOSTILE = "<script>alert('x')</script>"
BASE = {"dataset": "synthetic", "dataset_options": {"n_users": 120, "n_items": 50, "events_per_user": 10, "seed": 3},
        "clients_per_round": 40}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A finished sweep, then one run turned into a failure (hostile error text) and one removed."""
    out = tmp_path_factory.mktemp("rep") / "res"
    spec = SweepSpec(base=dict(BASE), mappings=("random", "dirichlet:0.05"),
                     optimizations=("exclude-lo", "quant:1:2:8"), seeds=(0,))
    Sweep(spec, out, progress=False, executor="inprocess").run()
    runs = out / "runs"
    by_key = {(c.mapping, c.optimization, c.replicate): run_id(c) for c in spec.configs()}
    failed = by_key[("dirichlet:0.05", "quant:1:2:8", 0)]
    missing = by_key[("random", "quant:1:2:8", 0)]
    for rid in (failed, missing):
        for f in runs.glob(f"{rid}.*"):
            f.unlink()
    cfg = {"mapping": "dirichlet:0.05", "optimization": "quant:1:2:8", "seed": 0}
    (runs / f"{failed}.failed.json").write_text(json.dumps(
        {"format": 3, "config": cfg, "error": f"diverged {HOSTILE}", "traceback": ""}))
    for stale in ("mdac.csv", "mdac_summary.csv"):  # the tables as a sweep would rewrite them: from what is left
        (out / stale).unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def page(results) -> str:
    return build_report(results)


def test_page_is_self_contained(page):
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert refs
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert not re.search(r"<\s*(script|link|iframe|object|embed)\b", page, flags=re.I)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4  # MDAC, trade-off, tier change, tier items
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_page_has_the_tables_verdicts_and_floor(page):
    for text in ("MDAC of AUC", "noise floor", "random", "dirichlet:0.05", "exclude-lo",
                 "low/mid/high: 4/8/32 bits",  # the spec in words, from the parsed optimisation
                 "Tier diagnostics", "Cramér&#x27;s V", "upload (MB)", "participations (client-rounds)",
                 "synthetic · dlrm · K = 40 clients/round · 1 epoch · 1 seed", "[sweep]"):
        assert text in page, text
    assert re.search(r"within noise|above floor|no floor", page)
    assert re.search(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]", page)  # MDAC [lo, hi]


def test_failed_and_missing_runs_are_listed_and_text_is_escaped(page, results):
    assert "1 run(s) failed" in page and "diverged" in page
    assert HOSTILE not in page and esc(HOSTILE) in page
    plan = planned_runs(results)
    assert plan["state"].value_counts().to_dict() == {"finished": 6, "failed": 1, "missing": 1}
    assert "8 planned runs: 6 finished, 1 failed, 1 missing" in page
    missing = page[page.index('id="missing"'):]
    assert "random" in missing and "quant:1:2:8" in missing
    assert "x missing" in page  # the MDAC cell of the missing run


def test_escaping_of_names_that_configs_cannot_hold():
    assert esc(HOSTILE) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    import pandas as pd

    t = html_table(pd.DataFrame({"mapping": [HOSTILE], 'opt"ion': ["a&b"]}))
    assert "<script>" not in t and "&lt;script&gt;" in t and "a&amp;b" in t and "opt&quot;ion" in t


def test_cli_writes_the_page(results, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(results), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert str(out) in capsys.readouterr().out


def test_cli_refuses_a_directory_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a results directory" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install chromium): the headless render check is optional")
def test_page_renders_in_headless_chromium(results, tmp_path):
    html = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(html)]) == 0
    png = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={png}", "--window-size=1200,2400", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 2400)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, tables and figures, not a blank page
