"""The request service ("request"): performs an app's declared request templates for its
handlers, which have no network. Touches untrusted input: the handler's arguments, the values
it substitutes, and everything a remote server sends back.

    invoke(name, context, body)
      -> check args (400), body <= 100 KB (413) -> template (404) -> render (400)
      -> rate 50/min per installation (429)
      -> resolve the host ONCE; refuse if ANY address is not public (403)
      -> connect to a checked address (URL holds the IP; Host header and TLS SNI/verification
         hold the name) -> stream the response, cut at 6 MB (502)
      -> same-host redirects, at most 3 -> retries on network errors, 429 and 5xx
      -> {"status", "headers", "body", "body_encoding"}, or ServiceError for non-2xx
    every step inside min(app request timeout, time left) per attempt and the invocation's
    deadline overall (504).

Decisions (and why):
- Any refused address refuses the request: picking the allowed ones would let a name that
  mixes public and internal addresses probe either, and it hides a misconfiguration.
- Redirects are followed only to the same scheme, host and port, on the address already
  checked (no second resolution): a template's headers often carry credentials for its own
  host, and the point of templates is that an app reaches only the hosts it declared. Any
  other redirect is handed back as a 3xx ServiceError naming the target.
- One asyncio implementation. `call` runs it on the service's own event-loop thread, so the
  deadline cancels a request at any point (a socket timeout alone cannot bound a server that
  trickles bytes). `call_async` runs it on the caller's loop.
- Connections are pooled per event loop AND per host name: httpcore keys its pool by the URL
  origin (here the IP), so one pool shared by names could send one name's request down a TLS
  session verified for another name on the same address.
- Proxies and .netrc from the environment are ignored (`trust_env=False`): a proxy would
  resolve the name itself, after the check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import httpx

from handlerbox.runtime.services.base import RateLimiter, Scope, ServiceError
from handlerbox.runtime.services.templates import RenderedRequest, Template, TemplatePolicy

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_BODY_BYTES = 100 * 1024
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
MAX_REDIRECTS = 3
RATE_LIMIT = 50
"""Requests per minute per app per account (retries and redirects are not counted)."""
DEFAULT_REQUEST_TIMEOUT_S = 15.0
EXCERPT_CHARS = 200
TIMEOUT_MESSAGE = "Timeout error while processing the request."
POOLED_HOSTS = 64
"""Host names with a kept-alive pool per event loop; requests to further names get a
one-shot client (no eviction, so no pool is ever closed under a request in flight)."""
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_SYNC_GRACE_S = 0.5
"""How long past the deadline `call` waits for the loop to report the 504 itself."""


# -- the address check ---------------------------------------------------------------------

def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(net), what) for net, what in rows)


_SPECIAL = _table(
    ("0.0.0.0/8", "an unspecified address"), ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"), ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"), ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("224.0.0.0/4", "a multicast address"), ("240.0.0.0/4", "a reserved address"),
    ("192.0.0.0/24", "a reserved address"), ("192.0.2.0/24", "a reserved address"),
    ("198.51.100.0/24", "a reserved address"), ("203.0.113.0/24", "a reserved address"),
    ("198.18.0.0/15", "a reserved address"), ("192.88.99.0/24", "a reserved address"),
    ("::/128", "an unspecified address"), ("::1/128", "a loopback address"),
    ("fe80::/10", "a link-local address"), ("fc00::/7", "a private address"),
    ("fec0::/10", "a private address"), ("ff00::/8", "a multicast address"),
    ("2001:db8::/32", "a reserved address"), ("100::/64", "a reserved address"),
    ("64:ff9b:1::/48", "a reserved address"), ("::/8", "a reserved address"),
)
_NAT64 = ip_network("64:ff9b::/96")


def _embedded(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the form's name."""
    if address.ipv4_mapped:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour:
        return "6to4", address.sixtofour
    if address.teredo:
        return "Teredo", address.teredo[1]
    if address in _NAT64:
        return "NAT64", IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class NetworkPolicy:
    """Where requests may go. By default: public addresses only, https only.

        NetworkPolicy()                                            # production
        NetworkPolicy(allow_networks=[ip_network("127.0.0.1/32")],
                      allow_http_hosts={"localhost"})              # a local test server
        NetworkPolicy.development()                                # --allow-http-localhost

    `allow_networks` lets the operator reach addresses that are otherwise refused;
    `allow_http_hosts` names the literal template hosts that may use plain http."""

    allow_networks: Collection[IPNetwork | str] = ()
    allow_http_hosts: Collection[str] = frozenset()
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks = tuple(ip_network(n, strict=False) if isinstance(n, str) else n
                         for n in self.allow_networks)
        object.__setattr__(self, "allow_networks", networks)
        object.__setattr__(self, "_networks", networks)
        object.__setattr__(self, "allow_http_hosts",
                           frozenset(h.lower() for h in self.allow_http_hosts))

    @classmethod
    def development(cls) -> NetworkPolicy:
        """Local development: plain http to `localhost`, and loopback addresses allowed."""
        return cls(allow_networks=(ip_network("127.0.0.0/8"), ip_network("::1/128")),
                   allow_http_hosts=frozenset({"localhost"}))

    @property
    def templates(self) -> TemplatePolicy:
        """The matching load-time policy for `load_templates`."""
        return TemplatePolicy(frozenset(self.allow_http_hosts))

    def refusal(self, address: IPAddress) -> str | None:
        """None when a request may connect to `address`; otherwise what kind of address it
        is ("a link-local address"). IPv6 forms that carry an IPv4 address (mapped, 6to4,
        Teredo, NAT64) are judged by the address they carry. An allowed network wins."""
        if any(address in net for net in self._networks):
            return None
        embedded = _embedded(address) if isinstance(address, IPv6Address) else None
        if embedded:
            inner = self.refusal(embedded[1])
            return f"{inner} in {embedded[0]} form" if inner else None
        for net, what in _SPECIAL:
            if address in net:
                return what
        if not address.is_global:
            return "a special-purpose (non-global) address"
        return None


