"""Event payloads: the envelope every handler receives; untrusted input.

`EventPayload` validates strictly and names each bad field (``payload.region: must be one of
US, EU, EUC, AUS, IND (got 'XX')``); `payload_json_fast` is the dispatch hot path for payloads
that are plainly valid. Unknown top-level keys pass through to the handler: platforms add
fields over time, and a payload must stay valid when they do.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

import orjson
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from handlerbox.runtime.errors import PayloadError
from handlerbox.runtime.validation import EdgeModel, NonEmpty, compact, load_json, problems

MAX_PAYLOAD_BYTES = 256 * 1024
"""A product-event payload is at most this many bytes as compact UTF-8 JSON."""

Region = Literal["US", "EU", "EUC", "AUS", "IND"]
REGIONS: tuple[str, ...] = get_args(Region)


class EventPayload(EdgeModel):
    """A product event's payload: `{account_id, domain, event, region, timestamp, data,
    iparams}`, at most MAX_PAYLOAD_BYTES as compact JSON. Build it with `parse`. Known fields
    keep their strict checks; unknown top-level keys are kept and passed to the handler."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    account_id: NonEmpty
    domain: NonEmpty
    event: NonEmpty
    region: Region
    timestamp: int
    data: dict[str, Any]
    iparams: dict[str, Any] = Field(default_factory=dict)

    _json: bytes = PrivateAttr(default=b"")

    @classmethod
    def parse(cls, obj: Any) -> EventPayload:
        """Validate a payload dict (an EventPayload passes through) and check it encodes as
        JSON within the size limit, or raise PayloadError naming every bad field path."""
        payload = obj
        if not isinstance(payload, cls):
            try:
                payload = cls.model_validate(obj)
            except ValidationError as exc:
                found = problems(exc, "payload", {0: cls.model_fields})
                raise PayloadError("\n".join(found), found) from None
        payload.json_bytes()
        return payload

    @classmethod
    def parse_json(cls, raw: str | bytes, source: str = "payload") -> EventPayload:
        """Decode and validate a payload from JSON text (a file, a request body)."""
        if len(raw) > 4 * MAX_PAYLOAD_BYTES:
            raise PayloadError(f"{source}: is {len(raw)} bytes, over the limit of "
                               f"{MAX_PAYLOAD_BYTES} bytes (256 KB) as compact JSON")
        try:
            obj = load_json(raw, source)
        except ValueError as exc:
            raise PayloadError(str(exc)) from None
        return cls.parse(obj)

    def json_bytes(self) -> bytes:
        """The payload as compact UTF-8 JSON (computed once); PayloadError if it is not
        plain JSON or is over MAX_PAYLOAD_BYTES."""
        if not self._json:
            envelope = self.model_dump(exclude={"data", "iparams"})
            envelope.update(data=self.data, iparams=self.iparams)
            try:
                encoded = compact(envelope)
            except (TypeError, ValueError, RecursionError) as exc:
                raise PayloadError(_not_json(envelope, exc)) from None
            if _LONG_DIGITS.search(encoded) and not _carried_exactly(envelope):
                raise PayloadError(_beyond_64_bits(envelope))
            if len(encoded) > MAX_PAYLOAD_BYTES:
                raise PayloadError(f"payload: is {len(encoded)} bytes as compact JSON, over "
                                   f"the limit of {MAX_PAYLOAD_BYTES} bytes (256 KB)")
            self._json = encoded
        return self._json


_REQUIRED_KEYS = frozenset(("account_id", "domain", "event", "region", "timestamp",
                            "data"))
_PAYLOAD_KEYS = frozenset(("account_id", "domain", "event", "region", "timestamp", "data",
                           "iparams"))


def payload_json_fast(payload: Any) -> tuple[str, str, bytes] | None:
    """(event, account_id, compact JSON) for a payload that is certainly valid, else None.

    The dispatch hot path: a handful of exact type checks instead of a model validation, for
    a plain dict or for JSON bytes (decoded by orjson, so no NaN or Infinity got in). It
    accepts only what EventPayload.parse accepts; anything unusual returns None and goes
    through EventPayload, which explains what is wrong."""
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > 4 * MAX_PAYLOAD_BYTES or _LONG_DIGITS.search(payload):
            return None  # a long number may not fit 64 bits: the checked path decides
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not _plainly_valid(obj):
            return None
        encoded = orjson.dumps(obj if "iparams" in obj else {**obj, "iparams": {}})
    else:
        if not _plainly_valid(payload):
            return None
        try:
            encoded = compact(payload if "iparams" in payload else {**payload, "iparams": {}})
        except (TypeError, ValueError, RecursionError):
            return None
        if _LONG_DIGITS.search(encoded) and not _carried_exactly(payload):
            return None
    if len(encoded) > MAX_PAYLOAD_BYTES:
        return None
    source = obj if isinstance(payload, (bytes, bytearray)) else payload
    return source["event"], source["account_id"], encoded


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"""A run of 19 digits may be an integer beyond 64 bits (below -2**63 or above 2**64-1),
which the worker's JSON decoder would turn into a float: such payloads are checked exactly
(rare, so the hot path stays cheap)."""


def _carried_exactly(value: Any) -> bool:
    """True when every integer in `value` fits 64 bits (orjson refuses the others)."""
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _beyond_64_bits(envelope: dict[str, Any]) -> str:
    for name, value in envelope.items():
        if not _carried_exactly(value):
            return (f"payload.{name}: holds an integer beyond 64 bits, which handlers cannot "
                    "receive exactly; send it as a string")
    return "payload: holds an integer beyond 64 bits; send it as a string"


def _plainly_valid(obj: Any) -> bool:
    """The payload's shape with exact types, as the strict model demands."""
    if type(obj) is not dict or not _REQUIRED_KEYS <= obj.keys():
        return False
    if len(obj) > len(_PAYLOAD_KEYS) and not all(type(k) is str for k in obj):
        return False  # extra keys pass through, but JSON object keys are strings
    for name in ("account_id", "domain", "event"):
        value = obj.get(name)
        if type(value) is not str or not value:
            return False
    iparams = obj.get("iparams", {})
    data = obj.get("data")
    return (obj.get("region") in REGIONS and type(obj.get("timestamp")) is int
            and type(data) is dict and type(iparams) is dict
            and all(type(k) is str for k in data) and all(type(k) is str for k in iparams))



def _not_json(envelope: dict[str, Any], exc: BaseException) -> str:
    """Name the first field that does not encode, with the encoder's reason."""
    for name, value in envelope.items():
        try:
            compact(value)
        except (TypeError, ValueError, RecursionError) as field_exc:
            return f"payload.{name}: is not plain JSON ({_reason(field_exc)})"
    return f"payload: is not plain JSON ({_reason(exc)})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeEncodeError):
        return "a string holds a lone surrogate, which is not valid Unicode text"
    return str(exc)[:200]

