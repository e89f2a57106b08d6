"""Installation parameters: the app's declarations (config/iparams.json, untrusted: the app's
own file) and the check of one installation's values (untrusted: whoever installs the app).

    spec = load_iparams_spec(app_root)       # AppLoadError naming the file and key paths
    values = spec.check({"api_key": "..."})  # IparamsError, one problem per iparam name
    log.info("installed %s", spec.redact(values))          # secure values -> "********"
    text = scrub(handler_logs, spec.secure_values(values))  # secure values cut out of text

Secure iparams are the reason this module is careful: no message it builds ever quotes a
secure iparam's value, only its name. `check` is plain Python rather than a pydantic model
for that reason too (pydantic errors carry the input). `redact` is for structured output
(listings, results), `scrub` for free text (handler logs, error messages).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from handlerbox.runtime.errors import AppLoadError, IparamsError
from handlerbox.runtime.validation import (
    MAX_PROBLEMS,
    EdgeModel,
    json_type,
    load_json,
    short,
)
from handlerbox.runtime.validation import path as key_path
from handlerbox.runtime.validation import problems as schema_problems

IPARAMS_FILE = Path("config") / "iparams.json"
MAX_SPEC_BYTES = 256 * 1024
"""config/iparams.json is read only up to this size."""
MAX_IPARAMS = 100
"""At most this many iparams per app."""
MAX_OPTIONS = 500
"""At most this many options per dropdown, radio or multiselect."""
MAX_VALUE_CHARS = 8192
"""A string value (or option) is at most this many characters."""
MAX_VALUES_BYTES = 64 * 1024
"""One installation's iparams are at most this many bytes as compact JSON: they ride in
every event payload, which is at most 256 KB."""
REDACTED = "********"
MIN_SCRUB_CHARS = 4
"""Secure values shorter than this are not scrubbed from text: cutting every "ab" out of
a log would destroy it and hide little."""

IparamType = Literal["text", "paragraph", "number", "checkbox", "dropdown", "radio",
                     "multiselect", "email", "url", "phone_number", "date", "api_key"]
IPARAM_TYPES: tuple[str, ...] = get_args(IparamType)
STRING_TYPES = frozenset(("text", "paragraph", "email", "url", "phone_number", "date",
                          "api_key"))
"""Free-form string types: the only ones that may be secure. A number or a boolean cannot
be scrubbed from text, and choice values are public in iparams.json anyway."""
CHOICE_TYPES = frozenset(("dropdown", "radio", "multiselect"))
"""Types whose values come from `options` (and that must declare them)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]{3,30}", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)




# -- the declarations ----------------------------------------------------------------------

def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError("is not an iparam name: it must be a letter or '_', then letters, "
                         "digits or '_', at most 64 characters (it is used in "
                         "`<%= iparam.NAME %>` placeholders)")
    return name


def _check_text(text: str) -> str:
    if not _is_unicode(text):
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)")
    return text


_Text = Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARS),
                  AfterValidator(_check_text)]


class IparamDecl(EdgeModel):
    """One declared iparam. `secure` defaults to true for api_key and false otherwise."""

    type: IparamType
    display_name: _Text | None = None
    description: Annotated[str, Field(max_length=MAX_VALUE_CHARS),
                           AfterValidator(_check_text)] = ""
    required: bool = False
    secure: bool | None = None
    options: list[_Text] | None = Field(default=None, max_length=MAX_OPTIONS)
    default_value: Any = None

    @property
    def is_secure(self) -> bool:
        return self.secure if self.secure is not None else self.type == "api_key"

    @property
    def has_default(self) -> bool:
        return "default_value" in self.model_fields_set


_SPEC = TypeAdapter(dict[Annotated[str, AfterValidator(_check_name)], IparamDecl])


