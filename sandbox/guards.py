"""Run-time guards that restricted code calls; every argument may be hostile.

The policy rewrites `a.format` to `_getattr_(a, 'format')`, `a.b = c` to `_write_(a).b = c`,
`x[i]` to `_getitem_(x, i)`, `for x in y` to `for x in _getiter_(y)`, class statements to
`metaclass=__metaclass__`, `f(*a, **k)` to `_apply_(f, *a, **k)`, `super().__init__` to
`_super_init_(super())`. The builtins `getattr`, `hasattr`, `setattr`, `delattr` and `type` are
replaced by the guarded versions here. `n += 1` needs no guard: the policy keeps in-place
operators native and sends item and attribute targets through `_write_`.

Everything reachable from a facade is shared by every invocation in the process, so these
guards also keep handlers from changing it: no writes to objects a handler does not own, no
`__init__` run on them, no ABC `register`, no `mro()` of a class (it hands out internal bases,
among them the real enum.Enum), and no sandbox-internal class handed out. The one metaclass
admitted is the enum facade's, for enum classes (handler_metaclass).

Messages name the types of handler objects and never format them: `f"{obj}"` here would run
the handler's `__format__` or `__str__` inside a guard.
"""

from __future__ import annotations

import abc
import builtins
import operator
import string
import sys
import types
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from handlerbox.sandbox.language import HandlerEnumType, check_match_args
from handlerbox.sandbox.marks import OWNER, OWNER_MARK, is_handler_class
from handlerbox.sandbox.modules import EXPORTED_CLASSES
from handlerbox.sandbox.names import (
    FORMATTER_METHODS,
    ZONEINFO_CLASS_METHODS,
    is_forbidden_attribute,
)

_real_type = builtins.type

_WRITABLE_TYPES = frozenset({dict, list, bytearray, deque})

_BUILTIN_CLASSES = frozenset(v for v in vars(builtins).values() if isinstance(v, _real_type))
"""Builtin classes keep their state in the instance, so a handler subclass of one only ever
initialises and changes its own objects (`type` itself is refused as a metaclass)."""

_SANDBOX_MODULE_PREFIX = __name__.rsplit(".", 1)[0] + "."

_ABC_REGISTER = abc.ABCMeta.register


# -- attribute reads -----------------------------------------------------------------------

def guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """`getattr` for handlers: no private, introspection or Formatter names, no modules, and
    no ABC `register` (`collections.ChainMap.register`, or `typing.Mapping.register`, which
    forwards to collections.abc): an ABC's registry is process-wide and outlives the call.

    No `mro()` of a class either: it hands out base classes no other way reaches (the real
    enum.Enum, whose functional API defines any dunder, or typing's internals); and no
    ZoneInfo constructor but ZoneInfo(key) (see names.ZONEINFO_CLASS_METHODS).

    The name must be an exact str: a str subclass could override startswith() and lie."""
    if _real_type(name) is not str:
        raise TypeError("attribute name must be a string")
    if is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" is not accessible in handlers')
    if isinstance(obj, types.ModuleType):
        raise AttributeError("modules are not accessible in handlers")
    if name in FORMATTER_METHODS:
        if isinstance(obj, string.Formatter):
            raise AttributeError("string.Formatter is not available in handlers")
        return _safe_formatter(getattr(obj, name, *default))
    if name == "mro" and isinstance(obj, _real_type):
        raise AttributeError("mro() is not available in handlers: use isinstance() and "
                             "issubclass()")
    found = getattr(obj, name, *default)
    if name == "register" and (found is _ABC_REGISTER or (
            _real_type(found) is types.MethodType and found.__func__ is _ABC_REGISTER)):
        raise AttributeError("register is not available in handlers: an ABC's registry is "
                             "shared by every invocation in the process")
    if name in ZONEINFO_CLASS_METHODS and _is_zoneinfo_class(getattr(found, "__self__", None)):
        raise AttributeError(f"ZoneInfo.{name} is not available in handlers: use "
                             "ZoneInfo(key), which reads the tzdata package")
    return found


