"""Request templates: reads and checks config/requests.json, and renders one template with an
installation's iparams and a handler's context.

Touches untrusted input twice: the app's own requests.json (checked once, at load) and the
values substituted into a template (iparams from the installer, context from handler code),
escaped for their position at every render:

    position       placeholders   a substituted value is ...
    host           yes            checked: the whole host must stay a DNS name (letters,
                                  digits, hyphens, dots), never an IP address
    path           yes            percent-encoded as one segment ("/", "?", "#", "%" encoded);
                                  refused if it leaves a segment "", "." or ".."
    query value    yes            percent-encoded (the whole value, literal text included)
    header value   yes            refused unless printable ASCII (no CR, LF, NUL, controls)
    query key, header name, protocol, method, port: literal only

So no value can add a header, change the scheme or port, change the host (beyond what a
placeholder in the host spells, and then only to another DNS name), or inject CRLF.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from handlerbox.runtime.errors import AppLoadError
from handlerbox.runtime.services.base import ServiceError

REQUESTS_FILE = "config/requests.json"
MAX_TEMPLATES = 100
MAX_FILE_BYTES = 256 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_ATTEMPTS = 5
MAX_RETRY_DELAY_MS = 1500
MAX_URL_CHARS = 16 * 1024
"""A rendered path and query longer than this is refused (servers answer 414 anyway)."""
MAX_HEADER_CHARS = 8 * 1024
RESERVED_HEADERS = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
    "keep-alive", "expect", "proxy-authorization", "proxy-connection", "accept-encoding"))
"""Headers the host sets itself: framing and routing (a template setting them could smuggle
requests or defeat the address check) and Accept-Encoding (the response cap is counted on
what the server sends, so the host asks for identity and decodes gzip/deflate itself)."""

_PLACEHOLDER = re.compile(
    r"<%=\s*(?:(encode)\(\s*)?(iparam|context)\.([A-Za-z_][A-Za-z0-9_]*)\s*(?(1)\)\s*)%>")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HOST_TEXT = re.compile(r"[A-Za-z0-9.-]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class TemplatePolicy:
    """What the operator allows at load time: plain http only for the named development
    hosts (exact, literal host names), e.g. `TemplatePolicy(frozenset({"localhost"}))`."""

    allow_http_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Placeholder:
    """`<%= iparam.NAME %>`, `<%= context.NAME %>`, or either inside `encode(...)` (base64 of
    the UTF-8 value, as FDK's `encode` for Basic auth)."""

    source: Literal["iparam", "context"]
    name: str
    encode: bool = False

    def __str__(self) -> str:
        ref = f"{self.source}.{self.name}"
        return f"<%= encode({ref}) %>" if self.encode else f"<%= {ref} %>"


Text = tuple[str | Placeholder, ...]
"""A template string cut into literal text and placeholders."""
Fill = Callable[[Placeholder, str], str]
"""Gives a placeholder's value as text; the second argument names where it goes."""
Bad = Callable[[str, str], None]
"""Records a problem: (key path inside the template, message)."""


@dataclass(frozen=True)
class RenderedRequest:
    """A template with every placeholder substituted and escaped: ready to send."""

    method: str
    scheme: str
    host: str
    port: int
    path_and_query: str
    headers: tuple[tuple[str, str], ...]

    @property
    def authority(self) -> str:
        """The Host header: the name, with the port when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path_and_query}"


@dataclass(frozen=True)
class Template:
    """One checked entry of config/requests.json. `path` holds the segments after the first
    "/"; header names and query keys are literal; `render` fills in the placeholders."""

    name: str
    method: str
    scheme: str
    host: Text
    port: int
    path: tuple[Text, ...]
    headers: tuple[tuple[str, Text], ...] = ()
    query: tuple[tuple[str, Text], ...] = ()
    max_attempts: int = 1
    retry_delay_ms: int = 0

    def render(self, iparams: Mapping[str, Any], context: Mapping[str, Any]) -> RenderedRequest:
        """Substitute `iparams` and `context`, escaping each value for its position; raises
        ServiceError(400) naming the placeholder that is missing or whose value cannot go
        where the template puts it. Messages name placeholders, never values (iparams may be
        secret)."""

        def value(ph: Placeholder, where: str) -> str:
            return _value(self.name, ph, iparams if ph.source == "iparam" else context, where)

        host = "".join(p if isinstance(p, str) else value(p, "host") for p in self.host)
        problem = domain_problem(host)
        if problem:
            raise ServiceError(400, f"{self.name}: the host built from "
                               f"{_refs(self.host)} {problem}")
        segments = [_render_segment(self.name, seg, value) for seg in self.path]
        target = "/" + "/".join(segments)
        if self.query:
            target += "?" + "&".join(
                f"{quote(key, safe='')}={quote(_join(text, value, 'query'), safe='')}"
                for key, text in self.query)
        if len(target) > MAX_URL_CHARS:
            raise ServiceError(400, f"{self.name}: the rendered path and query are over "
                               f"{MAX_URL_CHARS} characters")
        headers = tuple((name, _header_value(self.name, name, text, value))
                        for name, text in self.headers)
        return RenderedRequest(self.method, self.scheme, host.lower(), self.port, target,
                               headers)


# -- rendering -----------------------------------------------------------------------------

def _value(template: str, ph: Placeholder, source: Mapping[str, Any], where: str) -> str:
    if ph.name not in source:
        raise ServiceError(400, f"{template}: {ph.source}.{ph.name} is missing (the template's "
                           f"{where} uses {ph})")
    raw = source[ph.name]
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, str):
        text = raw
    elif (isinstance(raw, int) and abs(raw) < 10**300) or (
            isinstance(raw, float) and math.isfinite(raw)):
        text = json.dumps(raw)
    else:
        raise ServiceError(400, f"{template}: {ph.source}.{ph.name} must be a string, a number "
                           f"or a boolean to fill {ph} (got {type(raw).__name__})")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(400, f"{template}: {ph.source}.{ph.name} is not valid Unicode "
                           "(it holds a lone surrogate)") from None
    return base64.b64encode(encoded).decode("ascii") if ph.encode else text


def _join(text: Text, value: Fill, where: str) -> str:
    return "".join(p if isinstance(p, str) else value(p, where) for p in text)


def _refs(text: Text) -> str:
    return ", ".join(str(p) for p in text if isinstance(p, Placeholder)) or "its literal text"


def _render_segment(template: str, segment: Text, value: Fill) -> str:
    out = "".join(p if isinstance(p, str) else quote(value(p, "path"), safe="")
                  for p in segment)
    if out in ("", ".", "..") and any(isinstance(p, Placeholder) for p in segment):
        raise ServiceError(400, f"{template}: {_refs(segment)} would make the path segment "
                           f"{out!r}; a path value must be a non-empty name other than . or ..")
    return out


def _header_value(template: str, name: str, text: Text, value: Fill) -> str:
    parts = []
    for p in text:
        if isinstance(p, str):
            parts.append(p)
            continue
        filled = value(p, f"header {name}")
        bad = next((c for c in filled if not " " <= c <= "~"), None)
        if bad is not None:
            kind = ("a control character (CR, LF, NUL, ...)" if ord(bad) < 32 or bad == "\x7f"
                    else "a non-ASCII character")
            raise ServiceError(400, f"{template}: {p} holds {kind}; header {name} takes "
                               "printable ASCII only")
        parts.append(filled)
    out = "".join(parts).strip(" ")
    if len(out) > MAX_HEADER_CHARS:
        raise ServiceError(400, f"{template}: header {name} is over {MAX_HEADER_CHARS} "
                           "characters")
    return out


def domain_problem(host: str) -> str | None:
    """Why `host` is not a DNS name a request may go to (None when it is). Every spelling of
    an IP address is refused: dotted, decimal (2130706433), octal (0177.0.0.1), hex (0x7f.1)
    and IPv6: a name whose last label is a number is an address to inet_aton and to browsers
    (WHATWG "ends in a number"), and no top-level domain is numeric."""
    if not host:
        return "is empty"
    if ":" in host or "[" in host or "]" in host:
        return "must be a domain name, not an IP address"
    if not _HOST_TEXT.fullmatch(host):
        return "may hold only letters, digits, hyphens and dots (no @, :, /, spaces or " \
               "non-ASCII: write an international name in its xn-- form)"
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    if last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef"
                                                        for c in last[2:])):
        return "must be a domain name, not an IP address"
    try:
        ipaddress.ip_address(host)
        return "must be a domain name, not an IP address"
    except ValueError:
        pass
    if len(host) > 253:
        return "is over 253 characters"
    for label in host.split("."):
        if not _LABEL.fullmatch(label):
            return (f"has an invalid label {label!r} (1-63 letters, digits or hyphens, not "
                    "starting or ending with a hyphen)")
    return None


# -- loading -------------------------------------------------------------------------------

class _Problems:
    """Collects `config/requests.json: <key path>: <problem>` lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, message: str, file: str = REQUESTS_FILE) -> None:
        self.lines.append(f"{file}: {where}: {message}" if where else f"{file}: {message}")


