"""Ownership marks: which classes and functions a handler made; no untrusted input.

Every handler `class` statement stamps its class with a private token, and every invocation's
globals carry one too (handlers cannot name `_` attributes or globals, so they cannot forge
either). Guards and facades use them to act only on what the handler owns: writes, `__init__`
through super(), and the facades that change a class (dataclass, total_ordering) or a
function (wraps).
"""

from __future__ import annotations

import types
from typing import Any

OWNER_MARK = "__handlerbox_owner__"
"""The class attribute (and the globals key) that holds OWNER. A dunder name: an enum body
keeps dunders as plain attributes (any other name would become a member), so the mark is in
place before the members' own `__init__` runs."""

OWNER = object()


def is_handler_class(kind: type) -> bool:
    """True for classes a handler's `class` statement made (and their subclasses)."""
    return getattr(kind, OWNER_MARK, None) is OWNER


def is_handler_function(value: Any) -> bool:
    """True for a function defined by handler code: its globals are an invocation's."""
    return type(value) is types.FunctionType and value.__globals__.get(OWNER_MARK) is OWNER
