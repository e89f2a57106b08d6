"""Run-time guards that restricted code calls; every argument may be hostile.

The policy rewrites `a.format` to `_getattr_(a, 'format')`, `a.b = c` to `_write_(a).b = c`,
`x[i]` to `_getitem_(x, i)`, `for x in y` to `for x in _getiter_(y)`, class statements to
`metaclass=__metaclass__`, `f(*a, **k)` to `_apply_(f, *a, **k)`. The builtins `getattr`,
`hasattr`, `setattr`, `delattr` and `type` are replaced by the guarded versions here.
"""

from __future__ import annotations

import builtins
import operator
import string
import types
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from handlerbox.sandbox.policy import is_forbidden_attribute
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

_real_type = builtins.type

_FORMATTER_METHODS = frozenset({"format", "format_map", "vformat", "get_field", "get_value",
                                "format_field", "convert_field", "parse"})
"""str.format and string.Formatter resolve `{0.attr}` and `{0[key]}` with the real getattr."""

_OWNER_MARK = "_handlerbox_owner"
_OWNER = object()
"""Every handler `class` statement stamps its class with this private token (handlers cannot
name `_` attributes, so they cannot forge it): its instances are the handler's own."""

_WRITABLE_TYPES = frozenset({dict, list, bytearray, deque})


# -- attribute reads -----------------------------------------------------------------------

def guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """`getattr` for handlers: no private, introspection or Formatter names, no modules.

    The name must be an exact str: a str subclass could override startswith() and lie."""
    if _real_type(name) is not str:
        raise TypeError("attribute name must be a string")
    if is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" is not accessible in handlers')
    if isinstance(obj, types.ModuleType):
        raise AttributeError("modules are not accessible in handlers")
    if name in _FORMATTER_METHODS:
        if isinstance(obj, string.Formatter):
            raise AttributeError("string.Formatter is not available in handlers")
        return _safe_formatter(getattr(obj, name, *default))
    return getattr(obj, name, *default)


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
    if name == "format_map":
        return lambda mapping: safe_format_map(template, mapping)
    method: Callable[..., str] = getattr(template, name)  # no other Formatter-like methods
    return method


# -- writes --------------------------------------------------------------------------------

def guarded_write(obj: Any) -> Any:
    """`_write_`: handlers may write into containers and their own class instances only."""
    kind = _real_type(obj)
    if kind in _WRITABLE_TYPES or getattr(kind, _OWNER_MARK, None) is _OWNER:
        return obj
    if isinstance(obj, (dict, list)) and not isinstance(obj, _real_type):
        return obj
    raise TypeError(f"{kind.__name__} objects cannot be modified by handlers")


def guarded_setattr(obj: Any, name: Any, value: Any) -> None:
    if _real_type(name) is not str or is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" cannot be set by handlers')
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: Any) -> None:
    if _real_type(name) is not str or is_forbidden_attribute(name):
        raise AttributeError(f'"{name}" cannot be deleted by handlers')
    delattr(guarded_write(obj), name)


# -- classes and types ---------------------------------------------------------------------

def handler_metaclass(name: str, bases: tuple[Any, ...], namespace: dict[str, Any],
                      **kwargs: Any) -> type:
    """`__metaclass__`: plain classes only; no metaclasses, no class keywords."""
    if kwargs:
        raise TypeError("class keywords are not supported in handlers")
    for base in bases:
        if not isinstance(base, _real_type):
            raise TypeError(f"{name}: base {base!r} is not a class")
        if _real_type(base) is not _real_type or issubclass(base, _real_type):
            raise TypeError(f"{name}: metaclasses are not supported in handlers")
    namespace[_OWNER_MARK] = _OWNER
    return _real_type(name, bases, namespace)


def guarded_type(obj: Any, *rest: Any) -> type:
    """`type(x)` only: the 3-argument form would build classes outside the policy."""
    if rest:
        raise TypeError("type() with 3 arguments is not available in handlers: "
                        "use a class statement")
    kind = _real_type(obj)
    if issubclass(kind, _real_type):
        raise TypeError("type() of a class is not available in handlers")
    return kind


# -- operators and calls -------------------------------------------------------------------

_INPLACE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand,
    "|=": operator.ior, "^=": operator.ixor, "@=": operator.imatmul,
}


def inplace_var(op: str, target: Any, value: Any) -> Any:
    """`_inplacevar_`: RestrictedPython's hook for `n += 1`, by table, never by eval."""
    return _INPLACE_OPS[op](target, value)


def apply_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`_apply_`: a call with `*args`/`**kwargs`; the arguments need no further guard here."""
    return func(*args, **kwargs)


GUARDS: dict[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": operator.getitem,
    "_getiter_": iter,
    "_write_": guarded_write,
    "_inplacevar_": inplace_var,
    "_apply_": apply_call,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "__metaclass__": handler_metaclass,
}
"""The names restricted code expects in its globals (they start with `_`, so handlers can
neither read nor rebind them)."""
