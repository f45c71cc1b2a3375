"""Fuzzing the spec parsers, the run configuration and the MovieLens-100K readers (hypothesis).

Malformed input must end in a *documented* error — ``ValueError`` (or its subclass
``DataFormatError``), ``ChecksumError``, ``DataNotFoundError`` — whose message names the offending
spec, setting or file and what is allowed; never a stray TypeError, KeyError, IndexError,
OverflowError, ZeroDivisionError or pandas/torch error. Valid input must parse to a valid object
and round-trip.

The MovieLens fixtures are written here, in the exact GroupLens / RecBole formats, from made-up
users, movies and ratings (no real MovieLens data is committed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizations import (
    PRESETS, REGISTRY, Channel, ExcludeLo, Optimization, Overselect, Prune, Quant, QuantS, expand_optimizations,
    parse_optimization,
)
from optimizations.compression import PAPER_BITS, PAPER_RATIOS
from tier_mapping import MAX_ALPHA, MAX_TIERS, PAPER_LEVELS, TierAssignment, map_tiers, parse_mapping
from tier_mapping.report import heterogeneity_report
from rf2.config import RunConfig, load_toml
from rf2.data import (
    ChecksumError, DataFormatError, DataNotFoundError, InteractionDataset, load_dataset, make_synthetic,
)
from rf2.data import movielens
from rf2.data.movielens import GENRES, OCCUPATIONS, build_movielens, read_ml100k_recbole

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_IO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: every documented error message says what is allowed, with one of these phrases
ALLOWED = re.compile(r"use |one of|known:|options:|must be|takes no arguments|give it once|preset")


# ==================================================================================================
# optimisation specs
# ==================================================================================================
NUMBER_TEXT = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(0, 1).map(repr),
    st.sampled_from([
        "0", "-0", "1", "2", "4", "8", "16", "32", "33", "0.2", "1.5", "-0.1", "1e308", "1e-320", "1e400", "nan",
        "inf", "-inf", "Infinity", "1_0", "\u0661", "\u0662", "0x10", " 4 ", "", " ", "9" * 400, ".5", "5.", "+3",
        "1e", "e5", "--1", "1,5",
    ]),
)
WORD = st.sampled_from([
    "frac", "bits", "FRAC", "noise=exact", "noise=loud", "noise=", "NOISE=Gaussian", "scope=tensor", "scope=x",
    "rescale=true", "rescale=maybe", "scope=update", "sign=budget", "sign=separate", "sign=x", "=", "x=1", "unbalanced", "balanced", "noise=exact=1",
])
TOKEN = st.one_of(NUMBER_TEXT, WORD, st.text(max_size=6))
OPT_NAMES = [*sorted(REGISTRY), *PRESETS, "Prune", "QUANT", " quant", "exclude_lo", "overselect ", "", "squash",
             "dirichlet", "random"]
BRIEF_NEAR_MISSES = [
    "prune:1:2", "quant:0:8:32", "quant:1:2:33", "overselect:1.5", "overselect:-0.1", "quant:bits:0:8:32",
    "quant:bits:1:2:33", "quants:bits:1:8:32", "prune:frac:1:0:0", "prune:frac:0.5:-0.1", "channel:frac:0:1",
    "channel:frac:1.5:1", "quant:1:2:1e308", "quant:1:1e308:1e308", "quants:1:1e9", "prune:1e-320:1:2",
    "channel:1e-320:1e308", "overselect:nan", "overselect:1e400", "quant:1:2:4:noise=exact:noise=gaussian",
    "prune:" + "9" * 5000 + ":1", "quant:\u0661:\u0662", "none:", "exclude-lo:1", "paper-table1", "", "   ", "\x00",
    "quant:1:2:4:=x", "overselect:0.2:0.3", "quant:bits", "prune:frac", "quant::", "channel:1:1",
]
near_miss = st.builds(lambda name, toks: ":".join([name, *toks]), st.sampled_from(OPT_NAMES), st.lists(TOKEN, max_size=5))
OPT_SPECS = st.one_of(near_miss, st.text(max_size=40), st.sampled_from(BRIEF_NEAR_MISSES))


def settings_of(opt: Optimization) -> tuple:
    return (type(opt), getattr(opt, "per_tier", None), getattr(opt, "fraction", None), getattr(opt, "rescale", None),
            getattr(opt, "noise", None), getattr(opt, "scope", None), getattr(opt, "sign", None))


def assert_valid(opt: Optimization) -> None:
    """The object's settings are in their documented ranges."""
    if isinstance(opt, Prune):
        assert all(0 <= f < 1 for f in opt.per_tier)
    if isinstance(opt, Quant):
        low = 2 if isinstance(opt, QuantS) and opt.sign == "budget" else 1
        assert all(isinstance(b, int) and low <= b <= 32 for b in opt.per_tier)
        assert opt.noise in ("auto", "exact", "gaussian") and opt.scope in ("update", "tensor")
        assert opt.sign in (("separate", "budget") if isinstance(opt, QuantS) else (None,))
    if isinstance(opt, Channel):
        assert all(0 < w <= 1 for w in opt.per_tier)
    if isinstance(opt, Overselect):
        assert math.isfinite(opt.fraction) and 0 < opt.fraction <= 10
    if hasattr(opt, "per_tier"):
        assert len(opt.per_tier) >= 2


