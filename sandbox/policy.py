"""Compile-time policy: turns untrusted handler source into a code object, or its violations.

Touches untrusted input (the source). Built on RestrictedPython's RestrictingNodeTransformer,
which denies every AST node it has no visitor for; this subclass adds the import allow-list,
the timer/thread family with its hint, structured violations, the attribute fast path, the
checks on names read from imported modules, the rules for `super().__init__`, dunder method
definitions (an allow-list, `def` in a class body only), `match` statements (class patterns
read attributes without the guard, so their names are checked here), and class annotations
kept as text for dataclasses. The name rules themselves live in names.py.

Compiling runs in the host, so its cost is bounded: MAX_SOURCE_BYTES of source, MAX_NODES
syntax nodes visited, the first MAX_VIOLATIONS violations (then it stops), and no garbage
collector passes over the tree (a flood of 250 KiB of one-line violations compiles to a
CompileError in about 0.2 s on a busy 2-core machine; it took 6-8 s per MiB before).
"""

from __future__ import annotations

import ast
import gc
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from handlerbox.sandbox.errors import CompileError, Violation
from handlerbox.sandbox.modules import ALLOWED_MODULES, FORBIDDEN_MODULE_ATTRS
from handlerbox.sandbox.names import (
    ALLOWED_DUNDERS,
    FORMATTER_METHODS,
    INTROSPECTION,
    RUNTIME_GUARDED_ATTRS,
    dunder_hint,
    is_dunder,
    is_forbidden_attribute,
    is_sunder,
)

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

__all__ = ["FORMATTER_METHODS", "RUNTIME_GUARDED_ATTRS", "CompiledHandler", "compile_handler",
           "is_forbidden_attribute"]  # the name rules live in names.py; re-exported here

ALLOWED_HINT = "Allowed modules: " + ", ".join(sorted(ALLOWED_MODULES))
ALLOWED_HINT_AGAIN = "Allowed modules: see the list above"
"""A module full of bad imports lists the allowed modules once, at the first of them."""


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
            return _in_order(policy.violations), None
        return [], compile(tree, filename, "exec", dont_inherit=True)
    except _TooManyNodes:
        return [Violation(filename, 1, 0, f"source has more than {MAX_NODES} syntax nodes",
                          "Make the module smaller: move data into iparams")], None
    except _TooManyViolations:
        stopped = Violation(filename, policy.violations[-1].line, 0,
                            f"more violations follow; compiling stopped after the first "
                            f"{MAX_VIOLATIONS}", "Fix these and compile again")
        return [*_in_order(policy.violations), stopped], None
    except SyntaxError as exc:  # found by the compiler, not the parser: `case [*a, *b]:`
        return policy.violations or [Violation(
            filename, exc.lineno or 1, max((exc.offset or 1) - 1, 0),
            f"syntax error: {exc.msg}", "Fix the syntax")], None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        return policy.violations or [_too_complex(filename, exc)], None


