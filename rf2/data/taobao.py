"""Taobao Ad Display/Click Data (Alibaba, Tianchi dataset 56), RF² preprocessing (RF² §5.1).

Files (CSV with a header; get them from https://tianchi.aliyun.com/dataset/56, which needs a free
Tianchi / Alibaba Cloud login, so rf2 cannot download them):

* ``raw_sample.csv``: ``user,time_stamp,adgroup_id,pid,nonclk,clk``: 26,557,961 ad impressions
  of 1,141,729 users over 8 days (2017-05-06 .. 2017-05-13), ``clk`` = 1 for a click;
* ``ad_feature.csv``: ``adgroup_id,cate_id,campaign_id,customer,brand,price`` (846,811 ads;
  ``brand`` may be ``NULL``);
* ``user_profile.csv``: ``userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,
  shopping_level,occupation,new_user_class_level`` (1,061,768 users; some fields empty; the
  original header ends with a space, which is ignored).

Preprocessing (RF² §5.1):

* **label** = ``clk``; every impression is an event (repeated impressions are kept);
* **user features**: the 8 profile fields (the 9th column, the user id, is not used, for
  privacy); code 0 = missing (an empty field, or a user with no profile row), ``1..K`` = the
  field's distinct values in increasing order;
* **ad features**: ``adgroup_id`` (item index + 1), ``cate_id``, ``campaign_id``, ``customer``,
  ``brand``: code 0 pads histories, 1 = missing (``NULL``, or an ad absent from ``ad_feature.csv``),
  ``2..K+1`` = distinct values in increasing order; ``log_price``: ``log(price)`` (RF²: prices span
  0.01 to 10^8), standardised over the ads (mean 0, sd 1; a missing or non-positive price -> 0);
* **event features**: the scenario ``pid`` (codes of the sorted distinct values) and
  ``day_of_week`` (0 = Monday) of the impression in China Standard Time (UTC+8, the data's time
  zone);
* **click histories** (strictly earlier clicks, :mod:`rf2.data.history`): ``hist_adgroup_id``,
  ``hist_cate_id``, ``hist_brand``, sharing the ad features' embedding tables;
* **split**: RF² §5.1 does not state one; we use the per-user temporal split of every rf2 dataset
  (the last ``test_fraction`` of each user's impressions, :mod:`rf2.data.split`). DIN's original
  Taobao protocol (last day for test) is not the default because it leaves users whose impressions
  all fall on the last day without training data.

Users are the users with at least one impression; items are the ads of ``ad_feature.csv`` plus
any ad only ``raw_sample.csv`` names (with missing features, reported by a warning).

Memory: ``raw_sample.csv`` is read in chunks into preallocated compact arrays (22 bytes per
impression); the event table takes 20 bytes per impression (507 MB at full size). On a synthetic
full-size ``raw_sample.csv`` (26,557,961 rows) loading takes ~25 s and peaks at ~1.8 GB RSS on a
2-core machine, rf2's import included; building the click histories (first batch) adds ~12 s and
~1 GB (``benchmarks/bench_data_loading.py``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .dataset import DataFormatError, InteractionDataset
from .fetch import DataSpec
from .loading import check_files, codes_in, event_order, locate_pinned, read_columns, sorted_unique
from .schema import DenseFeature, Schema, SequenceFeature, SparseFeature
from .split import temporal_split

HOMEPAGE = "https://tianchi.aliyun.com/dataset/56"
TAOBAO = DataSpec(
    name="taobao",
    files=("raw_sample.csv", "ad_feature.csv", "user_profile.csv"),
    manual_hint=(
        f"get them from {HOMEPAGE} ('Ad Display/Click Data on Taobao.com'; needs a free Tianchi login, so rf2 "
        f"cannot download them) and unpack raw_sample.csv, ad_feature.csv and user_profile.csv from the .tar.gz "
        f"archives (behavior_log.csv is not needed)"
    ),
)
USER_FIELDS = (
    "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
    "new_user_class_level",
)
AD_FIELDS = ("cate_id", "campaign_id", "customer", "brand")
HISTORY_FIELDS = ("adgroup_id", "cate_id", "brand")
CST_OFFSET = 8 * 3600  # China Standard Time, UTC+8


def read_raw_sample(path, chunk_rows: int = 1 << 21) -> dict[str, np.ndarray]:
    cols = read_columns(
        path,
        {"user": np.int32, "time_stamp": np.int64, "adgroup_id": np.int32, "pid": "category", "nonclk": np.int8,
         "clk": np.int8},
        "Taobao raw_sample.csv (header user,time_stamp,adgroup_id,pid,nonclk,clk)",
        chunk_rows=chunk_rows,
    )
    for c in ("clk", "nonclk"):
        bad = (cols[c] != 0) & (cols[c] != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}: {c} must be 0 or 1; line {row + 2} has {int(cols[c][row])} ({int(bad.sum())} such rows)"
            )
    return cols


def read_ad_feature(path) -> dict[str, np.ndarray]:
    return read_columns(
        path,
        {"adgroup_id": np.int32, **{c: np.float64 for c in AD_FIELDS}, "price": np.float64},
        "Taobao ad_feature.csv (header adgroup_id,cate_id,campaign_id,customer,brand,price; NULL for missing)",
    )


def read_user_profile(path) -> dict[str, np.ndarray]:
    return read_columns(
        path,
        {"userid": np.int32, **{c: np.float64 for c in USER_FIELDS}},
        "Taobao user_profile.csv (header userid,cms_segid,cms_group_id,final_gender_code,age_level,"
        "pvalue_level,shopping_level,occupation,new_user_class_level; empty for missing)",
    )


def encode_categorical(values: np.ndarray, first_code: int, path, column: str) -> tuple[np.ndarray, int]:
    """NaN -> ``first_code - 1``; distinct values in increasing order -> ``first_code, first_code + 1, ...``.
    Returns the codes (int32) and the vocabulary size."""
    present = ~np.isnan(values)
    v = values[present]
    if v.size and not np.array_equal(v, np.floor(v)):
        bad = v[v != np.floor(v)][:3].tolist()
        raise DataFormatError(f"{path}: column {column!r} holds ids, found non-integer values {bad}")
    uniq = np.unique(v)
    codes = np.full(values.shape, first_code - 1, dtype=np.int32)
    codes[present] = np.searchsorted(uniq, v).astype(np.int32) + first_code
    return codes, len(uniq) + first_code


def _sorted_by(table: dict[str, np.ndarray], key: str, path) -> dict[str, np.ndarray]:
    """The table's rows sorted by ``key``, whose values must be unique."""
    order = np.argsort(table[key], kind="stable")
    out = {c: (v[order] if isinstance(v, np.ndarray) and v.shape == order.shape else v) for c, v in table.items()}
    s = out[key]
    dup = s[1:][s[1:] == s[:-1]]
    if dup.size:
        raise DataFormatError(f"{path}: duplicate {key} values, e.g. {np.unique(dup)[:5].tolist()}")
    return out


