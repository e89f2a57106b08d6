"""Handler-facing dataclasses, enum, functools and zoneinfo; every argument may be hostile.

Each name here stands in for the stdlib one where the real one could change or reach what a
handler does not own; the rest are handed out as they are (see ALLOWED_MODULES):

- dataclass / total_ordering / wraps change a class or a function: they accept only the
  handler's own (a real `dataclass(uuid.UUID)` would rewrite a class every invocation shares).
- dataclass: the methods dataclasses generates with exec do plain attribute reads and writes,
  tuple comparisons and hashes on fields whose names pass the name rules (names.py), so that
  a class pattern `case C(x)` reading `__match_args__` without the guard reads plain names.
- asdict / astuple rebuild dataclasses, lists, tuples, dicts and sets, and return every other
  value as it is: no copy.deepcopy, whose reduce protocol reaches far past the handler's data.
- The enum bases are subclasses whose metaclass refuses the functional API
  (`Enum('Name', [('__del__', f)])` defines any dunder, and `type=` mixes in any class).
- ZoneInfo is a subclass that takes its key as an exact str before the stdlib checks it.
"""

from __future__ import annotations

import dataclasses as _dataclasses
import enum as _enum
import functools as _functools
import zoneinfo as _zoneinfo
from collections.abc import Callable
from typing import Any

from handlerbox.sandbox.marks import is_handler_class, is_handler_function
from handlerbox.sandbox.names import is_plain_attribute

# -- dataclasses -----------------------------------------------------------------------------


def _own_class(value: Any, what: str) -> type:
    if not (isinstance(value, type) and is_handler_class(value)):
        raise TypeError(f"{what} takes a class defined in the handler")
    return value


def check_match_args(cls: type) -> None:
    """A class pattern `case C(a, b)` reads the names in `C.__match_args__` without the
    run-time guard: they must be names the policy compiles to plain loads."""
    names = getattr(cls, "__match_args__", ())
    if type(names) is not tuple or not all(is_plain_attribute(n) for n in names):
        raise TypeError(f"{cls.__name__}: __match_args__ may only list plain attribute names")


def dataclass(cls: Any = None, /, *, init: bool = True, repr: bool = True, eq: bool = True,
              order: bool = False, unsafe_hash: bool = False, frozen: bool = False,
              match_args: bool = True, kw_only: bool = False) -> Any:
    """`dataclasses.dataclass` for the handler's own classes (no slots: slots=True makes a
    second class outside the handler metaclass)."""
    options = {"init": init, "repr": repr, "eq": eq, "order": order,
               "unsafe_hash": unsafe_hash, "frozen": frozen, "match_args": match_args,
               "kw_only": kw_only}

    def wrap(cls: Any) -> type:
        return _make_dataclass(_own_class(cls, "dataclass()"), options)

    return wrap if cls is None else wrap(cls)


def _make_dataclass(cls: type, options: dict[str, bool]) -> type:
    if isinstance(cls, _enum.EnumType):
        raise TypeError("dataclass() cannot decorate an Enum")
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (changed in place)
    if type(annotations) is not dict:
        raise TypeError("dataclass(): the class annotations are not a dict")
    for name in annotations:
        if not is_plain_attribute(name):
            raise TypeError(f"dataclass(): field {name!r} cannot be a dataclass field in "
                            "handlers: fields become generated code and match patterns, so "
                            "their names follow the attribute rules (no '_' names, no "
                            "format, format_map, register, mro, from_file)")
    # The policy keeps class annotations as their source text, never evaluated. dataclasses
    # would resolve a string annotation in sys.modules[cls.__module__] (to spot ClassVar):
    # it sees `object` while it works, and Field.type gets the text back afterwards.
    texts = dict(annotations)
    annotations.update(dict.fromkeys(texts, object))
    try:
        _dataclasses.dataclass(cls, **options)
    finally:
        annotations.update(texts)
    for field in _dataclasses.fields(cls):
        if field.name in texts:
            field.type = texts[field.name]
    check_match_args(cls)
    return cls


def _own_dataclass(obj: Any, what: str) -> Any:
    if isinstance(obj, type) or not (is_handler_class(type(obj))
                                     and _dataclasses.is_dataclass(obj)):
        raise TypeError(f"{what} should be called on dataclass instances")
    return obj