def check_optimization(spec: str) -> Optimization | None:
    """Parse ``spec``: a valid object that round-trips, or a ValueError naming the spec and what is allowed."""
    try:
        opt = parse_optimization(spec)
    except ValueError as exc:
        msg = str(exc)
        assert repr(spec) in msg or repr(spec.strip()) in msg, f"the error does not name the spec: {msg}"
        assert ALLOWED.search(msg), f"the error does not say what is allowed: {msg}"
        return None
    assert isinstance(opt, Optimization)
    assert opt.spec == spec.strip()
    assert_valid(opt)
    assert settings_of(parse_optimization(opt.spec)) == settings_of(opt)
    return opt


@FUZZ
@given(OPT_SPECS)
def test_optimization_specs_parse_or_raise_a_documented_error(spec):
    check_optimization(spec)


@pytest.mark.parametrize("spec", BRIEF_NEAR_MISSES)
def test_near_miss_optimization_specs(spec):
    check_optimization(spec)


@pytest.mark.parametrize("spec,match", [
    ("quant:1:2:1e308", None),  # was OverflowError (32 * 1e308 = inf in the ratio -> bits conversion)
    ("quant:bits:0:8:32", r"\[1, 32\]"), ("quant:bits:1:2:33", r"\[1, 32\]"), ("quants:bits:1:8:32:sign=budget", r"\[2, 32\]"),
    ("quants:1:1e9:sign=budget", r"overhead ratios 1:1e9 give \(1, 32\)"), ("prune:frac:1:0:0", r"\[0, 1\)"),
    ("channel:frac:0:1", r"\(0, 1\]"), ("overselect:-0.1", r"\(0, 10\]"), ("overselect:nan", "finite decimal"),
    ("quant:\u0661:\u0662", "finite decimal"), ("quant:1_0:2", "finite decimal"),
    ("quant:1:2:4:noise=exact:noise=gaussian", "more than once"),
])
def test_specific_spec_errors(spec, match):
    if match is None:
        assert parse_optimization(spec).per_tier == (1, 1, 32)
    else:
        with pytest.raises(ValueError, match=match):
            parse_optimization(spec)


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=5), st.lists(st.text(max_size=3), max_size=2)))
def test_non_string_specs_are_value_errors(spec):
    with pytest.raises(ValueError, match="non-empty string"):
        parse_optimization(spec)
    with pytest.raises(ValueError, match="non-empty string"):
        parse_mapping(spec)


# -- round trips of valid specs ----------------------------------------------------------------------
def _join(*parts) -> str:
    return ":".join(str(p) for p in parts)


@FUZZ
@given(st.lists(st.floats(0, 1, exclude_max=True), min_size=2, max_size=5), st.booleans())
def test_prune_fractions_round_trip(fracs, rescale):
    spec = _join("prune:frac", *map(repr, fracs)) + (":rescale=true" if rescale else "")
    opt = parse_optimization(spec)
    assert opt.per_tier == tuple(fracs) and opt.rescale == rescale and opt.spec == spec


@FUZZ
@given(st.sampled_from(["quant", "quants"]), st.data(), st.sampled_from(["auto", "exact", "gaussian"]),
       st.sampled_from(["update", "tensor"]), st.sampled_from(["separate", "budget"]))
def test_quant_bits_round_trip(name, data, noise, scope, sign):
    budget = name == "quants" and sign == "budget"
    bits = data.draw(st.lists(st.integers(2 if budget else 1, 32), min_size=2, max_size=5))
    spec = _join(f"{name}:bits", *bits, f"noise={noise}", f"scope={scope}", *([f"sign={sign}"] if name == "quants" else []))
    opt = parse_optimization(spec)
    assert opt.per_tier == tuple(bits) and (opt.noise, opt.scope) == (noise, scope)
    assert opt.sign == (sign if name == "quants" else None)
    assert isinstance(opt, QuantS) == (name == "quants")


@FUZZ
@given(st.lists(st.floats(0, 1, exclude_min=True), min_size=2, max_size=5))
def test_channel_widths_round_trip(widths):
    opt = parse_optimization(_join("channel:frac", *map(repr, widths)))
    assert opt.per_tier == tuple(widths)


@FUZZ
@given(st.floats(0, 10, exclude_min=True))
def test_overselect_fraction_round_trips(f):
    opt = parse_optimization(f"overselect:{f!r}")
    assert opt.fraction == f and opt.selection_size(10) >= 10


@FUZZ
@given(st.sampled_from(["prune", "quant", "quants", "channel"]),
       st.lists(st.floats(min_value=1e-300, max_value=1e300), min_size=2, max_size=4))
