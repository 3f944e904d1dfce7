"""`cached`: a property computed on first access and stored in the instance's __dict__.

Like `functools.cached_property` without its lock (Python 3.11 takes one on every first
access, a measurable share of dispatching an event): an event is handled by one task at a time,
and computing a value twice by accident would only cost time, never correctness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached(Generic[T]):  # noqa: N801 (used like the decorator it replaces)
    __slots__ = ("function", "name")

    def __init__(self, function: Callable[[Any], T]) -> None:
        self.function = function
        self.name = function.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> cached[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> T | cached[T]:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value
        return value
