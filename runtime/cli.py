"""The `handlerbox` command: run an event against an app, validate an app.

Reads untrusted files (apps and payloads) through runtime.app and runtime.models. Exit status:
0 ok; 1 the handler failed (handler error, timeout, memory limit, crash, overloaded); 2 bad
input (bad manifest, compile errors, invalid payload, unknown event, bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_BAD_INPUT_OUTCOMES = ("invalid_payload", "not_subscribed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its options belong to the benchmark suite's own parser
        return _plugin("bench", argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handlerbox",
                                     description="Run untrusted event handlers in a sandbox.")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="dispatch one event to an app's handler")
    run.add_argument("app", type=Path, help="the app directory (manifest.json, server/)")
    run.add_argument("--event", required=True, help="the event name, e.g. onCallCreate")
    run.add_argument("--payload", type=Path,
                     help="payload JSON file (default: server/test_data/EVENT.json)")
    run.add_argument("--request-timeout", type=int, default=None,
                     help="the app's request timeout in seconds: 15, 20, 25 or 30")
    run.add_argument("--timeout", type=float, default=None,
                     help="override the execution timeout, in seconds")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    run.set_defaults(func=_run)

    validate = commands.add_parser("validate", help="report every problem in an app at once")
    validate.add_argument("app", type=Path)
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(func=_validate)

    doctor = commands.add_parser("doctor", help="which isolation layers workers get here")
    doctor.add_argument("--require", default="", help="comma-separated layers that must be "
                        "active (exit 1 otherwise)")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=_doctor)

    commands.add_parser("bench", help="run the benchmark suite (python -m handlerbox.benchmarks); "
                        "options after it are the suite's: handlerbox bench --quick")
    return parser


def _run(args: argparse.Namespace) -> int:
    from handlerbox.runtime.app import load_app, validate_app
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.errors import AppLoadError
    from handlerbox.runtime.payloads import EventPayload
    from handlerbox.sandbox.errors import CompileError, HandlerboxError

    try:
        app = load_app(args.app, request_timeout=args.request_timeout, timeout=args.timeout)
        if app.handler_for(args.event) is None:
            raise _BadInput(_no_handler(args.app, args.event, sorted(app.manifest.events)))
        payload_path = args.payload or app.test_payload_path(args.event)
        payload = EventPayload.parse_json(_read(payload_path), str(payload_path))
        if payload.event != args.event:
            raise _BadInput(f"{payload_path}: its event is {payload.event!r}, "
                            f"not {args.event!r}")
    except (CompileError, AppLoadError):
        return _report_problems(validate_app(args.app), args.json)
    except (HandlerboxError, _BadInput) as exc:
        return _report_problems(list(getattr(exc, "problems", None) or [str(exc)]), args.json,
                                code=getattr(exc, "code", "bad_input"))
    with Engine(workers=1, spares=0) as engine:
        result = engine.dispatch(app, payload)
    if args.json:
        print(result.model_dump_json())
    else:
        _print_result(result)
    if result.outcome == "ok":
        return EXIT_OK
    return EXIT_BAD_INPUT if result.outcome in _BAD_INPUT_OUTCOMES else EXIT_FAILED


def _print_result(result: Any) -> None:
    if result.logs:
        sys.stdout.write(result.logs if result.logs.endswith("\n") else result.logs + "\n")
    if result.outcome == "ok":
        print(json.dumps(result.value, indent=2, ensure_ascii=False))
    else:
        error = result.error
        print(f"{result.outcome}: {error.type}: {error.message}", file=sys.stderr)
        if error.traceback:
            print("Traceback (handler frames):\n" + error.traceback.rstrip(), file=sys.stderr)
    cpu = f"{result.cpu_ms:.2f} ms" if result.cpu_ms is not None else "-"
    rss = f"{result.max_rss_kb} KB" if result.max_rss_kb is not None else "-"
    print(f"REPORT outcome={result.outcome} duration={result.duration_ms:.2f} ms cpu={cpu} "
          f"max_rss={rss} limit={result.timeout_s:g} s", file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    from handlerbox.runtime.app import validate_app

    problems = validate_app(args.app)
    if not problems:
        if args.json:
            print(json.dumps({"ok": True, "problems": []}))
        else:
            print(f"{args.app}: ok")
        return EXIT_OK
    return _report_problems(problems, args.json)


def _doctor(args: argparse.Namespace) -> int:
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.isolation import LAYERS

    required = [name.strip() for name in args.require.split(",") if name.strip()]
    unknown = [name for name in required if name not in LAYERS]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        return _report_problems([f"--require: unknown isolation layer{plural} "
                                 f"{', '.join(unknown)}; the known layers are "
                                 f"{', '.join(LAYERS)}"], args.json, code="bad_input")
    with Engine(workers=1, spares=0) as engine:
        layers, start = engine.isolation(), engine.worker_start_ms()
    missing = [name for name in required if layers.get(name) != "active"]
    if args.json:
        print(json.dumps({"layers": layers, "worker_start_ms": start, "missing": missing}))
    else:
        for name, state in layers.items():
            print(f"{name:13s} {state}")
        print(f"worker start: {start['start_ms']:.2f} ms (isolation layers "
              f"{start['layers_ms']:.2f} ms)")
        for name in missing:
            print(f"required layer {name} is not active", file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK


def _report_problems(problems: list[str], as_json: bool, code: str = "invalid_app") -> int:
    if as_json:
        print(json.dumps({"ok": False, "code": code, "problems": problems}))
    else:
        for line in problems:
            print(line, file=sys.stderr)
    return EXIT_BAD_INPUT


def _plugin(name: str, argv: list[str]) -> int:
    """A command another part of the distribution provides through the `handlerbox.commands`
    entry points (the benchmark suite): the runtime never imports it directly."""
    from importlib.metadata import entry_points

    found = entry_points(group="handlerbox.commands", name=name)
    if not found:
        print(f"handlerbox {name}: not installed with this distribution", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(next(iter(found)).load()(argv))


def _no_handler(app: Path, event: str, events: list[str]) -> str:
    """Name the events the app handles, and the nearest one when the name looks mistyped."""
    import difflib

    text = (f"{app}/manifest.json: the app has no handler for {event} "
            f"(it handles {', '.join(events)})")
    nearest = difflib.get_close_matches(event, events, n=1, cutoff=0.6)
    return text + (f"; did you mean {nearest[0]}?" if nearest else "")


class _BadInput(Exception):
    """A CLI argument that does not fit the app."""


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4 << 20)
    except OSError as exc:
        raise _BadInput(f"{path}: cannot be read ({exc.strerror})") from None


if __name__ == "__main__":
    sys.exit(main())
