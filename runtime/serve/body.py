"""Request bodies, read under a cap; untrusted input.

The cap is checked against Content-Length before a byte is read, and again while the body
streams in (a chunked body has no length), so an oversized body is refused without being
held in memory. JSON is decoded by orjson (NaN, Infinity and invalid UTF-8 are refused);
every failure is an ApiError with a clear message, never a traceback.

    body = await read_body(request, 100 * 1024)        # 413 when over
    obj = json_object(body)                             # 400 malformed, 422 not an object
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import Field, ValidationError
from starlette.requests import ClientDisconnect, Request

from handlerbox.runtime.serve.responses import ApiError
from handlerbox.runtime.validation import EdgeModel, problems

JSON_TYPES = frozenset({"application/json"})


def media_type(request: Request) -> str:
    """The request's media type, lower case and without parameters ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (application/json or application/*+json)."""
    kind = media_type(request)
    if kind not in JSON_TYPES and not (kind.startswith("application/") and kind.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be application/json (got {kind or 'no content type'})")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; 413 as soon as it is known to be larger."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "Content-Length must be a number")
        if int(declared) > limit:
            raise too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(None, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-body") from None
    return b"".join(chunks)


def too_large(size: int | None, limit: int) -> ApiError:
    said = f"{size} bytes" if size is not None else "larger"
    return ApiError(413, "body_too_large", f"the body is {said}, over the limit of {limit} "
                    f"bytes ({limit // 1024} KB)")


def parse_json(body: bytes) -> Any:
    """Decoded JSON; 400 naming the problem when the body is not JSON."""
    if not body:
        raise ApiError(400, "malformed_json", "the body is empty; it must be JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object (400 when not JSON, 422 when JSON but not an object)."""
    value = parse_json(body)
    if type(value) is not dict:
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    return value


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    require_json(request)
    return json_object(await read_body(request, limit))


class InstallBody(EdgeModel):
    """POST /apps/{app}/installations: `{"account_id", "domain", "region"?, "iparams"?}`."""

    account_id: str
    domain: str
    region: str = "US"
    iparams: dict[str, Any] = Field(default_factory=dict)


class UpdateBody(EdgeModel):
    """PATCH /apps/{app}/installations/{account}: `{"iparams"?}` (absent: kept as they are;
    the installation moves to the app's loaded version either way)."""

    iparams: dict[str, Any] | None = None


MAX_TIMEOUT_OVERRIDE = 40.0
"""The longest execution time the platform allows (PLATFORM.md): no override goes past it."""


class AppPathBody(EdgeModel):
    """POST /apps as JSON: a server-local app folder inside an allowed app root."""

    path: str = Field(min_length=1, max_length=4096)
    request_timeout: int | None = None
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_OVERRIDE)

Model = TypeVar("Model", bound=EdgeModel)


def parse_model(model: type[Model], obj: dict[str, Any]) -> Model:
    """`obj` validated as `model`; 422 naming each bad field."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        found = problems(exc, "body", {0: model.model_fields})
        raise ApiError(422, "invalid_body", found[0], found) from None
