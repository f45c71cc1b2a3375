"""Feature schema: what a model can be built from.

A schema lists the model's input features in a fixed order. Each feature says where its value
comes from (the user, the item, the event itself, or the user's click history) and how large its
vocabulary is, so a model can size its embedding tables without looking at the data.

Index conventions (shared by every dataset):

* sparse features are integers in ``[0, vocab_size)``;
* sequence features (multi-valued: genres, click history) are padded with ``0``, so their real
  values start at ``1``; a sequence feature that shares an embedding table with a sparse feature
  (the history of clicked movies shares the ``movie_id`` table) names it in ``embedding_name``,
  and that sparse feature then also starts at ``1``;
* a click-history feature is named ``hist_<item feature>`` (DIN's convention) and records, for
  each earlier click, the value of that item feature.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Source = Literal["user", "item", "event", "history"]
_SOURCES = ("user", "item", "event", "history")

#: float32 represents every integer up to 2**24 exactly; deepctr-torch packs indices into a float
#: tensor, so larger vocabularies would silently alias embedding rows.
MAX_VOCAB = 2**24


@dataclass(frozen=True)
class SparseFeature:
    """A single categorical value per event, looked up in an embedding table."""

    name: str
    vocab_size: int
    source: Source
    embedding_name: str | None = None  # share another feature's table (default: own table)

    def __post_init__(self) -> None:
        _check_common(self.name, self.vocab_size, self.source)

    @property
    def table(self) -> str:
        return self.embedding_name or self.name

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length list of categorical values (0-padded to ``maxlen``), pooled by ``combiner``."""

    name: str
    vocab_size: int
    maxlen: int
    source: Source
    embedding_name: str | None = None
    combiner: Literal["mean", "sum", "max"] = "mean"
    length_name: str | None = None  # name of an extra column holding the true length (DIN needs it)

    def __post_init__(self) -> None:
        _check_common(self.name, self.vocab_size, self.source)
        if self.maxlen < 1:
            raise ValueError(f"sequence feature {self.name!r}: maxlen must be >= 1, got {self.maxlen}")
        if self.combiner not in ("mean", "sum", "max"):
            raise ValueError(
                f"sequence feature {self.name!r}: combiner must be 'mean', 'sum' or 'max', got {self.combiner!r}"
            )

    @property
    def table(self) -> str:
        return self.embedding_name or self.name

    @property
    def width(self) -> int:
        return self.maxlen


@dataclass(frozen=True)
class DenseFeature:
    """A real-valued feature (``dim`` floats per event)."""

    name: str
    source: Source
    dim: int = 1

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"feature {self.name!r}: source must be one of {_SOURCES}, got {self.source!r}")
        if self.dim < 1:
            raise ValueError(f"dense feature {self.name!r}: dim must be >= 1, got {self.dim}")

    @property
    def width(self) -> int:
        return self.dim


Feature = SparseFeature | SequenceFeature | DenseFeature


def _check_common(name: str, vocab_size: int, source: str) -> None:
    if source not in _SOURCES:
        raise ValueError(f"feature {name!r}: source must be one of {_SOURCES}, got {source!r}")
    if not 1 <= vocab_size <= MAX_VOCAB:
        raise ValueError(
            f"feature {name!r}: vocab_size must be in [1, {MAX_VOCAB}] (float32-exact indices), got {vocab_size}"
        )


@dataclass(frozen=True)
class Schema:
    """Ordered model inputs. ``columns`` gives each feature's column range in the input matrix."""

    features: tuple[Feature, ...]
    columns: dict[str, tuple[int, int]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema: duplicate feature names {dupes}")
        cols: dict[str, tuple[int, int]] = {}
        start = 0
        for f in self.features:
            cols[f.name] = (start, start + f.width)
            start += f.width
            if isinstance(f, SequenceFeature) and f.length_name:
                cols[f.length_name] = (start, start + 1)
                start += 1
        object.__setattr__(self, "columns", cols)
        tables: dict[str, int] = {}
        for f in self.features:
            if isinstance(f, DenseFeature):
                continue
            if f.table in tables and tables[f.table] != f.vocab_size:
                raise ValueError(
                    f"schema: features sharing table {f.table!r} disagree on vocab_size "
                    f"({tables[f.table]} vs {f.vocab_size})"
                )
            tables[f.table] = f.vocab_size
        for f in self.sequences:
            if f.source != "history":
                continue
            target = f.name.removeprefix("hist_")
            if not f.name.startswith("hist_") or target not in names:
                raise ValueError(
                    f"schema: history feature {f.name!r} must be named 'hist_<item feature>' "
                    f"after an item feature of this schema (DIN's convention)"
                )
            item_feat = self.feature(target)
            if not isinstance(item_feat, SparseFeature) or item_feat.source != "item" or f.table != item_feat.table:
                raise ValueError(
                    f"schema: history feature {f.name!r} must share the embedding table of the sparse item "
                    f"feature {target!r} (set embedding_name={item_feat.name!r})"
                )

    @property
    def n_columns(self) -> int:
        return max((end for _, end in self.columns.values()), default=0)

    @property
    def sparse(self) -> list[SparseFeature]:
        return [f for f in self.features if isinstance(f, SparseFeature)]

    @property
    def sequences(self) -> list[SequenceFeature]:
        return [f for f in self.features if isinstance(f, SequenceFeature)]

    @property
    def histories(self) -> list[SequenceFeature]:
        return [f for f in self.sequences if f.source == "history"]

    @property
    def dense(self) -> list[DenseFeature]:
        return [f for f in self.features if isinstance(f, DenseFeature)]

    def tables(self) -> dict[str, int]:
        """Embedding table name -> vocabulary size."""
        out: dict[str, int] = {}
        for f in self.features:
            if not isinstance(f, DenseFeature):
                out[f.table] = f.vocab_size
        return out

    def table_columns(self) -> dict[str, list[tuple[int, int]]]:
        """Embedding table name -> the input-column ranges that index it."""
        out: dict[str, list[tuple[int, int]]] = {}
        for f in self.features:
            if not isinstance(f, DenseFeature):
                out.setdefault(f.table, []).append(self.columns[f.name])
        return out

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"schema has no feature {name!r}; it has {[f.name for f in self.features]}")