def test_overhead_ratios_give_the_documented_settings(name, ratios):
    """Properties, not a copy of the parser: the most capable tier (largest ratio) is untouched
    (no pruning, full width, 32 bits); every other tier's setting is proportional to its ratio
    (kept share, width, or bits out of 32 rounded to an integer, at least 1 bit); order is kept.
    Table 1's named ratios are checked literally in tests/test_compression.py."""
    from fractions import Fraction

    spec = _join(name, *map(repr, ratios))
    opt = check_optimization(spec)
    top = max(ratios)
    # exact share of the top ratio, computed in rationals (no float division to mirror)
    share = [Fraction(v) / Fraction(top) for v in ratios]
    if opt is None:
        # only a share lost in float arithmetic can make a setting invalid: a pruning fraction
        # 1 - share that rounds to 1, a width that underflows to 0
        tiny = Fraction(1, 2**52) if name == "prune" else Fraction(1, 10**300)
        assert name in ("prune", "channel") and min(share) < tiny
        return
    got = opt.per_tier
    assert len(got) == len(ratios)
    for v, g, sh in zip(ratios, got, share):
        if name == "prune":
            assert 0 <= g < 1 and abs((1 - Fraction(g)) - sh) <= Fraction(1, 10**12)
        elif name == "channel":
            assert 0 < g <= 1 and abs(Fraction(g) - sh) <= Fraction(1, 10**12) * max(sh, Fraction(1, 10**290))
        else:
            assert isinstance(g, int) and 1 <= g <= 32
            named = ":".join(f"{r:g}" for r in ratios) in PAPER_BITS
            if not named:
                assert g == 1 and 32 * sh < Fraction(3, 2) or abs(g - 32 * sh) <= Fraction(1, 2) + Fraction(1, 10**9)
        if v == top:
            assert g == (0 if name == "prune" else 1 if name == "channel" else 32)
    # more overhead allowed -> never a stronger compression
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    settings_in_order = [got[i] for i in order]
    if name == "prune":
        assert settings_in_order == sorted(settings_in_order, reverse=True)
    else:
        assert settings_in_order == sorted(settings_in_order)


def test_paper_ratios_are_canonical():
    for name in ("prune", "quant", "quants", "channel"):
        for r in PAPER_RATIOS:
            assert parse_optimization(f"{name}:{r}").spec == f"{name}:{r}"
    assert isinstance(parse_optimization(" EXCLUDE-LO "), ExcludeLo)


@FUZZ
@given(st.one_of(
    st.lists(st.one_of(OPT_SPECS, st.sampled_from(["paper-table1", " Paper-Table1 ", "none", " none"]), st.none(),
                       st.integers(), st.lists(st.text(max_size=2), max_size=1)), max_size=4),
    OPT_SPECS, st.none(), st.integers(), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.sets(st.sampled_from(["none", "exclude-lo"])),
))
def test_expand_optimizations(specs):
    try:
        out = expand_optimizations(specs)
    except ValueError as exc:
        assert ALLOWED.search(str(exc)), str(exc)
        return
    assert len(out) == len(set(out))
    for s in out:
        assert parse_optimization(s).spec == s


def test_expand_keeps_presets_and_canonical_specs():
    assert expand_optimizations([" none", "none", "paper-table1"])[:3] == ["none", "exclude-lo", "overselect:0.2"]
    with pytest.raises(ValueError, match="list of specs"):
        expand_optimizations(None)
    with pytest.raises(ValueError, match="non-empty string"):
        expand_optimizations([["none"]])  # was TypeError: unhashable list


# ==================================================================================================
# tier mapping specs
# ==================================================================================================
MAP_SPECS = st.one_of(
    st.builds(lambda name, toks: ":".join([name, *toks]),
              st.sampled_from(["dirichlet", "Dirichlet", " dirichlet", "random", "hetero-mid", "dirichlet "]),
              st.lists(st.one_of(NUMBER_TEXT, WORD, st.text(max_size=4)), max_size=3)),
    st.text(max_size=30),
    st.sampled_from(["dirichlet:0", "dirichlet:-1", "dirichlet:nan", "dirichlet:inf", "dirichlet:1e308", "dirichlet:",
                     "dirichlet:1e-400", "dirichlet:\u0665", "dirichlet:1_0", "random", " RANDOM ", "hetero-vhigh",
                     "dirichlet:0.5:sideways", "dirichlet:0.5:unbalanced", "dirichlet:" + "9" * 5000, "",
                     "activity", "activity:5:3:2", "activity:0:1:1", "activity:1e400:1:1", "activity:a", "activity:"]),
)


def check_mapping(spec: str):
    try:
        kind, alpha, balance = parse_mapping(spec)
    except ValueError as exc:
        msg = str(exc)
        assert repr(spec) in msg, f"the error does not name the spec: {msg}"
        assert "dirichlet:ALPHA" in msg and "random" in msg, f"the error does not list the allowed forms: {msg}"
        return None
    assert kind in ("random", "dirichlet", "activity") and isinstance(balance, bool)
    if kind == "dirichlet":
        assert math.isfinite(alpha) and 0 < alpha <= MAX_ALPHA
    if kind == "activity" and alpha is not None:  # the ratio
        assert all(math.isfinite(r) and 0 < r <= MAX_ALPHA for r in alpha)
    return kind, alpha, balance


@FUZZ
@given(MAP_SPECS)
def test_mapping_specs_parse_or_raise_a_documented_error(spec):
    check_mapping(spec)


@FUZZ
@given(st.floats(min_value=5e-324, max_value=MAX_ALPHA), st.sampled_from(["", ":unbalanced", ":balanced", ":UNBALANCED"]),
       st.sampled_from(["dirichlet", "DIRICHLET", " Dirichlet"]))
def test_dirichlet_alpha_round_trips(alpha, suffix, name):
    assert parse_mapping(f"{name}:{alpha!r}{suffix}") == ("dirichlet", alpha, suffix.lower() != ":unbalanced")


