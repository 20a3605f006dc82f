"""Rows to dataclasses: stores return typed values, never raw rows."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bot.storage.db import Row

T = TypeVar("T")


def from_row(cls: type[T], row: Row | Mapping[str, Any], **converters: Callable[[Any], Any]) -> T:
    """`cls` built from the row's columns of the same names as its fields; a converter named
    for a field turns its column's value (unless NULL) into the field's type, e.g.
    `from_row(Override, row, scope=Scope)`. Columns without a field are ignored. `row` may be
    a dict, for a row whose fields are partly kept as JSON in a column."""
    values = {}
    for name in _field_names(cls):  # type: ignore[arg-type]
        value = row[name]
        convert = converters.get(name)
        values[name] = value if convert is None or value is None else convert(value)
    return cls(**values)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    # Every job read and poll maps a row: look the fields up once per class.
    return tuple(field.name for field in dataclasses.fields(cls))


def marks(values: Sized) -> str:
    """One `?` per value, for `IN (...)` (both engines take `?`: bot/storage)."""
    return ",".join("?" * len(values))
