"""The timer/thread family is refused at compile time, by name, with its hint and location.

Handlers cannot start threads or timers: the platform has no setTimeout/setInterval, and a
thread or timer would outlive the invocation. Every way of reaching the family by import
(and `time.sleep`, the one member that hides in an allowed module) is a compile error that
names the module, points at the statement, and says what to do instead.
"""

from __future__ import annotations

import pytest

from handlerbox.sandbox import CompileError, HandlerError, Violation, compile_handler, run_source

PHRASE = ("is not available in handlers: they cannot start threads or timers"
          " (the platform has no setTimeout/setInterval)")
HINT = "Use a scheduled event to run code later."

# (module as imported, the name the message must give, a name to import from it)
FAMILY = [
    ("threading", "threading", "Thread"),
    ("_thread", "_thread", "start_new_thread"),
    ("asyncio", "asyncio", "sleep"),
    ("sched", "sched", "scheduler"),
    ("signal", "signal", "alarm"),
    ("select", "select", "select"),
    ("selectors", "selectors", "DefaultSelector"),
    ("socket", "socket", "socket"),
    ("subprocess", "subprocess", "run"),
    ("multiprocessing", "multiprocessing", "Process"),
    ("concurrent", "concurrent", "futures"),
    ("concurrent.futures", "concurrent", "ThreadPoolExecutor"),
    ("queue", "queue", "Queue"),
    ("atexit", "atexit", "register"),
    ("weakref", "weakref", "finalize"),
    ("faulthandler", "faulthandler", "dump_traceback_later"),
]

# The offending statement always sits on line 3, after a docstring and an allowed import.
TEMPLATE = ('"""A handler."""\nimport json\n{stmt}\n'
            "def h(payload):\n    return json.dumps(payload)\n")


def _import_cases() -> list[object]:
    cases = []
    for module, name, member in FAMILY:
        alias = module.replace(".", "_").strip("_") + "_alias"
        for form, stmt in (
            ("import", f"import {module}"),
            ("from", f"from {module} import {member}"),
            ("import-as", f"import {module} as {alias}"),
        ):
            source = TEMPLATE.format(stmt=stmt)
            cases.append(pytest.param(source, name, 3, 0, id=f"{form}-{module}"))
    return cases


# Statements elsewhere in the module: inside functions, classes and blocks (column != 0).
NESTED = [
    pytest.param("def h(payload):\n    import threading\n    return 1\n",
                 "threading", 2, 4, id="in-function"),
    pytest.param("def h(payload):\n    if payload:\n        from asyncio import sleep\n"
                 "    return 1\n", "asyncio", 3, 8, id="in-if-in-function"),
    pytest.param("class Jobs:\n    import sched\ndef h(payload):\n    return 1\n",
                 "sched", 2, 4, id="in-class-body"),
    pytest.param("try:\n    import multiprocessing.pool\nexcept Exception:\n    pass\n"
                 "def h(payload):\n    return 1\n", "multiprocessing", 2, 4,
                 id="dotted-in-try"),
    pytest.param("import json, socket\ndef h(payload):\n    return 1\n",
                 "socket", 1, 0, id="second-of-two-names"),
    pytest.param("from concurrent import futures\ndef h(payload):\n    return 1\n",
                 "concurrent", 1, 0, id="from-concurrent-import-futures"),
    pytest.param("import asyncio.tasks as tasks\ndef h(payload):\n    return 1\n",
                 "asyncio", 1, 0, id="dotted-submodule-as"),
]

SLEEP = [
    pytest.param("import time\ndef h(payload):\n    time.sleep(1)\n    return 1\n",
                 3, 4, id="import-time-call-sleep"),
    pytest.param("import time as t\ndef h(payload):\n    t.sleep(1)\n    return 1\n",
                 3, 4, id="import-time-as-t-call-sleep"),
    pytest.param("from time import sleep\ndef h(payload):\n    return 1\n",
                 1, 0, id="from-time-import-sleep"),
    pytest.param("from time import sleep as nap\ndef h(payload):\n    return 1\n",
                 1, 0, id="from-time-import-sleep-as"),
    pytest.param("from time import time, sleep\ndef h(payload):\n    return time()\n",
                 1, 0, id="from-time-import-time-and-sleep"),
    pytest.param("import time\nwait = time.sleep\ndef h(payload):\n    return 1\n",
                 2, 7, id="sleep-referenced-not-called"),
    pytest.param("import time\ndef h(payload):\n    return [time.sleep(0) for _ in range(3)]\n",
                 3, 12, id="sleep-in-comprehension"),
]


