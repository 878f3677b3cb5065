"""Checking and building typed records from decoded wire maps: one precompiled decoder per class.

Split out of :mod:`common.messages` (one concept per file) and shared with :mod:`common.join`:
both describe their messages as frozen dataclasses with a ``TYPE``, and both reject a malformed
message at the edge (as a :class:`RemoteProtocolError`) instead of failing deep inside a handler.

Each field's type hint is compiled once, at import, into a predicate (or ``None`` for ``Any``,
which accepts everything). The rules: ``int`` rejects ``bool``; ``float`` accepts ``int`` but
not ``bool``; ``list[X]`` and ``dict[K, V]`` check every element; ``X | None`` accepts ``None``;
any other class is an ``isinstance`` check.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar, Union

from common.errors import RemoteProtocolError


class WireRecord(Protocol):
    """A dataclass with a wire ``TYPE``: a control or join message."""

    TYPE: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


R = TypeVar("R", bound=WireRecord)

Check = Callable[[object], bool]
_MISSING: Final = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_none(value: object) -> bool:
    return value is None


def compile_check(hint: Any) -> Check | None:
    """The predicate a value of type ``hint`` must pass; ``None`` if anything goes (``Any``)."""
    if hint is Any:
        return None
    if hint is type(None):
        return _is_none
    if hint is int:
        return _is_int
    if hint is float:
        return _is_float
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        alternatives = [compile_check(arg) for arg in args]
        if any(alt is None for alt in alternatives):
            return None  # X | Any is Any
        checks = [alt for alt in alternatives if alt is not None]
        if len(checks) == 2 and type(None) in args:  # Optional[X]: the common case, made cheap
            (other,) = [compile_check(arg) for arg in args if arg is not type(None)]
            assert other is not None

            def optional(value: object) -> bool:
                return value is None or other(value)

            return optional

        def union(value: object) -> bool:
            return any(check(value) for check in checks)

        return union
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        item = compile_check(item_hint)
        if item is None:
            return _instance_of(list)
        if item_hint is str:  # list[str]: the hot case (a step report's output lines)

            def list_of_str(value: object) -> bool:
                return isinstance(value, list) and all(isinstance(v, str) for v in value)

            return list_of_str

        def list_of(value: object) -> bool:
            return isinstance(value, list) and all(item(v) for v in value)

        return list_of
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        key = compile_check(key_hint)
        val = compile_check(value_hint)
        if key is None and val is None:
            return _instance_of(dict)
        if val is None:
            assert key is not None
            if key_hint is str:

                def dict_str_any(value: object) -> bool:
                    return isinstance(value, dict) and all(isinstance(k, str) for k in value)

                return dict_str_any

            def dict_keys(value: object) -> bool:
                return isinstance(value, dict) and all(key(k) for k in value)

            return dict_keys

        def dict_of(value: object) -> bool:
            return isinstance(value, dict) and all(
                (key is None or key(k)) and val(v) for k, v in value.items()
            )

        return dict_of
    if isinstance(hint, type):
        return _instance_of(hint)
    raise TypeError(f"no validator for the type hint {hint!r}")


def _instance_of(cls: type) -> Check:
    def check(value: object) -> bool:
        return isinstance(value, cls)

    return check


class Decoder(Generic[R]):
    """Builds one record class from a wire map, checking every field it carries.

    Compiled once from the dataclass's fields. The instance is made without calling the frozen
    dataclass's ``__init__`` (one ``object.__setattr__`` per field) but to the same result: every
    field set, a missing one from its default or a fresh ``default_factory()``.
    """

    __slots__ = ("cls", "fields", "kind")

    def __init__(self, cls: type[R]) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.kind = cls.TYPE
        # (name, check or None, default or _MISSING, default_factory or None)
        self.fields: tuple[tuple[str, Check | None, object, Callable[[], Any] | None], ...] = tuple(
            (
                f.name,
                compile_check(hints[f.name]),
                f.default if f.default is not MISSING else _MISSING,
                f.default_factory if f.default_factory is not MISSING else None,
            )
            for f in fields(cls)
        )

    def decode(self, obj: dict[Any, Any]) -> R:
        values: dict[str, Any] = {}
        complete = True
        for name, check, default, factory in self.fields:
            value = obj.get(name, _MISSING)
            if value is _MISSING:
                if factory is not None:
                    value = factory()
                elif default is _MISSING:
                    complete = False  # reported after every present field was checked
                else:
                    value = default
            elif check is not None and not check(value):
                raise RemoteProtocolError(
                    f"{self.kind} message: field {name!r} has the wrong type "
                    f"({type(value).__name__})"
                )
            values[name] = value
        if not complete:
            missing = [f[0] for f in self.fields if f[0] not in obj]
            raise RemoteProtocolError(f"{self.kind} message is missing fields {missing}")
        msg = self.cls.__new__(self.cls)
        msg.__dict__.update(values)
        return msg
