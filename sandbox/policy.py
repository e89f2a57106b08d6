"""Compile-time policy: turns untrusted handler source into a code object, or every violation.

Touches untrusted input (the source). Built on RestrictedPython's RestrictingNodeTransformer,
which denies every AST node it has no visitor for; this subclass adds the import allow-list,
the timer/thread family with its hint, structured violations, and the attribute fast path.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from typing import Any

from handlerbox.sandbox.errors import CompileError, Violation
from handlerbox.sandbox.modules import ALLOWED_MODULES, FORBIDDEN_MODULE_ATTRS
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

MAX_SOURCE_BYTES = 1 << 20
"""Larger sources are refused before parsing: no handler needs more, and the parser's time
and memory grow with the input while compiling may run in the host."""

TIMER_FAMILY = frozenset({
    "threading", "_thread", "asyncio", "sched", "signal", "select", "selectors", "socket",
    "subprocess", "multiprocessing", "concurrent", "queue", "atexit", "weakref",
    "faulthandler",
})
TIMER_MESSAGE = (
    "{name} is not available in handlers: they cannot start threads or timers"
    " (the platform has no setTimeout/setInterval)"
)
TIMER_HINT = "Use a scheduled event to run code later."

RUNTIME_GUARDED_ATTRS = frozenset({"format", "format_map"})
"""Attribute names whose meaning depends on the object (str.format traverses attributes in
its fields), so they still go through the run-time `_getattr_`. Every other constant name is
fully checked here and compiles to a plain attribute load: the guard's fast path."""

_INTROSPECTION = re.compile(r"^(f|tb|co|gi|cr|ag)_")

_ALLOWED_LIST = ", ".join(sorted(ALLOWED_MODULES))


def is_forbidden_attribute(name: str) -> bool:
    """True for names no handler may read: private, dunder and frame/code/generator internals."""
    return (
        name.startswith("_")
        or name in INSPECT_ATTRIBUTES
        or _INTROSPECTION.match(name) is not None
        or name.endswith("__roles__")
    )


@dataclass(frozen=True)
class CompiledHandler:
    """A handler module that passed the policy: its code object, ready to exec per invocation."""

    filename: str
    source: str
    code: Any


def compile_handler(source: str | bytes, filename: str = "server.py") -> CompiledHandler:
    """Compile handler source under the policy, or raise CompileError listing every violation.

    Total: whatever the input (junk bytes, 3,000-deep nesting, megabytes), it returns code or
    raises CompileError; RecursionError and MemoryError in the compiler become violations.
    """
    text, violations = _decode(source, filename)
    if not violations:
        violations, code = _compile_text(text, filename)
        if not violations:
            return CompiledHandler(filename=filename, source=text, code=code)
    raise CompileError(violations)


def _decode(source: str | bytes, filename: str) -> tuple[str, list[Violation]]:
    size = len(source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source)
    if size > MAX_SOURCE_BYTES:
        return "", [Violation(filename, 1, 0, f"source is {size} bytes, over the limit of "
                              f"{MAX_SOURCE_BYTES}", "Split the handler into smaller modules of "
                              "functions and move data into iparams")]
    if isinstance(source, str):
        return source, []
    try:
        return source.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = source[: exc.start].count(b"\n") + 1
        return "", [Violation(filename, line, 0, "source is not valid UTF-8",
                              "Save the file as UTF-8")]


def _compile_text(text: str, filename: str) -> tuple[list[Violation], Any]:
    # SyntaxWarnings about untrusted source must not reach the host's stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parse_and_compile(text, filename)


def _parse_and_compile(text: str, filename: str) -> tuple[list[Violation], Any]:
    try:
        tree = ast.parse(text, filename, "exec")
    except SyntaxError as exc:
        message = f"syntax error: {exc.msg}"
        return [Violation(filename, exc.lineno or 1, max((exc.offset or 1) - 1, 0), message,
                          "Fix the syntax")], None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        return [_too_complex(filename, exc)], None
    policy = HandlerPolicy(filename)
    try:
        tree = policy.visit(tree)
        if policy.violations:
            return sorted(policy.violations, key=lambda v: (v.line, v.col)), None
        return [], compile(tree, filename, "exec", dont_inherit=True)
    except (RecursionError, MemoryError, ValueError, OverflowError, SyntaxError) as exc:
        return policy.violations or [_too_complex(filename, exc)], None


def _too_complex(filename: str, exc: BaseException) -> Violation:
    return Violation(filename, 1, 0, f"source is too complex to compile ({type(exc).__name__})",
                     "Reduce the nesting depth of expressions and blocks")


class HandlerPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer with handlerbox's rules; records structured violations."""

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.filename = filename
        self.violations: list[Violation] = []
        self._time_aliases: set[str] = set()

    # -- reporting --------------------------------------------------------------------------

    def error(self, node: ast.AST, info: str) -> None:
        """Record a violation; the base class calls this for each of its own findings too."""
        self.report(node, info.rstrip("."), _hint_for(info))

    def report(self, node: ast.AST, message: str, hint: str = "") -> None:
        line = getattr(node, "lineno", 1) or 1
        col = getattr(node, "col_offset", 0) or 0
        self.violations.append(Violation(self.filename, line, col, message, hint))
        self.errors.append(f"Line {line}: {message}")

    # -- imports ----------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> Any:
        """`import a.b` is allowed when the full dotted name is on the allow-list."""
        for alias in node.names:
            self._check_module(node, alias.name)
            if alias.name == "time":
                self._time_aliases.add(alias.asname or "time")
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        """`from m import n` needs level 0, an allowed m, and n among m's vetted names."""
        module = node.module or ""
        if node.level:
            self.report(node, "relative imports are not allowed in handlers",
                        "A handler is a single module; import allowed modules by full name")
            return super().visit_ImportFrom(node)
        if module == "builtins":
            self.report(node, "importing from builtins is not allowed in handlers",
                        "Builtins are available without an import")
            return super().visit_ImportFrom(node)
        if self._check_module(node, module):
            for alias in node.names:
                self._check_from_name(node, module, alias.name)
        return super().visit_ImportFrom(node)

    def _check_module(self, node: ast.AST, dotted: str) -> bool:
        top = dotted.split(".")[0]
        if dotted in TIMER_FAMILY or top in TIMER_FAMILY:
            name = dotted if dotted in TIMER_FAMILY else top
            self.report(node, TIMER_MESSAGE.format(name=name), TIMER_HINT)
            return False
        if dotted not in ALLOWED_MODULES:
            self.report(node, f"import of {dotted} is not allowed in handlers",
                        f"Allowed modules: {_ALLOWED_LIST}")
            return False
        return True

    def _check_from_name(self, node: ast.AST, module: str, name: str) -> None:
        if name == "*":
            return  # the base class reports star imports
        if (module, name) in FORBIDDEN_MODULE_ATTRS:
            self.report(node, TIMER_MESSAGE.format(name=f"{module}.{name}"), TIMER_HINT)
        elif name not in ALLOWED_MODULES[module] and f"{module}.{name}" not in ALLOWED_MODULES:
            self.report(node, f"{module}.{name} is not available in handlers",
                        f"{module} offers {', '.join(sorted(ALLOWED_MODULES[module]))}")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        """`x: T = v` becomes `x = v`; a bare `x: T` declares nothing at run time. Annotations
        are never evaluated, and must be type expressions all the same."""
        if not all(isinstance(part, _TYPE_EXPRESSION_NODES)
                   for part in ast.walk(node.annotation)):
            self.report(node, "annotations must be type expressions",
                        "Use names, dotted names, subscripts, strings or X | Y")
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        assign = ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)
        return self.visit(assign)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> Any:
        """`nonlocal n` only rebinds a closure's own variable (RestrictedPython refuses it
        unreviewed); the names are checked like any other."""
        for name in node.names:
            self.check_name(node, name)
        return node

    # -- attributes -------------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        """`a.b` stays a plain load when b is checked here; `a.format` becomes
        `_getattr_(a, 'format')`; `a.b = c` becomes `_write_(a).b = c` (base class).
        `super().__init__` is the one underscore name allowed: zero-argument super() is
        bound to the handler's own instance, so it can only initialise that."""
        if _is_super_init(node):
            node.value = self.visit(node.value)
            return node
        if _INTROSPECTION.match(node.attr) and node.attr not in INSPECT_ATTRIBUTES:
            self.report(node, f'"{node.attr}" is a frame, code or generator internal',
                        "Handlers cannot inspect the interpreter")
        if (isinstance(node.value, ast.Name) and node.value.id in self._time_aliases
                and ("time", node.attr) in FORBIDDEN_MODULE_ATTRS):
            self.report(node, TIMER_MESSAGE.format(name="time." + node.attr), TIMER_HINT)
        new = super().visit_Attribute(node)
        if (isinstance(new, ast.Call) and isinstance(node.ctx, ast.Load)
                and node.attr not in RUNTIME_GUARDED_ATTRS):
            plain = ast.Attribute(value=new.args[0], attr=node.attr, ctx=ast.Load())
            return ast.copy_location(plain, node)
        return new

    # -- in-place operators -----------------------------------------------------------------

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        """`n += 1` stays native; `d[k] += 1` and `o.a += 1` write through `_write_`.

        An in-place operator reaches nothing its plain operator cannot, and the base class
        refuses item and attribute targets, which handlers use constantly (counters)."""
        if isinstance(node.target, ast.Name):
            self.check_name(node.target, node.target.id)
            node.value = self.visit(node.value)
            return node
        if isinstance(node.target, (ast.Subscript, ast.Attribute)):
            if isinstance(node.target, ast.Attribute) and is_forbidden_attribute(
                    node.target.attr):
                self.report(node, f'"{node.target.attr}" is an invalid attribute name',
                            "Names starting with '_' are reserved by the sandbox; rename it")
            target = node.target
            target.value = ast.copy_location(
                ast.Call(func=ast.Name("_write_", ast.Load()),
                         args=[self.visit(target.value)], keywords=[]), target.value)
            if isinstance(target, ast.Subscript):
                target.slice = self.visit(target.slice)
            node.value = self.visit(node.value)
            return ast.fix_missing_locations(node)
        return super().visit_AugAssign(node)


_TYPE_EXPRESSION_NODES = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Tuple,
                          ast.List, ast.BinOp, ast.BitOr, ast.Load)


def _is_super_init(node: ast.Attribute) -> bool:
    call = node.value
    return (node.attr == "__init__" and isinstance(node.ctx, ast.Load)
            and isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "super" and not call.args and not call.keywords)


_HINTS = (
    ('starts with "_"', "Names starting with '_' are reserved by the sandbox; rename it"),
    ("is a reserved name", "Print output is captured as the invocation's logs; pick another name"),
    ("restricted name", "Handlers cannot inspect frames, code or generators"),
    ("imports are not allowed", "Import each name you need explicitly"),
    ("statements are not allowed", "This construct is not supported in handlers"),
    ("metaclass", "Define plain classes; metaclasses are not supported in handlers"),
    ("Exec calls", "Handlers cannot run code from strings"),
    ("Eval calls", "Handlers cannot run code from strings"),
)


def _hint_for(info: str) -> str:
    return next((hint for needle, hint in _HINTS if needle in info), "")