def _in_order(violations: list[Violation]) -> list[Violation]:
    """Sorted by position; the list of allowed modules only in the first violation that
    gives it (a module of twenty bad imports would repeat it twenty times)."""
    ordered = sorted(violations, key=lambda v: (v.line, v.col))
    first = next((v for v in ordered if v.hint == ALLOWED_HINT), None)
    return [replace(v, hint=ALLOWED_HINT_AGAIN) if v.hint == ALLOWED_HINT and v is not first
            else v for v in ordered]


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
        self._future_annotations = False  # `from __future__ import annotations` seen

    def visit(self, node: ast.AST) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooManyNodes
        return super().visit(node)

    # -- reporting --------------------------------------------------------------------------

    def error(self, node: ast.AST, info: str) -> None:
        """Record a violation; the base class calls this for each of its own findings too."""
        name = info.split('"')[1] if info.startswith('"') and info.count('"') >= 2 else ""
        hint = _dunder_name_hint(name, info) if is_dunder(name) else _hint_for(info)
        self.report(node, info.rstrip("."), hint)

    def report(self, node: ast.AST, message: str, hint: str = "") -> None:
        if len(self.violations) >= MAX_VIOLATIONS:
            raise _TooManyViolations
        line = getattr(node, "lineno", 1) or 1
        col = getattr(node, "col_offset", 0) or 0
        self.violations.append(Violation(self.filename, line, col, message, hint))

    # -- scopes and bindings ----------------------------------------------------------------

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        """The base class checks every name here; bindings are also counted, so a module name
        that is rebound anywhere is not treated as the module (see report_module_reads).

        Two names starting with `_` pass: reading `__name__` (the module's name, a plain str
        in every scope: `logging.getLogger(__name__)`), and a `def` of a dunder method, which
        visit_FunctionDef checks against the allow-list and the place it is defined."""
        is_load = isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        if name is not None and not isinstance(node, (ast.Import, ast.ImportFrom)) \
                and not is_load:
            self._bindings[name] += 1
        if name == "__name__" and is_load:
            return
        if allow_magic_methods and isinstance(node, ast.FunctionDef) and name is not None:
            if is_dunder(name):
                return
            if is_sunder(name):
                self.report(node, f'"{name}" cannot be defined in handlers',
                            "Library hooks named _like_this_ (enum's _missing_, "
                            "_generate_next_value_) are not available; use methods with "
                            "plain names, and auto() or explicit values for members")
                return
        super().check_name(node, name, allow_magic_methods)

    def _scoped(self, node: Any, visit: Any) -> Any:
        self._scopes.append(node)
        try:
            return visit(node)
        finally:
            self._scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        """The base class rebuilds the statement with `metaclass=__metaclass__` and drops
        other class keywords silently: they are reported instead (`class E(Enum,
        boundary=...)` would otherwise mean something else than it says)."""
        for keyword in node.keywords:
            if keyword.arg != "metaclass":
                self.report(node, f"class keyword {keyword.arg or '**'} is not supported in "
                            "handlers", "Define the class with bases only")
        return self._scoped(node, super().visit_ClassDef)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        if is_dunder(node.name):
            self._check_dunder_method(node)
        return self._scoped(node, super().visit_FunctionDef)

    def _check_dunder_method(self, node: ast.FunctionDef) -> None:
        """A dunder method is allowed from ALLOWED_DUNDERS only, as a plain `def` directly in
        a class body: not decorated (a decorator could put any callable under the name), not
        at module level or in a function (where it would only be a function with an odd
        name, waiting to be attached to a class some other way)."""
        name = node.name
        if name not in ALLOWED_DUNDERS:
            self.report(node, f'"{name}" cannot be defined in handlers', dunder_hint(name))
        elif not (self._scopes and isinstance(self._scopes[-1], ast.ClassDef)):
            self.report(node, f'"{name}" can only be defined directly in a class body',
                        f"Define it as a method: class ...: def {name}(self, ...)")
        elif node.decorator_list:
            self.report(node, f'"{name}" cannot be decorated in handlers',
                        f"Define {name} as a plain method, without decorators")

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
        if module == "__future__" and any(a.name == "annotations" for a in node.names):
            self._future_annotations = True
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
                        ALLOWED_HINT)
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
        """`x: T = v` becomes `x = v`; a bare `x: T` declares nothing at run time. Directly in
        a class body `x: T = v` stays, with T replaced by its source text (as under `from
        __future__ import annotations`): dataclasses find their fields there. Annotations are
        never evaluated, and must be type expressions all the same."""
        if not all(isinstance(part, _TYPE_EXPRESSION_NODES)
                   for part in ast.walk(node.annotation)):
            self.report(node, "annotations must be type expressions",
                        "Use names, dotted names, subscripts, strings or X | Y")
        if (self._scopes and isinstance(self._scopes[-1], ast.ClassDef)
                and isinstance(node.target, ast.Name) and node.simple):
            if not self._future_annotations:  # (under it, the compiler makes the text)
                text = node.annotation.value if isinstance(node.annotation, ast.Constant) \
                    and isinstance(node.annotation.value, str) else ast.unparse(node.annotation)
                node.annotation = ast.copy_location(ast.Constant(text), node.annotation)
            node.target = self.visit(node.target)
            node.value = None if node.value is None else self.visit(node.value)
            return node
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
        if INTROSPECTION.match(node.attr) and node.attr not in INSPECT_ATTRIBUTES:
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

    # -- match statements -------------------------------------------------------------------

    def visit_Match(self, node: ast.Match) -> Any:
        """`match x:` with its cases: the subject, guards and bodies follow the usual rules."""
        return self.node_contents_visit(node)

    def visit_match_case(self, node: ast.match_case) -> Any:
        return self.node_contents_visit(node)

    def visit_MatchValue(self, node: ast.MatchValue) -> Any:
        """`case 1:`, `case Color.RED:`: the value is read with the usual name rules."""
        node.value = self._pattern_value(node.value)
        return node

    def visit_MatchSingleton(self, node: ast.MatchSingleton) -> Any:
        return node

    def visit_MatchSequence(self, node: ast.MatchSequence) -> Any:
        return self.node_contents_visit(node)

    def visit_MatchOr(self, node: ast.MatchOr) -> Any:
        return self.node_contents_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> Any:
        """`case [x, *rest]:` binds `rest`: a name like any other."""
        self.check_name(node, node.name)
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> Any:
        """`case p as name:` and a bare capture `case name:` bind `name`."""
        self.check_name(node, node.name)
        return self.node_contents_visit(node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> Any:
        """`case {"k": p, **rest}:` looks keys up with the mapping's own `get`: no attribute
        is read; the keys are values (literals or dotted names) under the usual rules."""
        node.keys = [self._pattern_value(key) for key in node.keys]
        node.patterns = [self.visit(pattern) for pattern in node.patterns]
        self.check_name(node, node.rest)
        return node

    def visit_MatchClass(self, node: ast.MatchClass) -> Any:
        """`case C(p, name=q):` reads `subject.name` without the run-time guard, so each keyword
        must be a name the policy compiles to a plain load: not `_` names or frame internals
        (`case object(__class__=c)`), and not the names the guard treats per object
        (`case str(format=f)` would hand out the real str.format). Positional patterns read
        the names in `C.__match_args__`: builtin classes match the subject itself, and every
        class a handler holds lists only plain names there (guards.handler_metaclass and
        language.dataclass check it; tests/test_language.py walks the rest)."""
        node.cls = self._pattern_value(node.cls)
        for attr in node.kwd_attrs:
            if is_forbidden_attribute(attr):
                self.report(node, f'"{attr}" cannot be matched in a class pattern: it is not '
                            "accessible in handlers", "Match public attributes only")
            elif attr in RUNTIME_GUARDED_ATTRS:
                self.report(node, f'"{attr}" cannot be matched in a class pattern: a pattern '
                            "reads attributes without the run-time guard",
                            f"Read it in the case body instead: case {_cls_text(node)}() "
                            f"as obj, then obj.{attr}")
        node.patterns = [self.visit(pattern) for pattern in node.patterns]
        node.kwd_patterns = [self.visit(pattern) for pattern in node.kwd_patterns]
        return node

    def _pattern_value(self, expr: ast.expr) -> Any:
        """A value or class in a pattern must stay a literal or a dotted name: names the guard
        handles at run time (`case x.format:`) cannot be compiled into a pattern."""
        new = self.visit(expr)
        if any(isinstance(part, ast.Call) for part in ast.walk(new)):
            self.report(expr, "this name cannot be read in a pattern: it needs the run-time "
                        "guard", "Read the value into a variable before the match statement "
                        "and compare with a guard: case x if x == value")
        return new

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
                        _dunder_name_hint(target.attr, "attribute name")
                        if is_dunder(target.attr) else
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


def _cls_text(node: ast.MatchClass) -> str:
    return ast.unparse(node.cls) if isinstance(node.cls, (ast.Name, ast.Attribute)) else "C"


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
        if isinstance(node, ast.MatchMapping) and node.rest == name:
            return True  # case {**name}
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


def _dunder_name_hint(name: str, info: str) -> str:
    """A dunder name where the base class refuses `_` names: what to write instead (renaming
    `__eq__` would make it a plain method, which is not what its author meant)."""
    if "attribute name" in info:
        return ("Dunder attributes are not accessible in handlers: use the builtin or the "
                "operator (type(x), len(x), str(x), x == y, isinstance(x, C))")
    if name == "__name__":
        return "__name__ can be read, not assigned"
    if name in ALLOWED_DUNDERS:
        return f"Define it as a method: def {name}(self, ...) directly in the class body"
    return dunder_hint(name)


def _hint_for(info: str) -> str:
    return next((hint for needle, hint in _HINTS if needle in info), "")