def load_templates(app_root: Path, declared: list[str],
                   policy: TemplatePolicy | None = None) -> dict[str, Template]:
    """Read `app_root/config/requests.json`, check every template in it, and return the ones
    the manifest's `requests` list declares (only those can be invoked). Raises AppLoadError
    with one problem per line, naming the file and key path of each."""
    policy = policy or TemplatePolicy()
    problems = _Problems()
    if len(declared) > MAX_TEMPLATES:
        problems.add("requests", f"declares {len(declared)} templates; at most "
                     f"{MAX_TEMPLATES}", "manifest.json")
    for name in sorted({n for n in declared if declared.count(n) > 1}):
        problems.add("requests", f"{name!r} is declared twice", "manifest.json")
    raw = _read(app_root / REQUESTS_FILE, bool(declared), problems)
    templates: dict[str, Template] = {}
    if isinstance(raw, dict):
        if len(raw) > MAX_TEMPLATES:
            problems.add("", f"defines {len(raw)} templates; at most {MAX_TEMPLATES}")
        for name, spec in raw.items():
            template = _template(name, spec, policy, problems)
            if template is not None:
                templates[name] = template
        for name in declared:
            if name not in raw:
                problems.add("requests", f"{name!r} is not defined in {REQUESTS_FILE}"
                             + (f" (it defines: {', '.join(sorted(raw))})" if raw else ""),
                             "manifest.json")
    elif raw is not None:
        problems.add("", "must be a JSON object mapping template names to templates")
    if problems.lines:
        raise AppLoadError("\n".join(problems.lines), problems.lines)
    return {name: templates[name] for name in declared}