# -- the service ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AppContext:
    """What the service needs of one installation: the app's templates (from
    `load_templates`), the installation's iparams, and the app's request timeout (s)."""

    templates: Mapping[str, Template]
    iparams: Mapping[str, Any]
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes
    location: str | None = None


class RequestService:
    """The "request" service. `app_context(scope)` is the engine's: it returns the calling
    installation's templates, iparams and request timeout.

        service = RequestService(NetworkPolicy(), app_context=engine.request_context)
        service.call(scope, "invoke", {"name": "createTicket", "context": {...}}, deadline)
        service.close()
    """

    name = "request"
    operations = frozenset({"invoke"})

    def __init__(self, policy: NetworkPolicy, app_context: Callable[[Scope], AppContext], *,
                 clock: Callable[[], float] = time.monotonic,
                 verify: bool | ssl.SSLContext = True) -> None:
        """`clock` drives the rate limiter; `verify` is httpx's (True, or an ssl.SSLContext
        for an operator's private CA)."""
        self.policy = policy
        self._app_context = app_context
        self._limiter = RateLimiter(RATE_LIMIT, 60.0, clock)
        self._verify = verify
        self._pools: dict[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- the two entry points --

    def call(self, scope: Scope, operation: str, args: dict[str, Any],
             deadline: float) -> Any:
        """Perform one call from a thread without a running loop (on the service's loop)."""
        future = asyncio.run_coroutine_threadsafe(
            self.call_async(scope, operation, args, deadline), self._sync_loop())
        try:
            return future.result(max(0.0, deadline - time.monotonic()) + _SYNC_GRACE_S)
        except TimeoutError:
            future.cancel()
            raise ServiceError(504, TIMEOUT_MESSAGE) from None

    async def call_async(self, scope: Scope, operation: str, args: dict[str, Any],
                         deadline: float) -> Any:
        """Perform one call on the running loop; nothing here waits past `deadline`."""
        if operation not in self.operations:
            raise ServiceError(400, f"request has no operation {operation!r} (it has: invoke)")
        name, context, body = _check_args(args)
        content, content_type = _encode_body(body)
        app = self._app_context(scope)
        template = app.templates.get(name)
        if template is None:
            declared = ", ".join(sorted(app.templates)) or "none"
            raise ServiceError(404, f"no request template named {name!r}; this app declares: "
                               f"{declared}")
        rendered = template.render(app.iparams, context)
        if rendered.scheme == "http" and rendered.host not in self.policy.allow_http_hosts:
            raise ServiceError(403, f"plain http to {rendered.host} is not allowed here")
        if content_type and not any(k.lower() == "content-type" for k, _ in rendered.headers):
            rendered = _with_header(rendered, "Content-Type", content_type)
        if not self._limiter.allow(scope.installation):
            raise ServiceError(429, f"rate limit: at most {RATE_LIMIT} requests per minute "
                               "per app per account; try again later")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + (deadline - time.monotonic())):
                return await self._invoke(template, rendered, content, app.request_timeout,
                                          deadline)
        except TimeoutError:
            raise ServiceError(504, TIMEOUT_MESSAGE) from None

    def close(self) -> None:
        """Close the pools of `call` and stop its loop thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()

    async def aclose(self) -> None:
        """Close the pools of the running loop (`call_async` callers, at shutdown)."""
        with self._lock:
            pools = self._pools.pop(asyncio.get_running_loop(), {})
        for client in pools.values():
            await client.aclose()

    # -- one invoke --

    async def _invoke(self, template: Template, rendered: RenderedRequest,
                      content: bytes | None, request_timeout: float, deadline: float) -> Any:
        addresses = await self._resolve(rendered.host, rendered.port)
        for attempt in range(1, template.max_attempts + 1):
            try:
                async with asyncio.timeout(min(request_timeout, deadline - time.monotonic())):
                    outcome = await self._attempt(template.name, rendered, addresses, content)
            except TimeoutError:
                outcome = ServiceError(504, TIMEOUT_MESSAGE)
            retry = isinstance(outcome, ServiceError) or outcome.status == 429 \
                or outcome.status >= 500
            delay = template.retry_delay_ms / 1000
            if not retry or attempt == template.max_attempts \
                    or time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        if isinstance(outcome, ServiceError):
            raise outcome
        return _deliver(template.name, outcome)

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` once and check every address; IPv4 first (containers often have
        no IPv6 route). Raises ServiceError 403 naming the first refused address."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ServiceError(502, f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            address = ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ServiceError(502, f"cannot resolve {host}: no addresses")
        for address in addresses:
            why = self.policy.refusal(address)
            if why:
                raise ServiceError(403, f"{host} resolves to {address}, {why}: refused")
        return sorted(addresses, key=lambda a: a.version)

    async def _attempt(self, name: str, rendered: RenderedRequest, addresses: list[IPAddress],
                       content: bytes | None) -> _Response | ServiceError:
        """One attempt: the exchange and its same-host redirects. Returns what may be
        retried (a response, or a network error); raises what may not."""
        method, target = rendered.method, rendered.path_and_query
        for _ in range(MAX_REDIRECTS + 1):
            outcome = await self._exchange(rendered, addresses, method, target, content)
            if isinstance(outcome, ServiceError) or outcome.location is None:
                return outcome
            next_target = _same_origin(rendered, outcome.location)
            if next_target is None:
                return outcome
            target = next_target
            if outcome.status == 303 or (outcome.status in (301, 302) and method == "POST"):
                method, content = "GET", None
        raise ServiceError(502, f"{name}: more than {MAX_REDIRECTS} redirects")

    async def _exchange(self, rendered: RenderedRequest, addresses: list[IPAddress],
                        method: str, target: str,
                        content: bytes | None) -> _Response | ServiceError:
        """One request and response, on the first checked address that accepts a
        connection."""
        client, one_shot = self._client(rendered.host)
        headers = [("Host", rendered.authority), *rendered.headers,
                   ("Accept-Encoding", "identity")]
        extensions = {"sni_hostname": rendered.host} if rendered.scheme == "https" else {}
        error = ServiceError(502, f"cannot connect to {rendered.host}")
        try:
            for address in addresses:
                url = httpx.URL(scheme=rendered.scheme, host=str(address), port=rendered.port,
                                raw_path=target.encode("ascii"))
                request = client.build_request(method, url, headers=headers, content=content,
                                               extensions=extensions)
                try:
                    response = await client.send(request, stream=True)
                    try:
                        return await _read(rendered.host, response)
                    finally:
                        await response.aclose()
                except httpx.ConnectError as exc:
                    error = upstream_error(rendered.host, exc)
                except httpx.HTTPError as exc:
                    return upstream_error(rendered.host, exc)
            return error
        finally:
            if one_shot:
                await client.aclose()

    def _client(self, host: str) -> tuple[httpx.AsyncClient, bool]:
        """This loop's pooled client for `host`, or a one-shot client past POOLED_HOSTS."""
        loop = asyncio.get_running_loop()
        with self._lock:  # loops in other threads share the table
            pools = self._pools.get(loop)
            if pools is None:
                for closed in [lp for lp in self._pools if lp.is_closed()]:
                    del self._pools[closed]  # their connections went with their loop
                pools = self._pools[loop] = {}
            client = pools.get(host)
            if client is not None:
                return client, False
            client = httpx.AsyncClient(
                verify=self._verify, trust_env=False, follow_redirects=False, timeout=None,
                headers={"User-Agent": "handlerbox"},
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=5))
            if len(pools) >= POOLED_HOSTS:
                return client, True
            pools[host] = client
            return client, False

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name="handlerbox-requests")
                self._thread.start()
            return self._loop