def load_taobao(
    path: str | None = None,
    test_fraction: float = 0.2,
    history_maxlen: int = 50,
    verify: bool = True,
) -> InteractionDataset:
    """Taobao Ad Display/Click Data with RF² §5.1's features (see the module docstring).

    The files have no published checksum: ``verify=True`` only warns that they are read unchecked.
    """
    if history_maxlen < 1:
        raise ValueError(f"history_maxlen must be >= 1, got {history_maxlen}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    found = locate_pinned(TAOBAO, {}, path=path)
    check_files(found, TAOBAO.files, verify, "Tianchi publishes no checksums for these files")
    folder = found.path
    ads = read_ad_feature(folder / "ad_feature.csv")
    profile = read_user_profile(folder / "user_profile.csv")
    ads = _sorted_by(ads, "adgroup_id", folder / "ad_feature.csv")
    profile = _sorted_by(profile, "userid", folder / "user_profile.csv")
    raw = read_raw_sample(folder / "raw_sample.csv")
    if raw["user"].size == 0:
        raise DataFormatError(f"{folder / 'raw_sample.csv'}: no impressions")

    # ids -> dense indices
    user_ids = sorted_unique(raw["user"])
    user, _ = codes_in(user_ids, raw.pop("user"))
    item_ids = sorted_unique(np.concatenate([ads["adgroup_id"], sorted_unique(raw["adgroup_id"])]))
    item, _ = codes_in(item_ids, raw.pop("adgroup_id"))
    n_users, n_items = len(user_ids), len(item_ids)

    # ad features (row = item index)
    ad_row, ad_missing = codes_in(ads["adgroup_id"], item_ids)
    if ad_missing.any():
        warnings.warn(
            f"{folder / 'raw_sample.csv'}: {int(ad_missing.sum())} ads are not in ad_feature.csv; their features "
            f"are coded as missing",
            stacklevel=2,
        )
    items = pd.DataFrame({"adgroup_id": np.arange(1, n_items + 1, dtype=np.int32)}, index=pd.RangeIndex(n_items, name="item"))
    item_features: list = [SparseFeature("adgroup_id", n_items + 1, "item")]
    for c in AD_FIELDS:
        codes, vocab = encode_categorical(ads[c], 2, folder / "ad_feature.csv", c)
        col = np.ones(n_items, dtype=np.int32)
        col[~ad_missing] = codes[ad_row[~ad_missing]]
        items[c] = col
        item_features.append(SparseFeature(c, vocab, "item"))
    price = np.full(n_items, np.nan)
    price[~ad_missing] = ads["price"][ad_row[~ad_missing]]
    ok = np.isfinite(price) & (price > 0)
    log_price = np.zeros(n_items, dtype=np.float32)
    if ok.any():
        lp = np.log(price[ok])
        sd = lp.std()
        log_price[ok] = (lp - lp.mean()) / (sd if sd > 0 else 1.0)
    items["log_price"] = log_price
    item_features.append(DenseFeature("log_price", "item"))

    # user features (row = user index)
    prof_row, no_profile = codes_in(profile["userid"], user_ids)
    users = pd.DataFrame(index=pd.RangeIndex(n_users, name="user"))
    user_features = []
    for c in USER_FIELDS:
        codes, vocab = encode_categorical(profile[c], 1, folder / "user_profile.csv", c)
        col = np.zeros(n_users, dtype=np.int32)
        col[~no_profile] = codes[prof_row[~no_profile]]
        users[c] = col
        user_features.append(SparseFeature(c, vocab, "user"))

    # events
    timestamp = raw.pop("time_stamp")
    order = event_order(user, timestamp, item)
    user, item, timestamp = user[order], item[order], timestamp[order]
    label = raw.pop("clk")[order]
    pid = raw.pop("pid")[order].astype(np.int8 if len(raw["pid:categories"]) < 128 else np.int32)
    del order
    day_of_week = (((timestamp + CST_OFFSET) // 86400 + 3) % 7).astype(np.int8)  # 1970-01-01 was a Thursday
    events = pd.DataFrame({
        "user": user, "item": item, "label": label, "timestamp": timestamp,
        "is_test": temporal_split(user, test_fraction), "pid": pid, "day_of_week": day_of_week,
    })
    del user, item, label, timestamp, pid, day_of_week

    vocab = {f.name: f.vocab_size for f in item_features if isinstance(f, SparseFeature)}
    histories = [
        SequenceFeature(f"hist_{c}", vocab[c], history_maxlen, "history", embedding_name=c,
                        length_name="hist_length" if c == "adgroup_id" else None)
        for c in HISTORY_FIELDS
    ]
    event_features = [
        SparseFeature("pid", max(len(raw["pid:categories"]), 1), "event"),
        SparseFeature("day_of_week", 7, "event"),
    ]
    return InteractionDataset(
        name="taobao",
        events=events,
        users=users,
        items=items,
        schema=Schema(tuple(user_features + histories + item_features + event_features)),
        description=(
            f"Taobao Ad Display/Click (RF² §5.1): label = clk; 8 user profile features (no user id); last "
            f"{history_maxlen} clicked ads/categories/brands; ad id, category, campaign, customer, brand, log price; "
            f"scenario pid {list(raw['pid:categories'])}, day of week; last {test_fraction:.0%} of each user's "
            f"impressions (by time) for test"
        ),
        source=found.origin,
    )
