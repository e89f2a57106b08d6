"""Bearer-token authentication of the platform's endpoints; touches untrusted input (the
Authorization header).

Secure by default: every path needs a token except the few listed as public (health, readiness,
webhooks, whose token is in the path, and /metrics when the operator says so). Tokens are
compared as SHA-256 digests with hmac.compare_digest against every configured token, so
neither the match nor the length of a guess shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from handlerbox.runtime.serve.responses import error_response


def token_ok(header: str | None, digests: tuple[bytes, ...]) -> bool:
    """True when `header` is `Bearer <token>` for one of the tokens whose digests are given."""
    if not header:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    digest = hashlib.sha256(presented.strip().encode("utf-8", "replace")).digest()
    found = False
    for expected in digests:  # no early exit: every token is compared
        found |= hmac.compare_digest(digest, expected)
    return found


class BearerAuth:
    """ASGI middleware: 401 with a JSON error unless the request is public or authenticated."""

    def __init__(self, app: ASGIApp, tokens: tuple[bytes, ...], public_paths: frozenset[str],
                 public_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.digests = tuple(hashlib.sha256(token).digest() for token in tokens)
        self.public_paths, self.public_prefixes = public_paths, public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if not token_ok(header, self.digests):
            code, message = (("missing_token", "this endpoint needs Authorization: Bearer "
                              "<token>") if header is None else
                             ("invalid_token", "the bearer token is not valid"))
            response = error_response(401, code, message,
                                      headers={"WWW-Authenticate": 'Bearer realm="handlerbox"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _public(self, scope: Scope) -> bool:
        path = route_path(scope)
        return path in self.public_paths or path.startswith(self.public_prefixes)


def route_path(scope: Scope) -> str:
    """The path below the mount point (the app may be mounted under a prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
