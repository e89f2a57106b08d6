"""The name rules shared by the policy, the guards and the facades; no untrusted input.

Which attribute names handlers may read, which ones keep a run-time guard, and which dunder
methods a handler class may define: one place, so that the compile-time policy, the run-time
guards and the facades that read names without a guard (class patterns in `match`, the
fields dataclasses turns into generated code) apply the same rules.
"""

from __future__ import annotations

import re

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

FORMATTER_METHODS = frozenset({"format", "format_map", "vformat", "get_field", "get_value",
                               "format_field", "convert_field", "parse"})
"""str.format and string.Formatter resolve `{0.attr}` and `{0[key]}` with the real getattr."""

ZONEINFO_CLASS_METHODS = frozenset({"from_file", "no_cache"})
"""ZoneInfo's constructors besides ZoneInfo(key): from_file parses handler-made bytes in C;
no_cache, reached as `super(ZoneInfo, ZoneInfo).no_cache`, is the C one, which would take a
str subclass as the key (see language.ZoneInfo). Handlers use ZoneInfo(key)."""

RUNTIME_GUARDED_ATTRS = FORMATTER_METHODS | ZONEINFO_CLASS_METHODS | {"register", "mro"}
"""Attribute names whose meaning depends on the object, so they still go through the run-time
`_getattr_`: str.format traverses attributes in its fields; an ABC's `register` changes a
process-wide registry; a class's `mro()` hands out internal base classes (enum.Enum, whose
functional API defines arbitrary dunders); ZoneInfo's other constructors (above). Every
other constant name is fully checked at compile time and compiles to a plain attribute load
(the guard's fast path); code that reads names without the guard (class patterns, dataclass
fields) accepts only names outside this set."""

INTROSPECTION = re.compile(r"^(f|tb|co|gi|cr|ag)_")


def is_forbidden_attribute(name: str) -> bool:
    """True for names no handler may read: private, dunder and frame/code/generator internals."""
    return (
        name.startswith("_")
        or name in INSPECT_ATTRIBUTES
        or INTROSPECTION.match(name) is not None
        or name.endswith("__roles__")
    )


def is_plain_attribute(name: object) -> bool:
    """True for a name that code may read without the run-time guard: an exact str the policy
    would compile `x.name` to a plain load for."""
    return (type(name) is str and name.isidentifier() and not is_forbidden_attribute(name)
            and name not in RUNTIME_GUARDED_ATTRS)


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def is_sunder(name: str) -> bool:
    """`_missing_`: the names enum and other libraries reserve for their hooks."""
    return (len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_"
            and name[-2] != "_")


_ARITHMETIC = ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow",
               "lshift", "rshift", "and", "xor", "or")

ALLOWED_DUNDERS = frozenset({
    "__init__", "__post_init__",
    # comparison and hashing
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__",
    # text
    "__repr__", "__str__", "__format__",
    # truth, size, containers and iteration
    "__bool__", "__len__", "__contains__", "__getitem__", "__setitem__", "__delitem__",
    "__missing__", "__iter__", "__next__", "__reversed__",
    # context managers and calls
    "__enter__", "__exit__", "__call__",
    # numbers: plain, reflected and in-place operators, unary operators, conversions
    *(f"__{op}__" for op in _ARITHMETIC),
    *(f"__r{op}__" for op in _ARITHMETIC),
    *(f"__i{op}__" for op in _ARITHMETIC if op != "divmod"),
    "__neg__", "__pos__", "__abs__", "__invert__",
    "__int__", "__float__", "__complex__", "__round__", "__trunc__", "__floor__", "__ceil__",
})
"""Dunder methods a handler class may define, with `def` directly in its body. Each runs only
when the handler's own code uses the object (an operator, a builtin, a `with` or `for`);
the sandbox's trusted code reads handler objects by exact type and never triggers them."""

_CLASS_HOOKS = ("class customisation hooks are not available in handlers; use a plain class, "
                "a classmethod factory, or a decorator function")

REFUSED_DUNDERS: dict[str, str] = {
    "__getattribute__": "define the attributes you need, or a method such as get(name)",
    "__getattr__": "define the attributes you need, or a method such as get(name) "
                   "(library code asks objects for __deepcopy__ and the like through it)",
    "__setattr__": "use a method or a property setter to change attributes with checks",
    "__delattr__": "use a method to remove what you need",
    "__new__": "use __init__, or a classmethod that builds the object",
    "__del__": "use a with statement (__enter__ and __exit__) to clean up",
    "__init_subclass__": _CLASS_HOOKS,
    "__set_name__": _CLASS_HOOKS,
    "__class_getitem__": _CLASS_HOOKS,
    "__mro_entries__": _CLASS_HOOKS,
    "__prepare__": _CLASS_HOOKS,
    "__instancecheck__": "use isinstance() on your own classes",
    "__subclasscheck__": "use issubclass() on your own classes",
    "__get__": "use property, staticmethod or classmethod",
    "__set__": "use property with a setter",
    "__delete__": "use property with a deleter",
    "__index__": "define __int__ and call int(x) where an integer is needed (__index__ lets "
                 "C code call into the handler while it converts indices)",
    "__reduce__": "return plain data from a method (dataclasses.asdict, or a to_dict method)",
    "__reduce_ex__": "return plain data from a method (dataclasses.asdict, or a to_dict method)",
    "__getstate__": "return plain data from a method (dataclasses.asdict, or a to_dict method)",
    "__setstate__": "build objects from plain data in __init__ or a classmethod",
    "__copy__": "write a copy method, or use dataclasses.replace",
    "__deepcopy__": "write a copy method, or use dataclasses.replace",
}
"""Dunders refused on purpose, each with what to use instead. Every other dunder not in
ALLOWED_DUNDERS is refused with the general list (dunder_hint)."""

_ALLOWED_SUMMARY = ("comparisons (__eq__, __lt__, ...), __hash__, __repr__, __str__, "
                    "__format__, __bool__, __len__, container and iteration methods "
                    "(__getitem__, __contains__, __iter__, __next__, ...), __enter__/__exit__, "
                    "__call__, arithmetic operators (plain, reflected and in-place), "
                    "__int__/__float__, __init__ and __post_init__")


def dunder_hint(name: str) -> str:
    """What a handler class may define instead of the refused dunder `name`."""
    instead = REFUSED_DUNDERS.get(name)
    if instead:
        return f"Instead: {instead}"
    return f"Handler classes may define {_ALLOWED_SUMMARY}"