def _is_zoneinfo_class(value: Any) -> bool:
    zoneinfo = sys.modules.get("zoneinfo")  # not imported: nothing can be a ZoneInfo
    return zoneinfo is not None and isinstance(value, _real_type) and issubclass(
        value, zoneinfo.ZoneInfo)


def _safe_formatter(found: Any) -> Any:
    """Swap the real str.format/format_map for the plain-field versions, however they were
    reached: on a str, on str or a subclass, or through a proxy such as super()."""
    if found is _STR_FORMAT:
        return safe_format
    if found is _STR_FORMAT_MAP:
        return safe_format_map
    template = getattr(found, "__self__", None)
    if (isinstance(template, str) and isinstance(found, types.BuiltinMethodType)
            and found.__name__ in ("format", "format_map")):
        return _bound_format(template, found.__name__)
    return found


_STR_FORMAT = str.format
_STR_FORMAT_MAP = str.format_map


def guarded_hasattr(obj: Any, name: Any) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


# -- formatting ----------------------------------------------------------------------------

def _check_fields(template: str) -> None:
    """Refuse `{0.attr}` and `{0[key]}`: only plain fields, conversions and format specs."""
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if "." in field or "[" in field:
            raise ValueError(f"format field {{{field}}} is not allowed in handlers: only plain "
                             "fields like {}, {0} or {name}")
        if spec:
            _check_fields(spec)


def safe_format(template: str, /, *args: Any, **kwargs: Any) -> str:
    """`str.format` with plain fields only."""
    if not isinstance(template, str):
        raise TypeError("format() needs a str template")
    _check_fields(template)
    return str.format(template, *args, **kwargs)


def safe_format_map(template: str, mapping: Mapping[str, Any], /) -> str:
    """`str.format_map` with plain fields only."""
    if not isinstance(template, str):
        raise TypeError("format_map() needs a str template")
    _check_fields(template)
    return str.format_map(template, mapping)


def _bound_format(template: str, name: str) -> Callable[..., str]:
    if name == "format":
        return lambda *args, **kwargs: safe_format(template, *args, **kwargs)
    return lambda mapping: safe_format_map(template, mapping)  # format_map


# -- writes --------------------------------------------------------------------------------

def guarded_write(obj: Any) -> Any:
    """`_write_`: handlers may write into containers and their own class instances only
    (dict and list subclasses too: Counter, OrderedDict, defaultdict)."""
    kind = _real_type(obj)
    if kind in _WRITABLE_TYPES or is_handler_class(kind) or isinstance(obj, (dict, list)):
        return obj
    if isinstance(obj, _real_type):
        raise TypeError(f"class {obj.__name__} cannot be modified by handlers: set attributes "
                        "on its instances, or use a classmethod that returns a new object")
    raise TypeError(f"{kind.__name__} objects cannot be modified by handlers")


def guarded_setattr(obj: Any, name: Any, value: Any) -> None:
    if _real_type(name) is not str:  # a handler object: name its type, never format it
        raise TypeError(f"attribute name must be a string, not {_real_type(name).__name__}")
    if is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" cannot be set by handlers')
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: Any) -> None:
    if _real_type(name) is not str:
        raise TypeError(f"attribute name must be a string, not {_real_type(name).__name__}")
    if is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" cannot be deleted by handlers')
    delattr(guarded_write(obj), name)


# -- classes and types ---------------------------------------------------------------------

