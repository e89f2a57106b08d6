"""Compile-time policy: turns untrusted handler source into a code object, or its violations.

Touches untrusted input (the source). Built on RestrictedPython's RestrictingNodeTransformer,
which denies every AST node it has no visitor for; this subclass adds the import allow-list,
the timer/thread family with its hint, structured violations, the attribute fast path, the
checks on names read from imported modules, and the rules for `super().__init__`.

Compiling runs in the host, so its cost is bounded: MAX_SOURCE_BYTES of source, MAX_NODES
syntax nodes visited, the first MAX_VIOLATIONS violations (then it stops), and no garbage
collector passes over the tree (a flood of 250 KiB of one-line violations compiles to a
CompileError in about 0.2 s on a busy 2-core machine; it took 6-8 s per MiB before).
"""

from __future__ import annotations

import ast
import gc
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from handlerbox.sandbox.errors import CompileError, Violation
from handlerbox.sandbox.modules import ALLOWED_MODULES, FORBIDDEN_MODULE_ATTRS

MAX_SOURCE_BYTES = 256 * 1024
"""Larger sources are refused before parsing: no handler needs more (the examples are 7 KiB),
and the parser's time and memory grow with the input while compiling runs in the host: a
MiB of one-line statements took 1-2 s to parse alone."""

MAX_NODES = 100_000
"""Syntax nodes visited at most: ordinary code has about one per 6 bytes (40,000 in the
largest allowed source), dense floods (`f(x.y)` lines) five times that, which the visitor
would take seconds over."""

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

MAX_VIOLATIONS = 100
"""Violations reported at most; the policy stops visiting at the next one. A hostile module
of 200,000 one-line violations would otherwise cost seconds of host CPU and a 30 MB message."""

FORMATTER_METHODS = frozenset({"format", "format_map", "vformat", "get_field", "get_value",
                               "format_field", "convert_field", "parse"})
"""str.format and string.Formatter resolve `{0.attr}` and `{0[key]}` with the real getattr."""

RUNTIME_GUARDED_ATTRS = FORMATTER_METHODS | {"register"}
"""Attribute names whose meaning depends on the object (str.format traverses attributes in
its fields; an ABC's `register` changes a process-wide registry), so they still go through
the run-time `_getattr_`. Every other constant name is fully checked here and compiles to a
plain attribute load: the guard's fast path."""

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


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage-collector passes while a syntax tree is built and visited: a megabyte of
    source made a million nodes, and the collections they triggered took most of the time
    (a syntax tree holds no cycles: refcounting frees it)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _compile_text(text: str, filename: str) -> tuple[list[Violation], Any]:
    # SyntaxWarnings about untrusted source must not reach the host's stderr.
    with collector_paused(), warnings.catch_warnings():
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
        policy.report_module_reads()
        if policy.violations:
            return sorted(policy.violations, key=lambda v: (v.line, v.col)), None
        return [], compile(tree, filename, "exec", dont_inherit=True)
    except _TooManyNodes:
        return [Violation(filename, 1, 0, f"source has more than {MAX_NODES} syntax nodes",
                          "Make the module smaller: move data into iparams")], None
    except _TooManyViolations:
        stopped = Violation(filename, policy.violations[-1].line, 0,
                            f"more violations follow; compiling stopped after the first "
                            f"{MAX_VIOLATIONS}", "Fix these and compile again")
        return [*sorted(policy.violations, key=lambda v: (v.line, v.col)), stopped], None
    except (RecursionError, MemoryError, ValueError, OverflowError, SyntaxError) as exc:
        return policy.violations or [_too_complex(filename, exc)], None


class _TooManyViolations(Exception):
    """Raised by the policy at violation MAX_VIOLATIONS + 1 to stop visiting."""


class _TooManyNodes(Exception):
    """Raised by the policy at node MAX_NODES + 1 to stop visiting."""


def _too_complex(filename: str, exc: BaseException) -> Violation:
    return Violation(filename, 1, 0, f"source is too complex to compile ({type(exc).__name__})",
                     "Reduce the nesting depth of expressions and blocks")


class HandlerPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer with handlerbox's rules; records structured violations."""

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.filename = filename
        self.violations: list[Violation] = []
        self._scopes: list[ast.AST] = []  # enclosing classes, functions and comprehensions
        self._modules: dict[str, str] = {}  # names bound by module-level `import m` -> m
        self._bindings: Counter[str] = Counter()  # how often each name is bound, anywhere
        self._module_reads: list[tuple[str, ast.Attribute, str]] = []
        self._nodes = 0

    def visit(self, node: ast.AST) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooManyNodes
        return super().visit(node)

    # -- reporting --------------------------------------------------------------------------

    def error(self, node: ast.AST, info: str) -> None:
        """Record a violation; the base class calls this for each of its own findings too."""
        self.report(node, info.rstrip("."), _hint_for(info))

    def report(self, node: ast.AST, message: str, hint: str = "") -> None:
        if len(self.violations) >= MAX_VIOLATIONS:
            raise _TooManyViolations
        line = getattr(node, "lineno", 1) or 1
        col = getattr(node, "col_offset", 0) or 0
        self.violations.append(Violation(self.filename, line, col, message, hint))

    # -- scopes and bindings ----------------------------------------------------------------

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        """The base class checks every name here; bindings are also counted, so a module name
        that is rebound anywhere is not treated as the module (see report_module_reads)."""
        if name is not None and not isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
            self._bindings[name] += 1
        super().check_name(node, name, allow_magic_methods)

    def _scoped(self, node: Any, visit: Any) -> Any:
        self._scopes.append(node)
        try:
            return visit(node)
        finally:
            self._scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        return self._scoped(node, super().visit_ClassDef)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        return self._scoped(node, super().visit_FunctionDef)

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        return self._scoped(node, super().visit_Lambda)

    def visit_ListComp(self, node: ast.ListComp) -> Any:
        return self._scoped(node, super().visit_ListComp)

    def visit_SetComp(self, node: ast.SetComp) -> Any:
        return self._scoped(node, super().visit_SetComp)

    def visit_DictComp(self, node: ast.DictComp) -> Any:
        return self._scoped(node, super().visit_DictComp)

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> Any:
        return self._scoped(node, super().visit_GeneratorExp)

    # -- imports ----------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> Any:
        """`import a.b` is allowed when the full dotted name is on the allow-list."""
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            module = alias.name if alias.asname else bound
            tracked = self._check_module(node, alias.name) and not self._scopes
            if not (tracked and self._modules.get(bound) == module):
                self._bindings[bound] += 1  # importing the same module again binds nothing new
            if tracked:
                self._modules[bound] = module
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        """`from m import n` needs level 0, an allowed m, and n among m's vetted names."""
        module = node.module or ""
        for alias in node.names:
            self._bindings[alias.asname or alias.name] += 1
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
                if f"{module}.{alias.name}" in ALLOWED_MODULES and not self._scopes:
                    self._modules[alias.asname or alias.name] = f"{module}.{alias.name}"
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
        self._check_module_attr(node, module, name)

    def _check_module_attr(self, node: ast.AST, module: str, name: str) -> None:
        if (module, name) in FORBIDDEN_MODULE_ATTRS:
            self.report(node, TIMER_MESSAGE.format(name=f"{module}.{name}"), TIMER_HINT)
        elif name not in ALLOWED_MODULES[module] and f"{module}.{name}" not in ALLOWED_MODULES:
            self.report(node, f"{module}.{name} is not available in handlers",
                        f"{module} offers {', '.join(sorted(ALLOWED_MODULES[module]))}")

    def report_module_reads(self) -> None:
        """After the visit: `m.name` where m was bound once, by a module-level import, and the
        module offers no such name (`urllib.request` after `import urllib`) fails at run time
        for sure, so it is reported now. A name bound again anywhere (a parameter, a local
        variable) may hold something else, so reads through it are left to run time."""
        for name, node, module in self._module_reads:
            if self._bindings[name] == 1:
                self._check_module_attr(node, module, node.attr)

    def _module_read(self, node: ast.Attribute) -> None:
        """Note `m.x` and `m.sub.x` read from a module bound by a module-level import."""
        value: ast.expr = node.value
        path: list[str] = []
        if isinstance(value, ast.Attribute):  # facades nest one level at most: urllib.parse
            path = [value.attr]
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in self._modules:
            return
        module = self._modules[value.id]
        for part in path:
            module = f"{module}.{part}"
            if module not in ALLOWED_MODULES:
                return  # reported where `m.part` itself is read
        if not is_forbidden_attribute(node.attr):  # the base class reports those
            self._module_reads.append((value.id, node, module))

    # -- annotations and names --------------------------------------------------------------

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
        `_getattr_(a, 'format')`; `a.b = c` becomes `_write_(a).b = c` (base class);
        `super().__init__` becomes `_super_init_(super())` (see _check_super_init)."""
        if _is_super_init(node):
            self._check_super_init(node)
            call = ast.Call(func=ast.Name("_super_init_", ast.Load()),
                            args=[self.visit(node.value)], keywords=[])
            return ast.fix_missing_locations(ast.copy_location(call, node))
        if _INTROSPECTION.match(node.attr) and node.attr not in INSPECT_ATTRIBUTES:
            self.report(node, f'"{node.attr}" is a frame, code or generator internal',
                        "Handlers cannot inspect the interpreter")
        self._module_read(node)
        new = super().visit_Attribute(node)
        if (isinstance(new, ast.Call) and isinstance(node.ctx, ast.Load)
                and node.attr not in RUNTIME_GUARDED_ATTRS):
            plain = ast.Attribute(value=new.args[0], attr=node.attr, ctx=ast.Load())
            return ast.copy_location(plain, node)
        return new

    def _check_super_init(self, node: ast.Attribute) -> None:
        """`super().__init__` is the one `_` name handlers may read, in the one place it is
        bound to the handler's own new instance: directly in a method (not a classmethod,
        staticmethod or nested function) whose first parameter is never rebound. The guard
        checks the instance again at run time (a method can be called as `A.m(A)`)."""
        scopes = self._scopes
        method = scopes[-1] if scopes else None
        if not (isinstance(method, ast.FunctionDef) and len(scopes) > 1
                and isinstance(scopes[-2], ast.ClassDef)):
            problem = "outside a method (directly in a method's body only)"
        elif any(isinstance(d, ast.Name) and d.id in ("classmethod", "staticmethod")
                 for d in method.decorator_list):
            problem = "in a classmethod or staticmethod"
        elif not (method.args.posonlyargs or method.args.args):
            problem = "in a method without a self parameter"
        elif _rebinds(method, (method.args.posonlyargs or method.args.args)[0].arg):
            problem = "in a method that assigns to its first parameter"
        else:
            return
        self.report(node, f"super().__init__ is not allowed {problem}",
                    "Call super().__init__(...) in a method of your class, on self")

    # -- in-place operators -----------------------------------------------------------------

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        """`n += 1` stays native; `d[k] += 1` and `o.a += 1` write through `_write_`.

        An in-place operator reaches nothing its plain operator cannot, and the base class
        refuses item and attribute targets, which handlers use constantly (counters). Those
        three are the only targets Python's grammar allows."""
        if isinstance(node.target, ast.Name):
            self.check_name(node.target, node.target.id)
            node.value = self.visit(node.value)
            return node
        target = node.target
        assert isinstance(target, (ast.Subscript, ast.Attribute))
        if isinstance(target, ast.Attribute) and is_forbidden_attribute(target.attr):
            self.report(node, f'"{target.attr}" is an invalid attribute name',
                        "Names starting with '_' are reserved by the sandbox; rename it")
        target.value = ast.copy_location(
            ast.Call(func=ast.Name("_write_", ast.Load()),
                     args=[self.visit(target.value)], keywords=[]), target.value)
        if isinstance(target, ast.Subscript):
            target.slice = self.visit(target.slice)
        node.value = self.visit(node.value)
        return ast.fix_missing_locations(node)


_TYPE_EXPRESSION_NODES = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Tuple,
                          ast.List, ast.BinOp, ast.BitOr, ast.Load)


def _is_super_init(node: ast.Attribute) -> bool:
    call = node.value
    return (node.attr == "__init__" and isinstance(node.ctx, ast.Load)
            and isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "super" and not call.args and not call.keywords)


def _rebinds(function: ast.FunctionDef, name: str) -> bool:
    """True when anything in `function`'s body may bind `name` again."""
    for node in ast.walk(function):
        if node is function:
            continue
        if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            return True
        if isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names:
            return True
        if isinstance(node, ast.alias) and name in (node.asname, node.name):
            return True
        if getattr(node, "name", None) == name and not isinstance(node, ast.alias):
            return True  # def/class name, `except E as name`, match captures
    return False


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
