"""manifest.json: which handler serves each event, the app's request timeout; untrusted input.

Strict and closed (runtime.validation.EdgeModel); `Manifest.parse` turns validation failures
into ManifestError, one problem per line, each naming its key path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, ValidationError, model_validator

from handlerbox.runtime.catalogue import unknown_event
from handlerbox.runtime.deadline import execution_timeout
from handlerbox.runtime.errors import ConfigError, ManifestError
from handlerbox.runtime.validation import EdgeModel, load_json, problems, short

_EVENT_NAME = re.compile(r"(on|after)[A-Z]\w*", re.ASCII)


def _check_event_name(name: str) -> str:
    if not _EVENT_NAME.fullmatch(name):
        raise ValueError("is not an event name: it must be 'on' (or 'after'), a capital "
                         "letter, then letters, digits or '_' (like onCallCreate)")
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


Handler = Annotated[str, AfterValidator(_check_handler_name)]


class EventSpec(EdgeModel):
    """One subscription in manifest.json: the handler that serves the event; `custom` for
    an event outside the catalogue (runtime.catalogue)."""

    handler: Handler
    custom: bool = False


class FunctionSpec(EdgeModel):
    """A server method the front end may invoke (SMI); its handler is the function of the
    method's name unless `handler` names another."""

    handler: Handler | None = None


class RequestSpec(EdgeModel):
    """A request template the app uses, defined in config/requests.json."""


class Manifest(EdgeModel):
    """manifest.json:

        {"events": {"onCallCreate": {"handler": "onCallCreateHandler"}},
         "functions": {"lookupCaller": {}},        server methods (optional)
         "requests": {"postToChat": {}},            request templates used (optional)
         "request_timeout": 20}                     15, 20, 25 or 30 s (optional)

    Every event must be in the catalogue of known events or say `"custom": true`."""

    events: dict[Annotated[str, AfterValidator(_check_event_name)], EventSpec] = Field(
        default_factory=dict)
    functions: dict[Handler, FunctionSpec] = Field(default_factory=dict)
    requests: dict[str, RequestSpec] = Field(default_factory=dict, max_length=100)
    request_timeout: Annotated[int | None, AfterValidator(_check_request_timeout)] = None

    @model_validator(mode="after")
    def _known_events(self) -> Self:
        if not self.events and not self.functions:
            raise ValueError("an app must subscribe to at least one event or offer a function")
        wrong = [f"events.{name}: {why}" for name, spec in self.events.items()
                 if not spec.custom and (why := unknown_event(name))]
        if wrong:
            raise ValueError("; ".join(wrong))
        return self

    def function_handler(self, method: str) -> str | None:
        spec = self.functions.get(method)
        return None if spec is None else spec.handler or method

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