def _read(path: Path, required: bool, problems: _Problems) -> Any:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        if required:
            problems.add("", "missing (manifest.json declares requests)")
        return None
    except OSError as exc:
        problems.add("", f"cannot be read ({exc.strerror})")
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.add("", f"over {MAX_FILE_BYTES} bytes")
        return None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise ValueError(f"duplicate key {dup!r}")
        return dict(pairs)

    try:
        return json.loads(data, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        problems.add("", f"not valid JSON ({exc})")
        return None


def _template(name: str, spec: Any, policy: TemplatePolicy,
              problems: _Problems) -> Template | None:
    before = len(problems.lines)

    def bad(where: str, message: str) -> None:
        problems.add(f"{name}.{where}" if where else name, message)

    if not _NAME.fullmatch(name):
        bad("", "a template name is 1-64 letters, digits, _ or -, starting with a letter or _")
    if not isinstance(spec, dict):
        bad("", 'must be an object with "schema" and optional "options"')
        return None
    _unknown(spec, ("schema", "options"), "", bad)
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        bad("schema", "must be an object (protocol, method, host, path, headers, query)")
        return None
    _unknown(schema, ("protocol", "method", "host", "path", "headers", "query"), "schema.", bad)
    options = spec.get("options", {})
    if not isinstance(options, dict):
        bad("options", "must be an object (maxAttempts, retryDelay)")
        options = {}
    _unknown(options, ("maxAttempts", "retryDelay"), "options.", bad)

    method = schema.get("method")
    if method not in METHODS:
        bad("schema.method", f"must be one of {', '.join(METHODS)}")
    host, port = _host(schema.get("host"), lambda m: bad("schema.host", m))
    scheme = schema.get("protocol", "https")
    if scheme not in ("https", "http"):
        bad("schema.protocol", 'must be "https" (or "http" for an allowed development host)')
    elif scheme == "http" and host is not None and not (
            all(isinstance(p, str) for p in host)
            and "".join(map(str, host)).lower() in policy.allow_http_hosts):
        allowed = ", ".join(sorted(policy.allow_http_hosts)) or "none"
        bad("schema.protocol", "http is allowed only for the development hosts the operator "
            f"names (here: {allowed}); use https")
    path = _path(schema.get("path", "/"), lambda m: bad("schema.path", m))
    headers = _pairs(schema.get("headers", {}), "schema.headers", bad, header=True)
    query = _pairs(schema.get("query", {}), "schema.query", bad, header=False)
    attempts = _int(options.get("maxAttempts", 1), 1, MAX_ATTEMPTS, "options.maxAttempts", bad)
    delay = _int(options.get("retryDelay", 0), 0, MAX_RETRY_DELAY_MS,
                 "options.retryDelay", bad)
    if len(problems.lines) > before or host is None or path is None:
        return None
    return Template(name, str(method), str(scheme), host,
                    port or (443 if scheme == "https" else 80), path, headers, query,
                    attempts, delay)


def _unknown(obj: dict[str, Any], known: tuple[str, ...], prefix: str, bad: Bad) -> None:
    for key in obj:
        if key not in known:
            bad(f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")


def _int(value: Any, low: int, high: int, where: str, bad: Bad) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad(where, f"must be an integer from {low} to {high}")
        return low
    return value


def _parse(value: str) -> Text:
    """Cut a template string into literal text and placeholders; ValueError for a `<%` or
    `%>` that is not a placeholder this platform knows."""
    parts: list[str | Placeholder] = []
    at = 0
    for m in _PLACEHOLDER.finditer(value):
        parts.append(value[at:m.start()])
        parts.append(Placeholder("iparam" if m[2] == "iparam" else "context", m[3],
                                 bool(m[1])))
        at = m.end()
    parts.append(value[at:])
    literal = [p for p in parts if isinstance(p, str)]
    if any("<%" in p or "%>" in p for p in literal):
        raise ValueError("holds an unknown placeholder; use <%= iparam.NAME %> or "
                         "<%= context.NAME %> (optionally inside encode(...))")
    return tuple(p for p in parts if p != "")


def _host(value: Any, bad: Callable[[str], None]) -> tuple[Text | None, int | None]:
    if not isinstance(value, str) or not value:
        bad("must be a domain name, e.g. api.example.com or <%= iparam.domain %>")
        return None, None
    try:
        text = _parse(value)
    except ValueError as exc:
        bad(str(exc))
        return None, None
    port = None
    literal = "".join(p for p in text if isinstance(p, str))
    if "[" in literal or literal.count(":") > 1:
        bad("must be a domain name, not an IP address")
        return None, None
    if text and isinstance(text[-1], str) and ":" in text[-1]:
        rest, _, digits = text[-1].rpartition(":")
        if not digits.isdigit() or not digits.isascii() or not 0 < int(digits) < 65536:
            bad(f"port {digits!r} must be a number from 1 to 65535")
            return None, None
        port, text = int(digits), text[:-1] + ((rest,) if rest else ())
    for part in text:
        if isinstance(part, str) and not _HOST_TEXT.fullmatch(part):
            bad(domain_problem(part) or "may hold only letters, digits, hyphens and dots")
            return None, None
    # A placeholder may fill any value; check the shape with a sample filling in each one.
    problem = domain_problem("".join(p if isinstance(p, str) else "x" for p in text))
    if problem:
        bad(problem)
        return None, None
    return text, port


def _path(value: Any, bad: Callable[[str], None]) -> tuple[Text, ...] | None:
    if not isinstance(value, str) or not value.startswith("/"):
        bad('must be a string starting with "/"')
        return None
    try:
        text = _parse(value)
    except ValueError as exc:
        bad(str(exc))
        return None
    segments: list[list[str | Placeholder]] = [[]]
    for part in text:
        if isinstance(part, Placeholder):
            segments[-1].append(part)
            continue
        pieces = part.split("/")
        segments[-1].append(pieces[0])
        segments.extend([piece] for piece in pieces[1:])
    out = []
    for segment in segments[1:]:  # segments[0] is what comes before the leading "/"
        literal = "".join(p for p in segment if isinstance(p, str))
        if not _PATH_TEXT.fullmatch(literal):
            bad("may hold only URL path characters (put the query in \"query\"; no spaces, "
                "?, # or bad %-escapes)")
            return None
        parts = tuple(p for p in segment if p != "")
        if parts in ((".",), ("..",)):
            bad('must not hold "." or ".." segments')
            return None
        out.append(parts)
    return tuple(out)


def _pairs(value: Any, where: str, bad: Bad, header: bool) -> tuple[tuple[str, Text], ...]:
    what = "header" if header else "query"
    if not isinstance(value, dict):
        bad(where, f"must be an object of {what} names to string values")
        return ()
    out: list[tuple[str, Text]] = []
    seen: set[str] = set()
    for key, raw in value.items():
        at = f"{where}.{key}"
        if header:
            if not _TOKEN.fullmatch(key):
                bad(at, "a header name is a token (letters, digits and !#$%&'*+-.^_`|~)")
                continue
            if key.lower() in RESERVED_HEADERS:
                bad(at, "is set by the host; a template cannot set it")
                continue
            if key.lower() in seen:
                bad(at, "is set twice (header names ignore case)")
                continue
            seen.add(key.lower())
        elif not key or any(ord(c) < 32 or c == "\x7f" for c in key) or "<%" in key:
            bad(at, "a query key is non-empty literal text (placeholders go in values)")
            continue
        if not isinstance(raw, str):
            bad(at, "must be a string")
            continue
        try:
            text = _parse(raw)
        except ValueError as exc:
            bad(at, str(exc))
            continue
        literal = "".join(p for p in text if isinstance(p, str))
        if header and any(not " " <= c <= "~" for c in literal):
            bad(at, "a header value is printable ASCII (no CR, LF or other control "
                "characters)")
            continue
        out.append((key, text))
    return tuple(out)
