"""Taobao Ad Display/Click (RF² §5.1) on small files in the exact Tianchi schema: features,
histories, split, chunked reading, bad input, the missing-data message."""
from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from rf2.data import DataFormatError, DataNotFoundError, FeatureEncoder, load_dataset
from rf2.data import taobao
from rf2.data.loading import UnpinnedChecksumWarning

T0 = 1494000000  # 2017-05-06 00:00:00 China Standard Time (a Saturday)
DAY = 86400
RAW = [  # user,time_stamp,adgroup_id,pid,nonclk,clk (not in time order, like the original)
    (581738, T0 + 100, 3, "430548_1007", 0, 1),
    (581738, T0 + 200, 12, "430548_1007", 0, 1),
    (999999, T0 + 10, 3, "430548_1007", 1, 0),
    (581738, T0 + 200, 7, "430548_1007", 1, 0),
    (581738, T0 + 2 * DAY + 5, 3, "430539_1007", 1, 0),
    (449818, T0 + 7200, 7, "430539_1007", 0, 1),
    (449818, T0 + 3600, 30, "430539_1007", 1, 0),  # ad 30 is not in ad_feature.csv
    (581738, T0 + 3 * DAY, 20, "430548_1007", 0, 1),
]
AD_FEATURE = """adgroup_id,cate_id,campaign_id,customer,brand,price
20,4520,387991,6183,247789,1.5
3,6261,180,1000,2000,199.0
7,4520,77,1000,2000,0.01
12,6261,180,2000,NULL,100000000
25,123,55,3000,2500,18.0
"""
USER_PROFILE = """userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,new_user_class_level 
581738,0,1,2,1,,3,0,3
449818,13,5,1,5,2,3,0,
12345,0,4,2,4,1,2,1,2
"""


def write_taobao(folder: Path, raw=RAW, ads=AD_FEATURE, profile=USER_PROFILE, header="user,time_stamp,adgroup_id,pid,nonclk,clk") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(map(str, r)) for r in raw]
    (folder / "raw_sample.csv").write_text("\n".join(lines) + "\n")
    (folder / "ad_feature.csv").write_text(ads)
    (folder / "user_profile.csv").write_text(profile)
    return folder


@pytest.fixture
def taobao_dir(tmp_path) -> Path:
    return write_taobao(tmp_path / "taobao")


def load(folder, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not in ad_feature.csv")
        return load_dataset("taobao", path=folder, verify=False, **kw)


def test_schema_matches_rf2_section_5_1(taobao_dir):
    ds = load(taobao_dir)
    s = ds.schema
    assert [f.name for f in s.features if f.source == "user"] == list(taobao.USER_FIELDS)  # 8, no user id
    assert [f.name for f in s.features if f.source == "item"] == [
        "adgroup_id", "cate_id", "campaign_id", "customer", "brand", "log_price"]
    assert [f.name for f in s.histories] == ["hist_adgroup_id", "hist_cate_id", "hist_brand"]
    assert [h.table for h in s.histories] == ["adgroup_id", "cate_id", "brand"]
    assert [f.name for f in s.features if f.source == "event"] == ["pid", "day_of_week"]
    assert [f.name for f in s.dense] == ["log_price"]
    assert (ds.n_users, ds.n_items, ds.n_events) == (3, 6, 8)


def test_ads_by_hand(taobao_dir):
    ds = load(taobao_dir)
    it = ds.items  # ads sorted: 3, 7, 12, 20, 25, 30 (30 only in raw_sample)
    assert it["adgroup_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert it["cate_id"].tolist() == [4, 3, 4, 3, 2, 1]  # 123 -> 2, 4520 -> 3, 6261 -> 4; missing -> 1
    assert it["campaign_id"].tolist() == [4, 3, 4, 5, 2, 1]
    assert it["customer"].tolist() == [2, 2, 3, 5, 4, 1]
    assert it["brand"].tolist() == [2, 2, 1, 4, 3, 1]  # NULL brand -> 1
    lp = np.log([199.0, 0.01, 1e8, 1.5, 18.0])
    expected = (lp - lp.mean()) / lp.std()
    assert np.allclose(it["log_price"].to_numpy()[:5], expected, atol=1e-6)
    assert it["log_price"].iloc[5] == 0.0
    assert ds.schema.feature("cate_id").vocab_size == 5 and ds.schema.feature("brand").vocab_size == 5


def test_users_by_hand(taobao_dir):
    ds = load(taobao_dir)
    u = ds.users  # users with impressions, sorted: 449818, 581738, 999999 (no profile row -> all 0)
    assert u["final_gender_code"].tolist() == [1, 2, 0]
    assert u["pvalue_level"].tolist() == [2, 0, 0]  # 581738's is empty
    assert u["new_user_class_level"].tolist() == [0, 2, 0]  # 449818's is empty; values 2, 3 -> codes 1, 2
    assert u["cms_segid"].tolist() == [2, 1, 0]
    assert ds.schema.feature("cms_segid").vocab_size == 3


def test_events_split_and_event_features_by_hand(taobao_dir):
    ds = load(taobao_dir)
    ev = ds.events[ds.events["user"] == 1]  # 581738, by (time, ad)
    assert ev["timestamp"].tolist() == [T0 + 100, T0 + 200, T0 + 200, T0 + 2 * DAY + 5, T0 + 3 * DAY]
    assert ev["item"].tolist() == [0, 1, 2, 0, 3]
    assert ev["label"].tolist() == [1, 0, 1, 0, 1]
    assert ev["pid"].tolist() == [1, 1, 1, 0, 1]  # sorted: 430539_1007 -> 0, 430548_1007 -> 1
    cst = timezone(timedelta(hours=8))
    assert ev["day_of_week"].tolist() == [datetime.fromtimestamp(t, cst).weekday() for t in ev["timestamp"]]
    assert ev["day_of_week"].tolist() == [5, 5, 5, 0, 1]  # Sat, Sat, Sat, Mon, Tue
    assert ev["is_test"].tolist() == [False] * 4 + [True]
    assert ds.events[ds.events["user"] == 0]["is_test"].tolist() == [False, True]
    assert ds.events[ds.events["user"] == 2]["is_test"].tolist() == [False]


def test_histories_by_hand(taobao_dir):
    ds = load(taobao_dir, history_maxlen=3)
    idx = np.flatnonzero(ds.events["user"].to_numpy() == 1)
    X = FeatureEncoder(ds).encode_numpy(idx)
    cols = ds.schema.columns

    def hist(name):
        a, b = cols[name]
        return X[:, a:b].astype(int).tolist()

    # clicks of 581738: ad 3 @100, ad 12 @200, ad 20 @3 days; the click on ad 12 at 200 is not history of
    # the impression of ad 7 in the same second
    assert hist("hist_adgroup_id") == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 3, 0], [1, 3, 0]]
    assert hist("hist_cate_id") == [[0, 0, 0], [4, 0, 0], [4, 0, 0], [4, 4, 0], [4, 4, 0]]
    assert hist("hist_brand") == [[0, 0, 0], [2, 0, 0], [2, 0, 0], [2, 1, 0], [2, 1, 0]]  # NULL brand is a value
    assert X[:, cols["hist_length"][0]].tolist() == [0, 1, 1, 2, 2]
    assert X[:, cols["day_of_week"][0]].tolist() == [5, 5, 5, 0, 1]