def test_paper_levels_equal_their_alphas():
    for name, alpha in PAPER_LEVELS.items():
        assert parse_mapping(name) == parse_mapping(f"dirichlet:{alpha!r}")


@pytest.mark.parametrize("spec", ["dirichlet:0", "dirichlet:-1", "dirichlet:nan", "dirichlet:inf", "dirichlet:1e308",
                                  "dirichlet:1e-400", "dirichlet:\u0665", "dirichlet:1_0"])
def test_bad_alphas_are_rejected(spec):
    with pytest.raises(ValueError, match=r"'dirichlet:ALPHA' \(ALPHA a decimal number in \(0, 1e\+09\]"):
        parse_mapping(spec)


def test_largest_alpha_still_spreads_users(synth):
    # near float64's limit the gamma draws overflowed and every user landed in the top tier;
    # such alphas are now rejected, and the largest accepted one is a proper (random-like) mapping
    sizes = map_tiers(synth, f"dirichlet:{MAX_ALPHA:g}", 3, seed=0).sizes()
    assert sizes.min() > 0.2 * synth.n_users


@pytest.mark.parametrize("n_tiers", [0, 1, MAX_TIERS + 1, 1000, 2.5, True, "3"])
def test_tier_count_out_of_range(synth, n_tiers):
    with pytest.raises(ValueError, match=r"n_tiers must be an integer in \[2, 127\]"):
        map_tiers(synth, "random", n_tiers)


# ==================================================================================================
# run configuration
# ==================================================================================================
FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2),
)
OPTION_VALUE = st.one_of(ANY, st.integers(0, 6), st.floats(0, 1), st.just("/nonexistent"))
TYPED = {
    "dataset": st.sampled_from(["ml-100k", "synthetic", "ml-1m", "", "ML-100K"]),
    "mapping": MAP_SPECS,
    "optimization": OPT_SPECS,
    "n_tiers": st.integers(-1, 200),
    "seed": st.integers(-3, 2**70),
    "clients_per_round": st.integers(-1, 10**6),
    "max_rounds": st.integers(-2, 5),
    "client_lr": st.floats(allow_nan=True, allow_infinity=True),
    "server_lr": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(10**400)),
    "engine": st.sampled_from(["batched", "reference", "fast"]),
    "server_optimizer": st.sampled_from(["adagrad", "sgd", "adam"]),
    "dataset_options": st.dictionaries(
        st.one_of(st.sampled_from(["click_threshold", "test_fraction", "history_maxlen", "verify", "download",
                                   "path", "n_users", "bogus"]), st.integers(0, 2)),
        OPTION_VALUE, max_size=3),
    "model_options": st.dictionaries(st.one_of(st.sampled_from(["embedding_dim", "top_hidden", "bogus"]), st.integers(0, 2)),
                                     ANY, max_size=2),
    "system_options": st.dictionaries(
        st.sampled_from(["low", "mid", "high", "tier3"]),
        st.one_of(ANY, st.dictionaries(st.sampled_from(["ms_per_sample", "ms_per_sample_std", "upload_mbps", "speed"]),
                                       st.one_of(st.floats(allow_nan=True), st.integers(-1, 100), st.text(max_size=3)),
                                       max_size=2)),
        max_size=2),
}
CONFIG_DICTS = st.tuples(
    st.fixed_dictionaries({}, optional={name: st.one_of(TYPED[name], ANY) if name in TYPED else ANY for name in FIELDS}),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), ANY, max_size=1),
)


@FUZZ
@given(CONFIG_DICTS)
def test_run_config_from_random_settings(dicts):
    d = {**dicts[1], **dicts[0]}
    try:
        cfg = RunConfig.from_dict(d)
    except ValueError as exc:
        msg = str(exc)
        assert any(str(k) in msg or repr(k) in msg for k in d), f"the error names none of the given settings {sorted(map(str, d))}: {msg}"
        return
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again.to_json() == cfg.to_json()


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_run_config_from_non_tables(d):
    with pytest.raises(ValueError, match="table of settings"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("changes,match", [
    ({"n_tiers": 200}, r"n_tiers must be an integer in \[2, 127\]"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": 1.5}, "seed must be an integer >= 0"),
    ({"client_lr": 10**400}, "client_lr must be a positive finite number"),
    ({"client_lr": True}, "client_lr must be a positive finite number"),
    ({"dataset": ["ml-100k"]}, "dataset must be a string"),
    ({"dataset_options": {1: 2, "a": 3}}, "dataset_options keys must be strings"),
    ({"dataset_options": {"click_threshold": 9}}, r"click_threshold must be a star rating: an integer in 1\.\.5"),
    ({"dataset_options": {"test_fraction": 1.0}}, r"test_fraction must be a number in \[0, 1\)"),
    ({"dataset_options": {"history_maxlen": "x"}}, "history_maxlen must be an integer >= 1"),
    ({"dataset_options": {"path": 5}}, "path must be a folder"),
    ({"dataset_options": {"bogus": 1}}, r"dataset_options: dataset 'ml-100k' has no option\(s\) \['bogus'\]"),
    ({"optimization": "prune:1:2"}, r"2 values .* 3 tiers"),
    ({"system_options": {"low": {"upload_mbps": -1}}}, "system_options: device profile: upload_mbps"),
    ({"system_options": {"lo": {}}}, "system_options: unknown tier 'lo'"),
])
def test_config_errors_name_the_setting(changes, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**changes)


@FUZZ
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode),
                 st.sampled_from([b'seed = 1\n', b'[run]\nseed = "x"\n', b"\xff\xfe[run]", b"seed = 1\nseed = 2\n",
                                  b"n_tiers = 1e400\n", b"mapping = ['a']\n"])))
