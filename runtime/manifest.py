"""manifest.json: which handler serves each event, the app's request timeout; untrusted input.

Strict and closed (runtime.validation.EdgeModel); `Manifest.parse` turns validation failures
into ManifestError, one problem per line, each naming its key path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from handlerbox.runtime.deadline import execution_timeout
from handlerbox.runtime.errors import ConfigError, ManifestError
from handlerbox.runtime.validation import EdgeModel, load_json, problems, short
from pydantic import AfterValidator, Field, ValidationError

_EVENT_NAME = re.compile(r"on[A-Z]\w*", re.ASCII)


def _check_event_name(name: str) -> str:
    if not _EVENT_NAME.fullmatch(name):
        raise ValueError("is not an event name: it must be 'on', a capital letter, then "
                         "letters, digits or '_' (like onCallCreate)")
    return name


def _check_handler_name(name: str) -> str:
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError("must be a Python identifier that does not start with '_' "
                         f"(got {short(name)})")
    return name


def _check_request_timeout(value: int | None) -> int | None:
    try:
        execution_timeout(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


class EventSpec(EdgeModel):
    """One subscription in manifest.json: the handler that serves the event."""

    handler: Annotated[str, AfterValidator(_check_handler_name)]


class Manifest(EdgeModel):
    """manifest.json: `{"events": {"onCallCreate": {"handler": "onCallCreateHandler"}}}`,
    plus an optional `request_timeout` (15, 20, 25 or 30 s) that sets the deadline."""

    events: dict[Annotated[str, AfterValidator(_check_event_name)], EventSpec] = Field(
        min_length=1)
    request_timeout: Annotated[int | None, AfterValidator(_check_request_timeout)] = None

    @classmethod
    def parse(cls, obj: Any, filename: str = "manifest.json") -> Manifest:
        """Validate a decoded manifest, or raise ManifestError naming the file and each
        problem's key path."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            known = {0: cls.model_fields, 2: EventSpec.model_fields}
            found = [f"{filename}: {p}" for p in problems(exc, "", known)]
            raise ManifestError("\n".join(found), found) from None

    @classmethod
    def parse_json(cls, text: str | bytes, filename: str = "manifest.json") -> Manifest:
        """Decode and validate manifest.json's text (duplicate keys are errors too)."""
        try:
            obj = load_json(text, filename)
        except ValueError as exc:
            raise ManifestError(str(exc)) from None
        return cls.parse(obj, filename)