def handler_metaclass(name: str, bases: tuple[Any, ...], namespace: dict[str, Any],
                      **kwargs: Any) -> type:
    """`__metaclass__`: plain classes only; no metaclasses, no class keywords, and only bases
    a handler may extend: its own classes, builtin classes, and classes a facade exports by
    name. A class reached some other way (`type(x)`: typing's alias classes, urllib's result
    mixins) is an internal whose methods may act on objects other than the instance, so
    extending it could reach shared state.

    One metaclass is admitted: the enum facade's HandlerEnumType, for classes on its enum
    bases (see _enum_class). Every class made here lists only plain attribute names in its
    `__match_args__` (class patterns read them without the guard)."""
    if kwargs:
        raise TypeError("class keywords are not supported in handlers")
    is_enum = False
    for base in bases:
        if not isinstance(base, _real_type):
            raise TypeError(f"{name}: a base must be a class, not a "
                            f"{_real_type(base).__name__}")
        if isinstance(base, HandlerEnumType):  # the enum facade's bases, or a handler's enum
            is_enum = True
            continue
        if _real_type(base) is not _real_type or issubclass(base, _real_type):
            raise TypeError(f"{name}: metaclasses are not supported in handlers")
        if not (is_handler_class(base) or base in _BUILTIN_CLASSES or base in EXPORTED_CLASSES):
            raise TypeError(f"{name}: {base.__name__} cannot be subclassed in handlers; "
                            "extend your own classes, builtin classes, or classes a module "
                            "exports by name")
    namespace[OWNER_MARK] = OWNER
    made = _enum_class(name, bases, namespace) if is_enum else _real_type(name, bases, namespace)
    check_match_args(made)
    return made


def _enum_class(name: str, bases: tuple[Any, ...], namespace: dict[str, Any]) -> type:
    """An enum class: the body ran in a plain dict (a function metaclass has no
    `__prepare__`), so its names are replayed, in order, into the enum's own namespace, which
    turns `auto()` into values and sorts members from methods. `_sunder_` hooks
    (`_missing_`, `_generate_next_value_`) cannot be in the body: the policy refuses `_`
    names. The owner mark is a dunder, which the enum namespace keeps as an attribute."""
    members = HandlerEnumType.__prepare__(name, bases)
    for key, value in namespace.items():
        members[key] = value
    made: type = HandlerEnumType(name, bases, members)
    return made


def guarded_type(obj: Any, *rest: Any) -> type:
    """`type(x)` only: the 3-argument form would build classes outside the policy, the class
    of a class is a metaclass, and the sandbox's own classes (module facades) stay hidden
    unless a module exports them by name (services.ServiceError)."""
    if rest:
        raise TypeError("type() with 3 arguments is not available in handlers: "
                        "use a class statement")
    kind = _real_type(obj)
    if issubclass(kind, _real_type):
        raise TypeError("type() of a class is not available in handlers")
    if kind.__module__.startswith(_SANDBOX_MODULE_PREFIX) and kind not in EXPORTED_CLASSES:
        raise TypeError(f"type() of a {kind.__name__} is not available in handlers")
    return kind


def guarded_super_init(proxy: Any) -> Callable[..., None]:
    """`_super_init_`: `super().__init__`, only when super() is bound to an instance of a
    handler class.

    Zero-argument super() binds to whatever the method's first argument holds: in a
    classmethod, or when the method is called on the class (`A.m(A, other)`), it is bound
    to a class and `.__init__` is a base's unbound `__init__`, callable on any shared
    object (a module facade, uuid.NAMESPACE_DNS, a property). On the handler's own instance
    a base's `__init__` can only initialise that instance: the bases a handler class may
    have (see handler_metaclass) keep their state in the instance."""
    kind = _real_type(proxy)
    if kind is not super:
        raise TypeError("super().__init__ needs the builtin super()")
    instance = proxy.__self__
    if instance is None or isinstance(instance, _real_type) or not is_handler_class(
            _real_type(instance)):
        raise TypeError("super().__init__ is only available on an instance of your own "
                        "class, in a method called on that instance")
    init: Callable[..., None] = proxy.__init__
    return init


# -- calls ---------------------------------------------------------------------------------

def apply_call(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`_apply_`: a call with `*args`/`**kwargs`; the arguments need no further guard here.
    `func` is positional-only, so a keyword named func goes through (`f(*a, func=g)`), and no
    keyword name is compared with it (a str subclass key would run its `__eq__` here)."""
    return func(*args, **kwargs)


GUARDS: dict[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": operator.getitem,
    "_getiter_": iter,
    "_write_": guarded_write,
    "_apply_": apply_call,
    "_super_init_": guarded_super_init,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "__metaclass__": handler_metaclass,
}
"""The names restricted code expects in its globals (they start with `_`, so handlers can
neither read nor rebind them)."""
