"""The `logging` module handlers import: loggers that write records into their invocation.

Not the real logging module: its manager, handlers, levels and `lastResort` are process-wide
state that every invocation in a worker would share (a logger configured by one invocation
would still be configured in the next). Here each invocation has its own LogRecords, made by
the runner, and its own `logging` facade built from it on first import (namespace.py): its
loggers, their levels and `basicConfig` live and die with the invocation.

Each record goes two places: a structured record {"level", "logger", "message"} (capped by
count and bytes: see LogRecords) and a line "LEVEL:logger:message" in the captured logs, the
format logging's basicConfig uses. Levels work as in logging: the root logger starts at
WARNING, so `info` and `debug` are dropped until `basicConfig(level=...)` or `setLevel`.

Formatting (`msg % args`, str()) runs handler code on the handler's behalf, as print does;
a failure in it never raises (logging does not either) and records a note instead. Records
hold exact strs only, whatever the handler passed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

CRITICAL, ERROR, WARNING, INFO, DEBUG, NOTSET = 50, 40, 30, 20, 10, 0
LEVEL_NAMES = {CRITICAL: "CRITICAL", ERROR: "ERROR", WARNING: "WARNING", INFO: "INFO",
               DEBUG: "DEBUG", NOTSET: "NOTSET"}
_LEVELS_BY_NAME = {name: level for level, name in LEVEL_NAMES.items()}

MAX_RECORDS = 1000
"""Records kept per invocation; later ones are counted, and a last record says how many."""

MAX_NAME_CHARS = 200
MAX_MESSAGE_CHARS = 8192
"""Characters kept of a logger name and of a message (a traceback included)."""

MARKER_LOGGER = "handlerbox"
"""The logger name of the record that says how many records were dropped."""


def plain_text(value: Any) -> str:
    """`str(value)` as an exact str: a handler's `__str__` may return a str subclass, whose
    methods are handler code; str.__str__ copies it into a plain str."""
    text = value if type(value) is str else str(value)
    return text if type(text) is str else str.__str__(text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def _level(value: Any) -> int:
    """A level as logging takes it: an int, or a level name such as "INFO"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"level must be an int or a level name, not {type(value).__name__}")
    if isinstance(value, str):
        name = plain_text(value)
        if name not in _LEVELS_BY_NAME:
            raise ValueError(f"unknown level: {_clip(name, 40)!r}")
        return _LEVELS_BY_NAME[name]
    return int.__int__(value)  # an exact int, whatever int subclass the handler passed


class LogRecords:
    """One invocation's loggers and the records they wrote."""

    def __init__(self, write_line: Callable[[str], None] | None = None,
                 max_records: int = MAX_RECORDS, max_bytes: int = 64 * 1024,
                 describe: Callable[[BaseException], str] | None = None) -> None:
        self.write_line = write_line
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.describe = describe
        self.records: list[dict[str, str]] = []
        self.size = 0
        self.dropped = 0
        self.loggers: dict[str, Logger] = {}
        self._root: Logger | None = None

    @property
    def root(self) -> Logger:
        """Made on first use: most invocations never import logging."""
        if self._root is None:
            self._root = Logger("root", self, WARNING)
        return self._root

    def logger(self, name: Any = None) -> Logger:
        if name is None:
            return self.root
        if not isinstance(name, str):
            raise TypeError("a logger name must be a string")
        key = plain_text(name)  # an exact str key: no handler __hash__/__eq__ in the dict
        if key == "root":
            return self.root
        if key not in self.loggers:
            self.loggers[key] = Logger(key, self)
        return self.loggers[key]

    def effective_level(self, logger: Logger) -> int:
        """The first level set on the logger or its dotted parents, else the root's."""
        if logger.level:
            return logger.level
        parts = logger.name.split(".")
        for end in range(len(parts) - 1, 0, -1):
            parent = self.loggers.get(".".join(parts[:end]))
            if parent is not None and parent.level:
                return parent.level
        return self.root.level

    def emit(self, level: int, logger: str, message: str) -> None:
        name = LEVEL_NAMES.get(level, f"Level {level}")
        logger = _clip(logger, MAX_NAME_CHARS)
        message = _clip(message, MAX_MESSAGE_CHARS)
        if self.write_line is not None:
            self.write_line(f"{name}:{logger}:{message}\n")
        size = len(name) + len(logger.encode("utf-8", "surrogatepass")) + len(
            message.encode("utf-8", "surrogatepass")) + 40  # the JSON around it
        if len(self.records) >= self.max_records or self.size + size > self.max_bytes:
            self.dropped += 1
            return
        self.size += size
        self.records.append({"level": name, "logger": logger, "message": message})

    def result(self) -> tuple[dict[str, str], ...]:
        """The records, and one more that says how many were dropped, if any were."""
        if not self.dropped:
            return tuple(self.records)
        return (*self.records, {"level": "WARNING", "logger": MARKER_LOGGER,
                                "message": f"[log records truncated: {self.dropped} more "
                                           "records dropped]"})