def test_chunked_reading_and_pid_codes(taobao_dir):
    one = taobao.read_raw_sample(taobao_dir / "raw_sample.csv")
    small = taobao.read_raw_sample(taobao_dir / "raw_sample.csv", chunk_rows=3)  # 430539_1007 first seen in chunk 2
    for c in ("user", "time_stamp", "adgroup_id", "pid", "clk"):
        assert np.array_equal(one[c], small[c]), c
    assert list(small["pid:categories"]) == ["430539_1007", "430548_1007"]
    assert small["pid"].tolist() == [1 if r[3] == "430548_1007" else 0 for r in RAW]
    assert one["user"].dtype == np.int32 and one["clk"].dtype == np.int8 and one["time_stamp"].dtype == np.int64


def test_ad_missing_from_ad_feature_is_reported(taobao_dir):
    with pytest.warns(UserWarning, match=r"1 ads are not in ad_feature\.csv"):
        load_dataset("taobao", path=taobao_dir, verify=False)


def test_verify_reports_unchecked_files(taobao_dir):
    with pytest.warns(UnpinnedChecksumWarning, match="Tianchi publishes no checksums"):
        warnings.filterwarnings("ignore", message=".*not in ad_feature.csv")
        load_dataset("taobao", path=taobao_dir)


@pytest.mark.parametrize("header, match", [
    ("user,time_stamp,adgroup_id,pid,nonclk", r"raw_sample\.csv.*missing columns \['clk'\]"),
    ("user\ttime_stamp\tadgroup_id\tpid\tnonclk\tclk", r"raw_sample\.csv.*wrong separator, it uses '\\t'"),
])
def test_bad_header(tmp_path, header, match):
    d = write_taobao(tmp_path / "t", header=header)
    with pytest.raises(DataFormatError, match=match):
        load(d)


@pytest.mark.parametrize("row, match", [
    ((581738, T0, 3, "430548_1007", 0), r"line 4 has 5 fields"),
    ((581738, "2017-05-06", 3, "430548_1007", 0, 1), r"line 4, column 'time_stamp'"),
    ((581738, T0, 3, "430548_1007", 0, 2), r"clk must be 0 or 1; line 4 has 2"),
])
def test_malformed_raw_sample(tmp_path, row, match):
    d = write_taobao(tmp_path / "t", raw=RAW[:2] + [row] + RAW[2:])
    with pytest.raises(DataFormatError, match=r"raw_sample\.csv.*" + match):
        load(d)


def test_bad_ad_and_profile_files(tmp_path):
    d = write_taobao(tmp_path / "a", ads=AD_FEATURE + "3,1,1,1,1,1.0\n")
    with pytest.raises(DataFormatError, match=r"ad_feature\.csv.*duplicate adgroup_id"):
        load(d)
    d = write_taobao(tmp_path / "b", ads=AD_FEATURE.replace("6261,180,2000", "6261.5,180,2000"))
    with pytest.raises(DataFormatError, match=r"ad_feature\.csv.*'cate_id' holds ids"):
        load(d)
    d = write_taobao(tmp_path / "c", profile=USER_PROFILE.replace("userid,", "user_id,"))
    with pytest.raises(DataFormatError, match=r"user_profile\.csv.*missing columns \['userid'\]"):
        load(d)
    d = write_taobao(tmp_path / "d", ads=AD_FEATURE + "31,x,1,1,1,1.0\n")
    with pytest.raises(DataFormatError, match=r"ad_feature\.csv.*line 7, column 'cate_id'"):
        load(d)


def test_missing_files_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("RF2_DATA_DIR", raising=False)
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("taobao")
    msg = str(err.value)
    assert "tianchi.aliyun.com/dataset/56" in msg and str(tmp_path / "cache" / "taobao") in msg
    assert "raw_sample.csv" in msg and "user_profile.csv" in msg
    with pytest.raises(DataNotFoundError, match=r"ad_feature\.csv"):
        load_dataset("taobao", path=tmp_path)