def test_config_files(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.toml"
        path.write_bytes(raw)
        try:
            data = load_toml(path)
        except ValueError as exc:
            assert str(path) in str(exc)
            return
        try:
            RunConfig.from_dict(data)
        except ValueError as exc:
            assert any(str(k) in str(exc) for k in data), str(exc)


def test_config_file_that_is_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        RunConfig.from_toml(tmp_path)


# ==================================================================================================
# MovieLens-100K files
# ==================================================================================================
N_USERS, N_ITEMS = 10, 12


def ml100k_rows(seed: int = 0, quote_titles: bool = False):
    """Made-up users, movies and ratings as GroupLens' field lists."""
    rng = random.Random(seed)
    users = [[str(u), str(rng.randint(7, 73)), rng.choice("MF"), rng.choice(OCCUPATIONS), f"{rng.randint(0, 99999):05d}"]
             for u in range(1, N_USERS + 1)]
    items = []
    for i in range(1, N_ITEMS + 1):
        flags = [0] * len(GENRES)
        for g in rng.sample(range(len(GENRES)), rng.randint(1, 3)):
            flags[g] = 1
        title = "Les Mis\xe9rables (1995)" if i == 3 else f"Movie {i} (19{80 + i})"  # u.item is latin-1
        if quote_titles and i % 2:
            title = f'"{title}' if i % 4 == 1 else f'{title} "the cut"'
        items.append([str(i), title, f"01-Jan-19{80 + i}", "", f"http://us.imdb.com/M/title-exact?Movie%20{i}",
                      *map(str, flags)])
    ratings = []
    for u in range(1, N_USERS + 1):
        for i in rng.sample(range(1, N_ITEMS + 1), rng.randint(3, 7)):
            ratings.append([str(u), str(i), str(rng.randint(1, 5)), str(874965758 + rng.randint(0, 10**6))])
    return ratings, users, items


def ml100k_files(seed: int = 0, quote_titles: bool = False) -> dict[str, bytes]:
    ratings, users, items = ml100k_rows(seed, quote_titles)
    return {
        "u.data": "".join("\t".join(r) + "\n" for r in ratings).encode("ascii"),
        "u.user": "".join("|".join(r) + "\n" for r in users).encode("ascii"),
        "u.item": "".join("|".join(r) + "\n" for r in items).encode("latin-1"),
    }


def recbole_files(seed: int = 0) -> dict[str, bytes]:
    ratings, users, items = ml100k_rows(seed)
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join("\t".join(r) + "\n" for r in ratings)
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(
        "\t".join(r) + "\n" for r in users)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{r[0]}\t{r[1].rsplit(' (', 1)[0]}\t{r[2][-4:]}\t{' '.join(g for g, f in zip(GENRES, r[5:]) if f == '1')}\n"
        for r in items)
    return {"ml-100k.inter": inter.encode(), "ml-100k.user": user.encode(), "ml-100k.item": item.encode()}


SEPARATORS = {"u.data": b"\t", "u.user": b"|", "u.item": b"|",
              "ml-100k.inter": b"\t", "ml-100k.user": b"\t", "ml-100k.item": b"\t"}
FIELD_GARBAGE = st.one_of(
    st.sampled_from(["", "0", "6", "-1", "3.5", "1e3", "99999999999999999999", "NaN", "NA", "None", "abc", '"', '"x',
                     "M", "F", "X", "none", "student", "1", "2", "\xe9", " 1", "1 ", "\t", "|"]),
    st.integers(-5, 10**6).map(str),
    st.text(max_size=6),
)
OPS = ["truncate", "empty", "insert_bytes", "encoding", "separator", "drop_column", "duplicate_column",
       "replace_field", "rating", "unknown_id", "duplicate_line", "delete_line", "swap_columns", "blank_lines"]


