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
import itertools
import json
import marshal
from dataclasses import dataclass, field
from pathlib import Path

from handlerbox.runtime.deadline import execution_timeout
from handlerbox.runtime.errors import AppLoadError, ManifestError
from handlerbox.runtime.manifest import Manifest
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
    key: str = field(default_factory=lambda: f"app-{next(_keys)}")
    invoke_prefixes: dict[str, bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The start of each event's invoke request, made once: dispatch appends the payload.
        object.__setattr__(self, "invoke_prefixes", {
            event: b'{"op":"invoke","handler":' + json.dumps(spec.handler).encode()
            + b',"payload":' for event, spec in self.manifest.events.items()})

    def handler_for(self, event: str) -> str | None:
        spec = self.manifest.events.get(event)
        return spec.handler if spec else None

    def test_payload_path(self, event: str) -> Path:
        return self.path / "server" / "test_data" / f"{event}.json"

    def bind_request(self, sandbox_limits: dict[str, int]) -> bytes:
        """The bind message a worker needs to serve this app (the host's compiled code)."""
        return json.dumps({
            "op": "bind", "app": self.name, "filename": self.compiled.filename,
            "source": self.compiled.source,
            "code": base64.b64encode(marshal.dumps(self.compiled.code)).decode(),
            "limits": sandbox_limits,
        }).encode()


def load_app(path: str | Path, request_timeout: int | None = None,
             timeout: float | None = None) -> App:
    """Load and check an app directory. Raises ManifestError, AppLoadError or CompileError;
    a ConfigError for a request timeout outside 15, 20, 25 or 30 s."""
    root = Path(path)
    manifest = read_manifest(root)
    compiled = compile_handler(read_server(root), "server.py")
    missing = missing_handlers(manifest, compiled)
    if missing:
        raise AppLoadError(missing[0], missing)
    effective = request_timeout if request_timeout is not None else manifest.request_timeout
    return App(name=root.resolve().name, path=root, manifest=manifest, compiled=compiled,
               execution_timeout=execution_timeout(effective, timeout),
               request_timeout=effective)


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
    where = "exports" if "exports" in compiled.source else "the module"
    return [f"{compiled.filename}: handler {spec.handler!r} for {event} is not defined in "
            f"{where}" for event, spec in manifest.events.items()
            if spec.handler not in declared]


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
            compiled = compile_handler(read_server(root), str(root / SERVER))
        except CompileError as exc:
            problems.extend(str(v) for v in exc.violations)
        except AppLoadError as exc:
            problems.extend(exc.problems)
    if manifest is not None and compiled is not None:
        problems.extend(missing_handlers(manifest, compiled))
    return problems