@dataclass(frozen=True)
class IparamsSpec:
    """The iparams an app declares, by name, in file order; empty when it has no
    config/iparams.json (then only `{}` passes `check`)."""

    declarations: Mapping[str, IparamDecl] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: Any, filename: str = str(IPARAMS_FILE)) -> IparamsSpec:
        """Validate decoded iparams.json, or raise AppLoadError naming the file and the key
        path of every problem."""
        try:
            decls = _SPEC.validate_python(obj, strict=True)
        except ValidationError as exc:
            problems = schema_problems(exc, "", {1: IparamDecl.model_fields})
            if type(obj) is not dict:
                problems = ["must be an object that maps each iparam name to its declaration"]
            _raise_load(filename, problems)
        problems = []
        if len(decls) > MAX_IPARAMS:
            problems.append(f"declares {len(decls)} iparams; at most {MAX_IPARAMS} are allowed")
        for name, decl in decls.items():
            problems += [f"{key_path('', [name, *loc])}: {text}" for loc, text in _semantics(decl)]
        if problems:
            _raise_load(filename, problems)
        return cls(decls)

    @classmethod
    def parse_json(cls, text: str | bytes, filename: str = str(IPARAMS_FILE)) -> IparamsSpec:
        """Decode and validate iparams.json's text (duplicate keys are errors too)."""
        try:
            obj = load_json(text, filename)
        except ValueError as exc:
            raise AppLoadError(str(exc)) from None
        return cls.parse(obj, filename)

    @cached_property
    def secure_names(self) -> frozenset[str]:
        return frozenset(n for n, d in self.declarations.items() if d.is_secure)

    def check(self, values: Any) -> dict[str, Any]:
        """An installation's iparams, checked and with defaults applied (a new dict, in
        declaration order); IparamsError lists every problem. Exact JSON types, no
        coercion; names the app does not declare are refused."""
        if type(values) is not dict:
            raise IparamsError(f"iparams: must be an object (got {json_type(values)})")
        problems = []
        unknown = [k for k in values if k not in self.declarations]
        if unknown:
            declared = ", ".join(self.declarations) or "none: the app declares no iparams"
            problems += [f"{_at(k)}: unknown iparam (declared: {declared})" for k in unknown]
        checked: dict[str, Any] = {}
        for name, decl in self.declarations.items():
            if name in values:
                value = values[name]
            elif decl.has_default:
                value = decl.default_value
            else:
                if decl.required:
                    problems.append(f"{_at(name)}: is required")
                continue
            problem = _check_value(decl, value, required=decl.required)
            if problem:
                problems.append(f"{_at(name)}: {problem}")
            else:
                checked[name] = list(value) if isinstance(value, list) else value
        if not problems:
            size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":"))
                       .encode("utf-8"))
            if size > MAX_VALUES_BYTES:
                problems.append(f"iparams: are {size} bytes as compact JSON, over the limit "
                                f"of {MAX_VALUES_BYTES} bytes")
        if problems:
            if len(problems) > MAX_PROBLEMS:
                more = len(problems) - MAX_PROBLEMS
                problems = [*problems[:MAX_PROBLEMS], f"... and {more} more problems"]
            raise IparamsError("\n".join(problems), problems)
        return checked

    def redact(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `values` fit to show: each secure value becomes "********". So does the
        value of any name the app does not declare, which may be a misspelt secure one."""
        return {k: REDACTED if k in self.secure_names or k not in self.declarations else v
                for k, v in values.items()}

    def secure_values(self, values: Mapping[str, Any]) -> list[str]:
        """The secure values present in `values`, to scrub from text with `scrub`."""
        return [v for k, v in values.items()
                if k in self.secure_names and isinstance(v, str) and v]

    def scrub(self, text: str, values: Mapping[str, Any]) -> str:
        """`text` with this installation's secure values replaced by "********"."""
        return scrub(text, self.secure_values(values))


def load_iparams_spec(app_root: Path) -> IparamsSpec:
    """The app's iparams from `app_root/config/iparams.json`; an empty spec when the file
    does not exist. AppLoadError names the file and every problem."""
    path = Path(app_root) / IPARAMS_FILE
    try:
        with path.open("rb") as f:
            text = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        return IparamsSpec()
    except OSError as exc:
        raise AppLoadError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(text) > MAX_SPEC_BYTES:
        raise AppLoadError(f"{path}: over {MAX_SPEC_BYTES} bytes")
    return IparamsSpec.parse_json(text, str(path))


# -- scrubbing text ------------------------------------------------------------------------

def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret of at least MIN_SCRUB_CHARS characters replaced by
    "********", longest first (so a secret inside another is not left half-cut), and also in
    its JSON-escaped forms (a handler may log `json.dumps(...)` of it)."""
    replace = _scrubber(secrets)
    return replace(text) if replace and text else text


def scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    """A JSON value (a handler's result, an error's details) with secrets scrubbed from
    every string in it, keys included; a new value when anything is scrubbed."""
    replace = _scrubber(secrets)
    if replace is None:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return replace(item)
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        return item

    return walk(value)


def _scrubber(secrets: Iterable[str]) -> Callable[[str], str] | None:
    """One compiled pattern for all the secrets' forms, or None when there is none."""
    forms: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= MIN_SCRUB_CHARS:
            forms.add(secret)
            forms.add(json.dumps(secret)[1:-1])
            forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    if not forms:
        return None
    pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
    return lambda text: pattern.sub(REDACTED, text)


# -- helpers -------------------------------------------------------------------------------

def _semantics(decl: IparamDecl) -> list[tuple[list[str], str]]:
    """What the schema cannot say: (key path under the iparam, problem) for each finding."""
    found: list[tuple[list[str], str]] = []
    if decl.type in CHOICE_TYPES:
        if not decl.options:
            found.append((["options"], f"is required for a {decl.type} and must not be empty"))
        elif len(set(decl.options)) != len(decl.options):
            found.append((["options"], "must not repeat a value"))
    elif decl.options is not None:
        found.append((["options"], f"is only for dropdown, radio and multiselect, not "
                                   f"{decl.type}"))
    if decl.secure and decl.type not in STRING_TYPES:
        found.append((["secure"], f"a {decl.type} cannot be secure (only free-form text "
                                  "types can: " + ", ".join(sorted(STRING_TYPES)) + ")"))
    if decl.has_default:
        if decl.is_secure:
            found.append((["default_value"], "a secure iparam takes no default (it would be "
                                             "public in the app's files)"))
        elif not found:
            problem = _check_value(decl, decl.default_value, required=False)
            if problem:
                found.append((["default_value"], problem))
    return found


def _check_value(decl: IparamDecl, value: Any, *, required: bool) -> str | None:
    """What is wrong with one value, or None. Never quotes a secure value."""
    got = "" if decl.is_secure else f" (got {short(value)})"
    kind = decl.type
    if kind == "checkbox":
        return None if type(value) is bool else f"must be a boolean (got {json_type(value)})"
    if kind == "number":
        if type(value) not in (int, float):
            return f"must be a number (got {json_type(value)})"
        return None if math.isfinite(value) else "must be a finite number"
    if kind == "multiselect":
        if type(value) is not list:
            return f"must be an array of options (got {json_type(value)})"
        if required and not value:
            return "is required (got an empty array)"
        options = decl.options or []
        bad = [v for v in value if type(v) is not str or v not in options]
        if bad:
            return f"must hold only options {_choices(options)} (got {short(bad[0])})"
        if len(set(value)) != len(value):
            return "must not repeat an option"
        return None
    if type(value) is not str:
        return f"must be a string (got {json_type(value)})"
    if not _is_unicode(value):
        return "must be valid Unicode text (it holds a lone surrogate)"
    if not value:
        return "is required (got an empty string)" if required else None
    if len(value) > MAX_VALUE_CHARS:
        return f"is {len(value)} characters, over the limit of {MAX_VALUE_CHARS}"
    if kind in ("dropdown", "radio"):
        options = decl.options or []
        return None if value in options else f"must be one of {_choices(options)}{got}"
    if kind == "email" and not _EMAIL.fullmatch(value):
        return f"must be an email address like name@example.com{got}"
    if kind == "url" and not _is_url(value):
        return f"must be an http or https URL with a host{got}"
    if kind == "phone_number" and not _PHONE.fullmatch(value):
        return f"must be a phone number: digits, optionally a leading '+', spaces, ( ) . -{got}"
    if kind == "date" and not _is_date(value):
        return f"must be a date as YYYY-MM-DD{got}"
    if kind != "paragraph" and ("\n" in value or "\r" in value):
        return "must be one line (a paragraph may hold line breaks)"
    return None


def _is_url(value: str) -> bool:
    if any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _is_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _choices(options: list[str], limit: int = 10) -> str:
    shown = ", ".join(short(o) for o in options[:limit])
    return shown + (f", ... ({len(options)} in all)" if len(options) > limit else "")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _at(name: Any) -> str:
    """`iparams.NAME` for a declared-looking name, else the name quoted and cut short."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return f"iparams.{name}"
    return f"iparams[{short(name)}]"


def _raise_load(filename: str, problems: list[str]) -> NoReturn:
    lines = [f"{filename}: {p}" for p in problems]
    raise AppLoadError("\n".join(lines), lines)