@st.composite
def corrupted(draw, files: dict[str, bytes], header: bool = False):
    """``files`` with 1-3 random corruptions; returns ``(files, touched file names, what was done)``."""
    files = dict(files)
    touched, done = set(), []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(files)))
        op = draw(st.sampled_from(OPS))
        data, sep = files[name], SEPARATORS[name]
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "empty":
            data = b""
        elif op == "insert_bytes":
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.binary(min_size=1, max_size=6)) + data[pos:]
        elif op == "encoding":  # latin-1 / non-UTF-8 / NUL bytes, or the whole file in UTF-16
            if draw(st.booleans()):
                pos = draw(st.integers(0, len(data)))
                data = data[:pos] + draw(st.sampled_from([b"\xe9", b"\xff\xfe", b"\x81", "\xe9".encode(), b"\x00"])) + data[pos:]
            else:
                data = data.decode("latin-1").encode("utf-16")
        elif op == "separator":
            data = data.replace(sep, draw(st.sampled_from([b",", b";", b" ", b"\t", b"|", b"::"])))
        elif op == "blank_lines":
            data = data.replace(b"\n", draw(st.sampled_from([b"\n\n", b"\r\n", b"\n \n"])))
        else:
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            first = 1 if header and lines else 0
            rows = [line.split(sep) for line in lines]
            if len(rows) <= first:
                continue
            i = draw(st.integers(first, len(rows) - 1))
            width = len(rows[i])
            if op in ("drop_column", "duplicate_column", "swap_columns"):
                j = draw(st.integers(0, width - 1))
                k = draw(st.integers(0, width - 1))
                targets = rows[first:] if draw(st.booleans()) else [rows[i]]
                for r in targets:
                    if op == "drop_column" and j < len(r):
                        del r[j]
                    elif op == "duplicate_column" and j < len(r):
                        r.insert(j, r[j])
                    elif op == "swap_columns" and max(j, k) < len(r):
                        r[j], r[k] = r[k], r[j]
            elif op == "replace_field":
                j = draw(st.integers(0, width - 1))
                rows[i][j] = draw(FIELD_GARBAGE).encode("utf-8")
            elif op == "rating":
                if width > 2:
                    rows[i][2] = str(draw(st.integers(-3, 9))).encode()
            elif op == "unknown_id":
                j = min(draw(st.sampled_from([0, 1])) if name in ("u.data", "ml-100k.inter") else 0, width - 1)
                rows[i][j] = str(draw(st.integers(-5, 10**6))).encode()
            elif op == "duplicate_line":
                rows.insert(i, list(rows[i]))
            elif op == "delete_line":
                del rows[i]
            data = b"".join(sep.join(r) + b"\n" for r in rows)
        files[name] = data
        touched.add(name)
        done.append((op, name))
    return files, touched, done


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def check_loaded_or_documented_error(load, touched: set[str], n_rating_lines: int):
    """``load()`` returns a valid dataset or raises a documented error naming a corrupted file."""
    try:
        ds = load()
    except (DataFormatError, ChecksumError, DataNotFoundError) as exc:
        msg = str(exc)
        assert any(name in msg for name in touched), f"the error names none of the corrupted files {touched}: {msg}"
        return None
    assert isinstance(ds, InteractionDataset)
    ds.validate()
    assert 1 <= ds.n_events <= n_rating_lines and ds.n_users >= 1 and ds.n_items >= 1
    assert set(np.unique(ds.label)) <= {0, 1}
    return ds


def test_fixture_is_valid_grouplens(tmp_path):
    files = ml100k_files()
    ds = load_dataset("ml-100k", path=write_files(tmp_path / "ml-100k", files), verify=False)
    ratings = [line.split("\t") for line in files["u.data"].decode().splitlines()]
    assert (ds.n_users, ds.n_items, ds.n_events) == (N_USERS, N_ITEMS, len(ratings))
    assert ds.label.sum() == sum(r[2] == "5" for r in ratings)
    assert all(line.count("|") == 23 for line in files["u.item"].decode("latin-1").splitlines())  # 24 fields
    # the same data in RecBole's format reads the same
    rb = write_files(tmp_path / "recbole", recbole_files())
    other = build_movielens(read_ml100k_recbole(rb), "ml-100k")
    assert ds.events.equals(other.events) and ds.users.equals(other.users)
    assert np.array_equal(ds.item_sequences["genres"], other.item_sequences["genres"])


@FUZZ_IO
@given(corrupted(ml100k_files()))
def test_corrupted_grouplens_files(case):
    files, touched, _ = case
    n_lines = files["u.data"].count(b"\n") + 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_files(Path(tmp) / "ml-100k", files)
        check_loaded_or_documented_error(lambda: load_dataset("ml-100k", path=folder, verify=False), touched, n_lines)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted(recbole_files(), header=True))
def test_corrupted_recbole_files(case):
    files, touched, _ = case
    n_lines = files["ml-100k.inter"].count(b"\n") + 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_files(Path(tmp), files)
        check_loaded_or_documented_error(lambda: build_movielens(read_ml100k_recbole(folder), "ml-100k"), touched, n_lines)


@pytest.mark.parametrize("name,edit,match", [
    ("u.data", lambda b: b.replace(b"\t", b"\t99999999999999999999", 1), r"u\.data.*too large for a 64-bit"),
    ("u.user", lambda b: b"", r"u\.user: no users"),  # was KeyError
    ("u.user", lambda b: b + b.split(b"\n")[0] + b"\n", r"u\.user: every user id must appear once"),  # was ValueError
    ("u.item", lambda b: b + b.split(b"\n")[0] + b"\n", r"u\.item: every movie id must appear once"),  # was IndexError
    ("u.item", lambda b: b"", r"u\.item: no movies"),
    ("u.user", lambda b: b"1|-4|M|artist|12345\n" + b.split(b"\n", 1)[1], r"u\.user: ages must be integers >= 0"),
    ("u.user", lambda b: b.replace(b"|M|", b"||", 1).replace(b"|F|", b"||", 1), r"u\.user: unknown gender values \[''\]"),
    ("u.data", lambda b: b"1\t1\t0\t874965758\n" + b, r"u\.data: ratings must be whole stars 1\.\.5, found \[0\]"),
    ("u.data", lambda b: b"1\t1\t6\t874965758\n" + b, r"u\.data: ratings must be whole stars 1\.\.5, found \[6\]"),
    ("u.data", lambda b: b + b"1\t999\t3\t874965758\n", r"u\.data: 1 name movies that .*u\.item does not list \(e\.g\. \[999\]\)"),
    ("u.data", lambda b: b + b"999\t1\t3\t874965758\n", r"u\.data: 1 name users that .*u\.user does not list"),
])
def test_specific_file_errors(tmp_path, name, edit, match):
    files = ml100k_files()
    files[name] = edit(files[name])
    folder = write_files(tmp_path / "ml-100k", files)
    with pytest.raises(DataFormatError, match=match):
        load_dataset("ml-100k", path=folder, verify=False)