# -- arguments, bodies, responses ------------------------------------------------------------

def _check_args(args: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    unknown = sorted(set(args) - {"name", "context", "body"})
    if unknown:
        raise ServiceError(400, f"request.invoke takes name, context and body; not "
                           f"{', '.join(unknown)} (a template fixes its headers)")
    name, context = args.get("name"), args.get("context")
    if not isinstance(name, str) or not name:
        raise ServiceError(400, "request.invoke: name must be a template name (a string)")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ServiceError(400, "request.invoke: context must be an object")
    return name, context, args.get("body")


def _encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """The body's bytes and the Content-Type it implies: text as UTF-8, objects and arrays
    as compact JSON; 413 over MAX_BODY_BYTES."""
    if body is None:
        return None, None
    content_type = None
    try:
        if isinstance(body, str):
            content = body.encode("utf-8")
        elif isinstance(body, (dict, list)):
            content = json.dumps(body, ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        else:
            raise ServiceError(400, "request.invoke: body must be a string, an object, an "
                               "array or null")
    except (UnicodeEncodeError, ValueError, TypeError):
        raise ServiceError(400, "request.invoke: body cannot be encoded (a lone surrogate, "
                           "NaN or a non-JSON value)") from None
    if len(content) > MAX_BODY_BYTES:
        raise ServiceError(413, f"request body is {len(content)} bytes; the limit is 100 KB "
                           f"({MAX_BODY_BYTES} bytes)")
    return content, content_type


def _with_header(rendered: RenderedRequest, name: str, value: str) -> RenderedRequest:
    return RenderedRequest(rendered.method, rendered.scheme, rendered.host, rendered.port,
                           rendered.path_and_query, (*rendered.headers, (name, value)))


def _same_origin(rendered: RenderedRequest, location: str) -> str | None:
    """The path and query to follow `location` to, when it stays on the request's scheme,
    host and port; None otherwise (or when it is not a URL)."""
    try:
        url = httpx.URL(rendered.url).join(location)
    except (httpx.InvalidURL, ValueError):
        return None
    if (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)) != (
            rendered.scheme, rendered.host, rendered.port):
        return None
    return url.raw_path.decode("ascii")


class _Inflate:
    """gzip/zlib decoding with a bound on the output of each step: a small compressed body
    cannot expand past the cap in memory."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or zlib header

    def feed(self, data: bytes, limit: int) -> bytes:
        return self._z.decompress(data, limit)


async def _read(host: str, response: httpx.Response) -> _Response:
    """Read a response, cut at MAX_RESPONSE_BYTES (decoded); 502 past it."""
    headers: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        key = key.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if response.status_code in _REDIRECTS and "location" in headers:
        return _Response(response.status_code, headers, b"", headers["location"])
    too_large = ServiceError(502, f"{host}: response over 6 MB (the limit is "
                             f"{MAX_RESPONSE_BYTES} bytes)")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    inflate = _Inflate() if encoding in ("gzip", "x-gzip", "deflate") else None
    if inflate is None and encoding != "identity":
        raise ServiceError(502, f"{host}: unsupported content-encoding {encoding!r} (the "
                           "request asked for identity)")
    length = headers.get("content-length", "")
    if inflate is None and length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
        raise too_large
    chunks, size = [], 0
    async for raw in response.aiter_raw():
        try:
            data = inflate.feed(raw, MAX_RESPONSE_BYTES - size + 1) if inflate else raw
        except zlib.error:
            raise ServiceError(502, f"{host}: the {encoding} body is corrupt") from None
        size += len(data)
        if size > MAX_RESPONSE_BYTES:
            raise too_large
        chunks.append(data)
    if inflate is not None:  # the handler gets the decoded body: these described the other
        headers.pop("content-encoding", None)
        headers.pop("content-length", None)
    return _Response(response.status_code, headers, b"".join(chunks))


def _text(response: _Response) -> tuple[str, str]:
    """The body as text (the declared charset, else UTF-8), or base64 when it is not."""
    charset = "utf-8"
    for param in response.headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip('"\' ') or charset
    for candidate in (charset, "utf-8"):
        try:
            return response.body.decode(candidate), "text"
        except (LookupError, UnicodeDecodeError):
            continue
    return base64.b64encode(response.body).decode("ascii"), "base64"


def _deliver(name: str, response: _Response) -> dict[str, Any]:
    """The handler's result for a 2xx; a ServiceError with the status and an excerpt
    otherwise."""
    if response.location is not None:
        raise ServiceError(response.status, f"{name} answered {response.status}: redirect to "
                           f"{response.location[:EXCERPT_CHARS]} not followed (a template "
                           "reaches only its own host)")
    text, kind = _text(response)
    if 200 <= response.status < 300:
        return {"status": response.status, "headers": response.headers, "body": text,
                "body_encoding": kind}
    excerpt = text[:EXCERPT_CHARS] if kind == "text" else \
        f"({len(response.body)} bytes of binary)"
    raise ServiceError(response.status, f"{name} answered {response.status}: {excerpt}")


def upstream_error(host: str, exc: httpx.HTTPError) -> ServiceError:
    """The one map from httpx's errors to what a handler sees (504 for timeouts, 502 for
    everything else), so none goes unmapped."""
    detail = str(exc)[:EXCERPT_CHARS] or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ServiceError(504, TIMEOUT_MESSAGE)
    if isinstance(exc, httpx.ConnectError):
        return ServiceError(502, f"cannot connect to {host}: {detail}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.LocalProtocolError)):
        return ServiceError(502, f"{host} broke the HTTP protocol: {detail}")
    return ServiceError(502, f"network error talking to {host}: {detail}")