def asdict(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass instance as a dict, recursively (see _plain)."""
    result: dict[str, Any] = _plain(_own_dataclass(obj, "asdict()"))
    return result


def astuple(obj: Any) -> tuple[Any, ...]:
    """The fields of a dataclass instance as a tuple, recursively (see _plain)."""
    return tuple(_plain(getattr(obj, f.name))
                 for f in _dataclasses.fields(_own_dataclass(obj, "astuple()")))


def _plain(value: Any) -> Any:
    """Dataclass instances become dicts; exact lists, tuples, dicts, sets and frozensets are
    rebuilt; anything else is returned as it is (not deep-copied)."""
    kind = type(value)
    if is_handler_class(kind) and _dataclasses.is_dataclass(kind):
        return {f.name: _plain(getattr(value, f.name)) for f in _dataclasses.fields(value)}
    if kind is list:
        return [_plain(v) for v in value]
    if kind in (tuple, set, frozenset):
        return kind(_plain(v) for v in value)
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace` on the handler's own dataclass instances."""
    return _dataclasses.replace(_own_dataclass(obj, "replace()"), **changes)


DATACLASSES = {
    "dataclass": dataclass, "field": _dataclasses.field, "fields": _dataclasses.fields,
    "asdict": asdict, "astuple": astuple, "replace": replace,
    "is_dataclass": _dataclasses.is_dataclass,
    "FrozenInstanceError": _dataclasses.FrozenInstanceError,
}

# -- enum ------------------------------------------------------------------------------------


class HandlerEnumType(_enum.EnumType):
    """The metaclass of the enum bases handlers get: value lookup only (`Color(1)`); the
    functional API would build a class outside the handler metaclass. Handlers never hold
    this class (type() of a class is refused) nor the real enum bases (mro() is refused)."""

    def __call__(cls, value: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise TypeError("Enum('Name', ...) (the functional API) is not available in "
                            "handlers: write a class statement")
        return super().__call__(value)


class Enum(_enum.Enum, metaclass=HandlerEnumType):
    pass


class IntEnum(_enum.IntEnum, metaclass=HandlerEnumType):
    pass


class StrEnum(_enum.StrEnum, metaclass=HandlerEnumType):
    pass


class Flag(_enum.Flag, metaclass=HandlerEnumType):
    pass


class IntFlag(_enum.IntFlag, metaclass=HandlerEnumType):
    pass


ENUM = {"Enum": Enum, "IntEnum": IntEnum, "StrEnum": StrEnum, "Flag": Flag,
        "IntFlag": IntFlag, "auto": _enum.auto, "unique": _enum.unique}

# -- functools -------------------------------------------------------------------------------


def total_ordering(cls: Any) -> type:
    """`functools.total_ordering` on the handler's own classes (it sets methods on the class)."""
    result: type = _functools.total_ordering(_own_class(cls, "total_ordering()"))
    return result


def wraps(wrapped: Any) -> Callable[[Any], Any]:
    """`functools.wraps`: the wrapper, a handler function, takes the wrapped one's name and
    docstring (update_wrapper would also write into a shared function's attributes)."""

    def decorate(wrapper: Any) -> Any:
        if not is_handler_function(wrapper):
            raise TypeError("wraps() decorates a function defined in the handler")
        for attr in ("__name__", "__qualname__", "__doc__"):
            value = getattr(wrapped, attr, None)
            if type(value) is str or (attr == "__doc__" and value is None):
                setattr(wrapper, attr, value)
        wrapper.__wrapped__ = wrapped
        return wrapper

    return decorate


# -- zoneinfo --------------------------------------------------------------------------------


def _zone_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a zone key must be a str, not {type(key).__name__}")
    return str.__str__(key)  # an exact copy: no method of a str subclass runs


class ZoneInfo(_zoneinfo.ZoneInfo):
    """`zoneinfo.ZoneInfo` taking keys as exact strs. The stdlib checks a key (no absolute
    path, no "..") and then finds the file to open by calling the key's own methods (split,
    startswith, __len__): a str subclass could answer the check one way and the lookup another,
    and open any file. A subclass of the real class, so isinstance and datetime work as ever;
    it has its own cache, which reset_shared_state empties before every invocation. Its other
    constructors (from_file, no_cache) are refused by the guard."""

    def __new__(cls, key: Any) -> ZoneInfo:
        made: ZoneInfo = super().__new__(cls, _zone_key(key))
        return made


ZONEINFO = {"ZoneInfo": ZoneInfo, "ZoneInfoNotFoundError": _zoneinfo.ZoneInfoNotFoundError,
            "available_timezones": _zoneinfo.available_timezones}

FUNCTOOLS = {
    "partial": _functools.partial, "reduce": _functools.reduce,
    "cmp_to_key": _functools.cmp_to_key, "total_ordering": total_ordering, "wraps": wraps,
    # Each decoration makes a new cache object, in the handler's namespace: it lives as long
    # as the invocation that ran the module (modules run fresh for every invocation).
    "lru_cache": _functools.lru_cache, "cache": _functools.cache,
}