@pytest.fixture(scope="module")
def fixture_dataset():
    with tempfile.TemporaryDirectory() as tmp:
        return load_dataset("ml-100k", path=write_files(Path(tmp) / "ml-100k", ml100k_files()), verify=False)


CELL_GARBAGE = st.one_of(st.none(), st.just(float("nan")), st.just(float("inf")), st.integers(-(2**40), 2**40),
                         st.floats(-5, 50), st.text(max_size=3), st.booleans())


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["events", "users", "items", "genres"]),
                          st.sampled_from(["drop", "cell", "shuffle", "none", "dtype"]), st.integers(0, 10**6),
                          st.integers(0, 10**6), CELL_GARBAGE), min_size=1, max_size=3))
def test_dataset_validate_on_corrupted_frames(fixture_dataset, edits):
    """``InteractionDataset.validate`` (run on construction) raises only DataFormatError naming the dataset."""
    ds = fixture_dataset
    parts = {"events": ds.events.copy(), "users": ds.users.copy(), "items": ds.items.copy(),
             "genres": ds.item_sequences["genres"].copy()}
    for part, op, i, j, value in edits:
        frame = parts[part]
        if frame is None:
            continue
        if part == "genres":
            if op == "none":
                parts[part] = None
            elif op in ("cell", "dtype") and isinstance(value, (int, float)) and not isinstance(value, bool):
                arr = frame.astype(np.float64)
                arr.flat[i % arr.size] = value
                parts[part] = arr
            elif op == "drop":
                parts[part] = frame[:, 1:]
            continue
        if op == "none":
            parts[part] = None
            continue
        if frame.shape[1] == 0:
            continue
        col = frame.columns[j % frame.shape[1]]
        if op == "drop":
            parts[part] = frame.drop(columns=col)
        elif op == "shuffle":
            parts[part] = frame.sample(frac=1, random_state=i % 1000).reset_index(drop=True)
        elif op == "dtype":
            parts[part] = frame.assign(**{col: pd.to_numeric(frame[col], errors="coerce") + 0.5})
        else:
            cells = frame[col].astype(object).copy()
            cells.iloc[i % len(cells)] = value
            parts[part] = frame.assign(**{col: cells})
    seqs = {} if parts["genres"] is None else {"genres": parts["genres"]}
    try:
        InteractionDataset(name="fuzzed", events=parts["events"], users=parts["users"], items=parts["items"],
                           schema=ds.schema, item_sequences=seqs)
    except DataFormatError as exc:
        assert str(exc).startswith("fuzzed: "), str(exc)


def test_quotes_in_titles_are_characters(tmp_path):
    # GroupLens files are not quoted: a title starting with '"' used to swallow the rest of the file
    plain = load_dataset("ml-100k", path=write_files(tmp_path / "a", ml100k_files()), verify=False)
    quoted = load_dataset("ml-100k", path=write_files(tmp_path / "b", ml100k_files(quote_titles=True)), verify=False)
    assert plain.events.equals(quoted.events) and plain.items.equals(quoted.items)


LOADER_OPTIONS = {
    "click_threshold": st.one_of(st.integers(-2, 8), ANY),
    "test_fraction": st.one_of(st.floats(-1, 2), ANY),
    "history_maxlen": st.one_of(st.integers(-2, 60), ANY),
    "verify": st.one_of(st.just(False), ANY),
    "download": st.one_of(st.just(False), ANY),
    "path": st.one_of(st.integers(), st.text(max_size=5), st.just(""), st.lists(st.integers(), max_size=1)),
}


@FUZZ
@given(st.fixed_dictionaries({}, optional=LOADER_OPTIONS))
def test_loader_options(options):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_files(Path(tmp) / "ml-100k", ml100k_files())
        options = {"path": folder, "verify": False, **options}
        try:
            ds = load_dataset("ml-100k", **options)
        except DataNotFoundError as exc:  # a path that holds no copy: says where to put the files
            assert "ml-100k" in str(exc) and ("Put" in str(exc) or "full path" in str(exc)), str(exc)
            return
        except ChecksumError as exc:  # verify=True: the fixture is not the official file
            assert options["verify"] is True and "u.data" in str(exc)
            return
        except ValueError as exc:
            assert any(name in str(exc) for name in options), str(exc)
            return
        assert isinstance(ds, InteractionDataset)


def test_path_with_unknown_home_directory(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"data path '~rf2-no-such-user/ml': cannot expand '~'"):
        load_dataset("ml-100k", path="~rf2-no-such-user/ml")  # was RuntimeError from pathlib


