"""Loads an app directory: manifest.json, server/server.py, and the handlers it names.

Reads untrusted files (the manifest and the handler module). Loading compiles the module once
under the policy and resolves every handler the manifest names from the module's syntax,
without running it: the host never runs handler code.

    my_app/
      manifest.json                   {"events": {"onCallCreate": {"handler": "onCallCreate"}}}
      server/server.py                the handler module
      server/test_data/<event>.json   sample payloads for local runs
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import marshal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handlerbox.runtime import protocol
from handlerbox.runtime.deadline import execution_timeout
from handlerbox.runtime.errors import AppLoadError, ManifestError
from handlerbox.runtime.iparams import IparamsSpec, load_iparams_spec
from handlerbox.runtime.manifest import Manifest
from handlerbox.runtime.services.templates import Template, TemplatePolicy, load_templates
from handlerbox.sandbox import CompiledHandler, CompileError, compile_handler
from handlerbox.sandbox.runner import declared_handlers

MANIFEST = "manifest.json"
SERVER = Path("server") / "server.py"
MAX_MANIFEST_BYTES = 256 * 1024

_keys = itertools.count(1)


@dataclass(frozen=True, eq=False)
class App:
    """A loaded app: its manifest, compiled module, and the limit its invocations run under."""

    name: str
    path: Path
    manifest: Manifest
    compiled: CompiledHandler
    execution_timeout: float
    request_timeout: int | None
    iparams: IparamsSpec = field(default_factory=lambda: IparamsSpec.parse({}))
    templates: dict[str, Template] = field(default_factory=dict)
    version: str = ""
    key: str = field(default_factory=lambda: f"app-{next(_keys)}")
    invoke_prefixes: dict[str, bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The start of each invoke request, made once: dispatch appends the payload.
        handlers = {spec.handler for spec in self.manifest.events.values()} | {
            self.manifest.function_handler(m) or m for m in self.manifest.functions}
        object.__setattr__(self, "invoke_prefixes", {
            handler: protocol.invoke_prefix(handler) for handler in handlers})

    def handler_for(self, event: str) -> str | None:
        spec = self.manifest.events.get(event)
        return spec.handler if spec else None

    def check_iparams(self, values: Any) -> dict[str, Any]:
        """An installation's iparams checked against config/iparams.json (IparamsError lists
        every problem). An app that declares none takes any JSON object, as apps written
        before declarations did."""
        if not self.iparams.declarations and type(values) is dict:
            return dict(values)
        return self.iparams.check(values)

    def handler_for_method(self, method: str) -> str | None:
        """The handler of a server method (SMI), or None when the app offers no such method."""
        return self.manifest.function_handler(method)

    def test_payload_path(self, event: str) -> Path:
        return self.path / "server" / "test_data" / f"{event}.json"

    def bind_request(self, sandbox_limits: dict[str, int], installation: str) -> bytes:
        """The bind message a worker needs to serve this app for one installation (the
        host's compiled code)."""
        return protocol.bind_message(
            self.name, installation, self.compiled.filename, self.compiled.source,
            base64.b64encode(marshal.dumps(self.compiled.code)).decode(), sandbox_limits)


def load_app(path: str | Path, request_timeout: int | None = None,
             timeout: float | None = None, templates: TemplatePolicy | None = None) -> App:
    """Load and check an app directory. Raises ManifestError, AppLoadError or CompileError;
    a ConfigError for a request timeout outside 15, 20, 25 or 30 s."""
    root = Path(path)
    manifest = read_manifest(root)
    compiled = compile_handler(read_server(root), SERVER.as_posix())
    missing = missing_handlers(manifest, compiled)
    if missing:
        raise AppLoadError(missing[0], missing)
    effective = request_timeout if request_timeout is not None else manifest.request_timeout
    iparams = load_iparams_spec(root)
    return App(name=root.resolve().name, path=root, manifest=manifest, compiled=compiled,
               execution_timeout=execution_timeout(effective, timeout),
               request_timeout=effective, iparams=iparams,
               templates=load_app_templates(root, manifest, templates),
               version=_version(root, compiled))


def _version(root: Path, compiled: CompiledHandler) -> str:
    """A version id from the app's content: the manifest, config files and module."""
    digest = hashlib.sha256(compiled.source.encode("utf-8", "surrogatepass"))
    for name in (MANIFEST, "config/iparams.json", "config/requests.json"):
        try:
            digest.update((root / name).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:12]


def load_app_templates(root: Path, manifest: Manifest,
                       policy: TemplatePolicy | None = None) -> dict[str, Template]:
    """The request templates the manifest lists, from config/requests.json."""
    return load_templates(root, list(manifest.requests), policy) if manifest.requests else {}


def read_manifest(root: Path) -> Manifest:
    if not root.is_dir():
        raise AppLoadError(f"{root}: not an app directory (it does not exist or is a file)")
    path = root / MANIFEST
    try:
        with path.open("rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing (an app needs manifest.json)") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: over {MAX_MANIFEST_BYTES} bytes")
    return Manifest.parse_json(text, str(path))


def read_server(root: Path) -> bytes:
    path = root / SERVER
    try:
        with path.open("rb") as f:
            return f.read(2 << 20)  # the compiler refuses anything over its own cap
    except FileNotFoundError:
        raise AppLoadError(f"{path}: missing (an app needs server/server.py)") from None
    except OSError as exc:
        raise AppLoadError(f"{path}: cannot be read ({exc.strerror})") from None


def missing_handlers(manifest: Manifest, compiled: CompiledHandler) -> list[str]:
    """One message per handler the manifest names that the module does not define."""
    declared = declared_handlers(compiled)
    if declared is None:
        return []  # `exports` is computed: checked at the first dispatch instead
    where = "exports" if _defines_exports(compiled.source) else "the module"
    wanted = [(event, spec.handler) for event, spec in manifest.events.items()] + [
        (f"function {method}", manifest.function_handler(method) or method)
        for method in manifest.functions]
    return [f"{compiled.filename}: handler {handler!r} for {what} is not defined in {where}"
            for what, handler in wanted if handler not in declared]


def _defines_exports(source: str) -> bool:
    """True when the module assigns `exports` at its top level (read from the syntax tree:
    the word in a comment or a string does not count)."""
    import ast

    for node in ast.parse(source).body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        if any(isinstance(t, ast.Name) and t.id == "exports" for t in targets):
            return True
    return False


def validate_app(path: str | Path) -> list[str]:
    """Every manifest, compile and handler diagnostic of an app at once, one line each."""
    root = Path(path)
    problems: list[str] = []
    manifest = None
    try:
        manifest = read_manifest(root)
    except AppLoadError as exc:
        problems.extend(exc.problems)
    compiled = None
    if root.is_dir():
        try:
            compiled = compile_handler(read_server(root), SERVER.as_posix())
        except CompileError as exc:
            problems.extend(str(v) for v in exc.violations)
        except AppLoadError as exc:
            problems.extend(exc.problems)
    if manifest is not None and compiled is not None:
        problems.extend(missing_handlers(manifest, compiled))
    if root.is_dir():
        for load in (lambda: load_iparams_spec(root),
                     lambda: manifest and load_app_templates(root, manifest)):
            try:
                load()
            except AppLoadError as exc:
                problems.extend(exc.problems)
    return problems
