"""Rows to dataclasses: each store maps its rows with this one helper, never by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    T = TypeVar("T", bound=DataclassInstance)
else:
    T = TypeVar("T")


class Row(Protocol):
    """A `sqlite3.Row`, or a dict of column values."""

    def __getitem__(self, key: str, /) -> Any: ...


def from_row(cls: type[T], row: Row, **converters: Callable[[Any], Any]) -> T:
    """`cls` with each field taken from the column of the same name, passed through
    `converters[field]` when there is one (e.g. `state=StudioState`)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = row[field.name]
        convert = converters.get(field.name)
        values[field.name] = value if convert is None else convert(value)
    return cls(**values)