# -- checksums ---------------------------------------------------------------------------------------
def test_checksum_catches_a_modified_file(tmp_path, monkeypatch):
    files = ml100k_files()
    folder = write_files(tmp_path / "ml-100k", files)
    pins = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    spec = movielens.ML100K
    monkeypatch.setattr(movielens, "ML100K", dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, sha256=pins)))
    assert load_dataset("ml-100k", path=folder).n_events > 0  # verification on, files as pinned
    # a change that keeps the format valid: only the checksum can tell
    (folder / "u.item").write_bytes(files["u.item"].replace(b"Movie 1 ", b"Movie 7 ", 1))
    with pytest.raises(ChecksumError, match=r"u\.item is not the official file.*truncated, corrupt or modified"):
        load_dataset("ml-100k", path=folder)
    assert load_dataset("ml-100k", path=folder, verify=False).n_events > 0
    (folder / "u.item").write_bytes(files["u.item"])
    (folder / "u.data").write_bytes(files["u.data"][:-20])  # truncated
    with pytest.raises(ChecksumError, match=r"u\.data"):
        load_dataset("ml-100k", path=folder)


def test_unofficial_files_fail_the_default_verification(tmp_path):
    folder = write_files(tmp_path / "ml-100k", ml100k_files())
    with pytest.raises(ChecksumError, match=r"u\.data is not the official file.*verify=False"):
        load_dataset("ml-100k", path=folder)


def test_missing_file_is_data_not_found(tmp_path):
    files = ml100k_files()
    del files["u.item"]
    folder = write_files(tmp_path / "ml-100k", files)
    with pytest.raises(DataNotFoundError, match=r"missing \['u\.item'\]"):
        load_dataset("ml-100k", path=folder, verify=False)


# ==================================================================================================
# empty tiers, no eligible client, K larger than the population
# ==================================================================================================
SIM = dict(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 40, "events_per_user": 8, "seed": 2},
           clients_per_round=10, max_rounds=2)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(**SIM["dataset_options"])


def simulation(ds, tiers=None, **changes):
    from rf2.simulation import Simulation

    return Simulation(RunConfig(**{**SIM, **changes}), dataset=ds, tiers=tiers, progress=False)


def test_exclude_lo_with_every_user_low_end_leaves_no_client(small):
    tiers = TierAssignment(np.zeros(small.n_users, dtype=np.int8), 3, "all-low", 0)
    with pytest.raises(ValueError, match=r"'exclude-lo' leaves no client to train .*'low': 60, 'mid': 0, 'high': 0"):
        simulation(small, tiers, optimization="exclude-lo").training_clients()


def test_one_tier_assignment_is_a_clear_error(small):
    tiers = TierAssignment(np.zeros(small.n_users, dtype=np.int8), 1, "one-tier", 0)
    with pytest.raises(ValueError, match="has 1 tiers .* n_tiers=3"):
        simulation(small, tiers, optimization="exclude-lo").training_clients()


def test_k_larger_than_the_population(small):
    with pytest.raises(ValueError, match=r"clients_per_round=1000 .* only 60 clients can train .* between 1 and 60"):
        simulation(small, clients_per_round=1000).schedule()


@pytest.mark.parametrize("changes", [{"clients_per_round": 60, "optimization": "overselect:0.2"},
                                     {"clients_per_round": 50, "optimization": "exclude-lo"}])
def test_k_too_large_for_the_optimisation_names_it(small, changes):
    with pytest.raises(ValueError) as info:
        simulation(small, **changes).schedule()
    assert changes["optimization"] in str(info.value) and f"clients_per_round={changes['clients_per_round']}" in str(info.value)


def test_empty_tier_is_reported_not_an_error(small):
    tier = np.where(np.arange(small.n_users) % 2 == 0, 0, 2).astype(np.int8)  # nobody in "mid"
    tiers = TierAssignment(tier, 3, "no-mid", 0)
    res = simulation(small, tiers).run()
    bt = res.metrics.by_tier
    assert list(bt.index) == ["low", "mid", "high"]
    assert bt.loc["mid", "participations"] == 0 and bt.loc["mid", "upload_mb"] == 0 and np.isnan(bt.loc["mid", "auc"])
    table = res.table()
    assert table.loc["mid", "n_users"] == 0 and table.loc["mid", "n_events"] == 0
    assert np.isfinite(bt.loc["low", "auc"]) and np.isfinite(bt.loc["high", "auc"])
    report = heterogeneity_report(tiers, small.user, small.item, small.label, small.n_items)
    assert report.users_per_tier.tolist() == [30, 0, 30]
    assert np.isnan(report.jsd.loc["mid", "low"]) and np.isfinite(report.jsd.loc["low", "high"])
    assert "mid" in report.to_text()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.sampled_from([0.2, 0.5, 1.0, 0.1]))
def test_overselect_keeps_k_of_its_candidates(k, f):
    from optimizations import ClientContext

    for drop in ("tier", "time"):
        opt = Overselect(f"overselect:{f}:drop={drop}", f, drop=drop)
        n = opt.selection_size(k)
        assert n == math.floor(round(k * (1 + f), 9))  # floor(K(1 + r)), the authors' rule
        cands = [ClientContext(i, i % 3, ("low", "mid", "high")[i % 3], 0, 0, 10, i) for i in range(n)]
        kept = opt.participants(cands, lambda c: [0.0] * len(c))
        assert len(kept) == k, f"overselect:{f}:drop={drop} with K={k}: {n} candidates, {len(kept)} kept"
