"""The `handlerbox` command: run (runtime.devrun), validate, doctor, bench.

Reads untrusted files (apps and payloads) through runtime.app and runtime.payloads. Exit:
0 ok; 1 the handler failed (handler error, timeout, memory limit, crash, overloaded); 2 bad
input (bad manifest, compile errors, invalid payload, unknown event, bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from handlerbox.runtime import devrun

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


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

    devrun.add_parser(commands)
    __import__("handlerbox.runtime.serve", fromlist=["add_parser"]).add_parser(commands)
    __import__("handlerbox.runtime.cluster.worker", fromlist=["add_parser"]).add_parser(commands)

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


def _validate(args: argparse.Namespace) -> int:
    from handlerbox.runtime.app import validate_app

    problems = validate_app(args.app)
    if not problems:
        if args.json:
            print(json.dumps({"ok": True, "problems": []}))
        else:
            print(f"{args.app}: ok")
        return EXIT_OK
    return report_problems(problems, args.json)


def _doctor(args: argparse.Namespace) -> int:
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.isolation import LAYERS

    required = [name.strip() for name in args.require.split(",") if name.strip()]
    unknown = [name for name in required if name not in LAYERS]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        return report_problems([f"--require: unknown isolation layer{plural} "
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


def report_problems(problems: list[str], as_json: bool, code: str = "invalid_app") -> int:
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





if __name__ == "__main__":
    sys.exit(main())