class Logger:
    """A logger of one invocation (getLogger(name) returns the same one for a name)."""

    __slots__ = ("_level", "_name", "_records")

    def __init__(self, name: str, records: LogRecords, level: int = NOTSET) -> None:
        self._name = name
        self._records = records
        self._level = level

    @property
    def name(self) -> str:
        return self._name

    @property
    def level(self) -> int:
        return self._level

    def setLevel(self, level: Any) -> None:
        self._level = _level(level)

    def getEffectiveLevel(self) -> int:
        return self._records.effective_level(self)

    def isEnabledFor(self, level: Any) -> bool:
        return _level(level) >= self.getEffectiveLevel()

    def getChild(self, suffix: Any) -> Logger:
        base = "" if self is self._records.root else self._name + "."
        return self._records.logger(base + plain_text(suffix))

    def log(self, level: Any, msg: Any, *args: Any, exc_info: Any = False,
            stack_info: bool = False, stacklevel: int = 1, extra: Any = None) -> None:
        """`stack_info`, `stacklevel` and `extra` are accepted and ignored."""
        level = _level(level)
        if level < self.getEffectiveLevel():
            return
        text = _message(msg, args)
        if exc_info:
            text += self._exception_text(exc_info)
        self._records.emit(level, self._name, text)

    def _exception_text(self, exc_info: Any) -> str:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is None or self._records.describe is None:
            return ""
        return "\n" + self._records.describe(exc)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(INFO, msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(WARNING, msg, *args, **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(ERROR, msg, *args, **kwargs)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(ERROR, msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(CRITICAL, msg, *args, **kwargs)


def _message(msg: Any, args: tuple[Any, ...]) -> str:
    """`msg % args` as logging makes it (one dict argument fills %(name)s fields)."""
    try:
        text = plain_text(msg)
        if not args:
            return text
        if len(args) == 1 and type(args[0]) is dict and args[0]:
            return plain_text(text % args[0])
        return plain_text(text % args)
    except Exception as exc:  # logging prints "--- Logging error ---" and goes on
        kind = type(exc).__name__
        head = msg if type(msg) is str else f"(a {type(msg).__name__})"
        return f"{head} [the message could not be formatted: {kind}]"


def exports(records: LogRecords) -> dict[str, Any]:
    """The names of the `logging` facade of one invocation, bound to its records."""
    root = records.root

    def getLogger(name: Any = None) -> Logger:
        return records.logger(name)

    def basicConfig(**kwargs: Any) -> None:
        """Sets the root level when `level` is given; the rest (format, handlers, filename,
        stream) is ignored: records go to the invocation, not to files or streams."""
        if kwargs.get("level") is not None:
            root.setLevel(kwargs["level"])

    def log(level: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
        root.log(level, msg, *args, **kwargs)

    return {
        "getLogger": getLogger, "basicConfig": basicConfig, "log": log,
        "debug": root.debug, "info": root.info, "warning": root.warning,
        "error": root.error, "exception": root.exception, "critical": root.critical,
        "CRITICAL": CRITICAL, "ERROR": ERROR, "WARNING": WARNING, "INFO": INFO,
        "DEBUG": DEBUG, "NOTSET": NOTSET,
    }


def outside_an_invocation() -> dict[str, Any]:
    """The names of the shared `facade("logging")`, which no handler receives (each import
    gets its invocation's own, see namespace.py): the same names, with functions that refuse,
    so that it holds no loggers or levels for anyone to share."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("logging is only available while a handler runs")

    return {name: value if type(value) is int else refuse
            for name, value in exports(LogRecords()).items()}


NAMES = frozenset(exports(LogRecords()))