def violations_of(source: str) -> tuple[Violation, ...]:
    with pytest.raises(CompileError) as info:
        compile_handler(source, "server.py")
    return info.value.violations


@pytest.mark.parametrize(("source", "name", "line", "col"), _import_cases() + NESTED)
def test_family_import_is_refused_with_hint_and_location(
        source: str, name: str, line: int, col: int) -> None:
    found = violations_of(source)
    violation = found[0]
    assert (violation.filename, violation.line, violation.col) == ("server.py", line, col)
    assert violation.message == f"{name} {PHRASE}"
    assert violation.hint == HINT
    # `import _thread` also binds a reserved `_` name; any extra finding is on the same line
    assert all(v.line == line and PHRASE not in v.message for v in found[1:])


@pytest.mark.parametrize(("source", "line", "col"), SLEEP)
def test_time_sleep_is_refused_with_hint_and_location(source: str, line: int, col: int) -> None:
    (violation,) = violations_of(source)
    assert (violation.line, violation.col) == (line, col)
    assert violation.message == f"time.sleep {PHRASE}"
    assert PHRASE in violation.message
    assert violation.hint == HINT


def test_str_of_violation_is_one_exact_line() -> None:
    (violation,) = violations_of(TEMPLATE.format(stmt="import threading"))
    assert str(violation) == (
        "server.py:3:0: threading is not available in handlers: they cannot start threads or"
        " timers (the platform has no setTimeout/setInterval). Use a scheduled event to run"
        " code later.")


def test_filename_is_the_one_given() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler("import threading\n", "jobs/worker.py")
    assert str(info.value.violations[0]).startswith("jobs/worker.py:1:0: threading ")


MANY = (
    "import json\n"                        # 1
    "import threading\n"                   # 2
    "import time\n"                        # 3
    "from asyncio import sleep\n"          # 4
    "import os\n"                          # 5
    "def h(payload):\n"                    # 6
    "    import socket, queue\n"           # 7
    "    time.sleep(1)\n"                  # 8
    "    return json.dumps(payload)\n"     # 9
    "from weakref import finalize\n"       # 10
)


def test_every_violation_is_reported_at_once_in_line_order() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler(MANY, "server.py")
    found = [(v.line, v.col, v.message.split(" ")[0]) for v in info.value.violations]
    assert found == [
        (2, 0, "threading"),
        (4, 0, "asyncio"),
        (5, 0, "import"),  # "import of os is not allowed in handlers"
        (7, 4, "socket"),
        (7, 4, "queue"),
        (8, 4, "time.sleep"),
        (10, 0, "weakref"),
    ]
    timer = [v for v in info.value.violations if v.line != 5]
    assert all(PHRASE in v.message and v.hint == HINT for v in timer)
    assert str(info.value) == "\n".join(str(v) for v in info.value.violations)


DECORATED = (
    "import time\n"                        # 1
    "def later(f):\n"                      # 2
    "    return f\n"                       # 3
    "@later(time.sleep)\n"                 # 4
    "def h(payload):\n"                    # 5
    "    import threading\n"               # 6
    "    return 1\n"                       # 7
)


def test_violations_in_decorators_come_before_the_body_in_line_order() -> None:
    lines = [(v.line, v.message.split(" ")[0]) for v in violations_of(DECORATED)]
    assert lines == [(4, "time.sleep"), (6, "threading")]


@pytest.mark.parametrize("expr", [
    pytest.param('getattr(time, "sleep")', id="getattr"),
    pytest.param('getattr(time, "sl" + "eep")', id="getattr-computed-name"),
    pytest.param('getattr(time, "sleep", None)', id="getattr-with-default-then-call"),
])
def test_sleep_reached_at_run_time_is_refused(expr: str) -> None:
    source = f"import time\ndef h(payload):\n    nap = {expr}\n    nap(1)\n    return 'slept'\n"
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", {})
    assert info.value.type_name in ("AttributeError", "TypeError")


def test_time_time_and_friends_work() -> None:
    source = (
        "import time\n"
        "from time import monotonic, time as now\n"
        "def h(payload):\n"
        "    t = time.time()\n"
        "    return [isinstance(t, float), t > 1.6e9, now() >= t,\n"
        "            monotonic() <= monotonic(), time.gmtime(0).tm_year]\n"
    )
    assert run_source(source, "h", {}) == ([True, True, True, True, 1970], "")
