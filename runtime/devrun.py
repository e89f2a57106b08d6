"""`handlerbox run`: simulate one event of any kind against an app, as a developer would.

Reads untrusted files (the app, payloads, bodies) through runtime.app and runtime.payloads.
The app gets a store kept between runs (`<app>/.handlerbox/store.sqlite3`, or --store), so
a developer can watch its data change; --reset-store starts it afresh. The payload's account
is installed with the payload's iparams on the fly (no set-up event: run onAppInstall
itself to see that), so services scoped to the installation work.

    product event      --event onTicketCreate        server/test_data/onTicketCreate.json
    set-up event       --event onAppInstall           prints allow, or block and the message
    server method      --method lookupCaller          server/test_data/lookupCaller.json
    external event     --event onExternalEvent --body FILE [--header "Name: value"]
    scheduled event    --event onScheduledEvent [--schedule NAME]   a stored schedule, now
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from handlerbox.runtime.app import App, load_app, validate_app
from handlerbox.runtime.catalogue import EXTERNAL_EVENT, SCHEDULED_EVENT, SETUP_EVENTS
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.errors import AppLoadError
from handlerbox.runtime.events import setup_answer
from handlerbox.runtime.payloads import EventPayload
from handlerbox.runtime.results import InvocationResult
from handlerbox.sandbox.errors import CompileError, HandlerboxError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_BAD_INPUT_OUTCOMES = ("invalid_payload", "not_subscribed")


class BadInput(Exception):
    """A command-line argument or file that does not fit the app."""


def add_parser(commands: Any) -> None:
    run = commands.add_parser("run", help="simulate one event of any kind against an app")
    run.add_argument("app", type=Path, help="the app directory (manifest.json, server/)")
    kind = run.add_mutually_exclusive_group(required=True)
    kind.add_argument("--event", help="the event name, e.g. onCallCreate or onAppInstall")
    kind.add_argument("--method", help="a server method (SMI) the manifest's functions name")
    run.add_argument("--payload", type=Path, help="payload JSON file (default: "
                     "server/test_data/EVENT.json, or METHOD.json for --method)")
    run.add_argument("--body", type=Path, help="the request body for onExternalEvent")
    run.add_argument("--header", action="append", default=[],
                     help='a request header for onExternalEvent, "Name: value" (repeatable)')
    run.add_argument("--schedule", help="for onScheduledEvent: fire this stored schedule now")
    run.add_argument("--store", type=Path, help="the SQLite store (default: "
                     "APP/.handlerbox/store.sqlite3, kept between runs)")
    run.add_argument("--reset-store", action="store_true", help="start with an empty store")
    run.add_argument("--allow-http-localhost", action="store_true",
                     help="let request templates use http to localhost (development only)")
    run.add_argument("--request-timeout", type=int, default=None,
                     help="the app's request timeout in seconds: 15, 20, 25 or 30")
    run.add_argument("--timeout", type=float, default=None,
                     help="override the execution timeout, in seconds")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    run.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from handlerbox.runtime.cli import report_problems

    try:
        load_app(args.app, request_timeout=args.request_timeout, timeout=args.timeout)
    except (CompileError, AppLoadError):
        return report_problems(validate_app(args.app), args.json)
    except HandlerboxError as exc:
        return report_problems(list(getattr(exc, "problems", None) or [str(exc)]), args.json,
                               code=exc.code)
    settings: dict[str, Any] = {"workers": 1, "database": str(_store(args))}
    if args.allow_http_localhost:
        from handlerbox.runtime.services.http import NetworkPolicy

        dev = NetworkPolicy.development()  # loopback reachable, http to localhost
        settings.update(allow_networks=[str(n) for n in dev.allow_networks],
                        allow_http_hosts=sorted(dev.allow_http_hosts))
    with Engine(spares=0, scheduler=False, schedule_min_lead_seconds=0, **settings) as engine:
        try:
            app = engine.load_app(args.app, request_timeout=args.request_timeout,
                                  timeout=args.timeout)
            result, note = _simulate(engine, app, args)
        except (HandlerboxError, BadInput) as exc:
            return report_problems(list(getattr(exc, "problems", None) or [str(exc)]),
                                   args.json, code=getattr(exc, "code", "bad_input"))
    if args.json:
        print(result.model_dump_json())
    else:
        _print_result(result, note)
    if result.outcome == "ok":
        return EXIT_OK
    return EXIT_BAD_INPUT if result.outcome in _BAD_INPUT_OUTCOMES else EXIT_FAILED


def _store(args: argparse.Namespace) -> Path:
    store: Path = args.store or args.app / ".handlerbox" / "store.sqlite3"
    if args.reset_store:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    return store


def _simulate(engine: Engine, app: App, args: argparse.Namespace
              ) -> tuple[InvocationResult, str]:
    if args.method:
        if app.handler_for_method(args.method) is None:
            raise BadInput(_nearest(args.app, "server method", args.method,
                                    sorted(app.manifest.functions)))
        payload = _payload(args, app, args.method)
        _ensure_installed(engine, app, payload)
        result = engine.invoke_method(app, payload.account_id, args.method, payload.data)
        return result, f"status {result.status}"
    event = args.event
    if app.handler_for(event) is None:
        raise BadInput(_nearest(args.app, "handler for", event, sorted(app.manifest.events)))
    if event == SCHEDULED_EVENT and args.schedule:
        installation = _installation(engine, app, args, event)
        return engine.fire_schedule(app, installation.account_id, args.schedule), ""
    if event == EXTERNAL_EVENT and args.body:
        return _external(engine, app, args), ""
    payload = _payload(args, app, event)
    _ensure_installed(engine, app, payload)
    result = engine.dispatch(app, payload)
    if event in SETUP_EVENTS and event != "afterAppUpdate" and result.ok:
        answer = setup_answer(result.value)
        note = ("allow" if answer.allow else f"malformed: {answer.malformed}"
                if answer.malformed else f"block: {answer.message}")
        return result, note
    return result, ""


def _external(engine: Engine, app: App, args: argparse.Namespace) -> InvocationResult:
    installation = _installation(engine, app, args, EXTERNAL_EVENT)
    body = _read(args.body)
    headers = {}
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadInput(f'--header {line!r}: write it as "Name: value"')
        headers[name.strip()] = value.strip()
    token = engine.webhooks.generate(installation.scope)
    try:
        result = engine.external_event(token, body, headers)
    finally:
        engine.webhooks.revoke(token)
    assert result is not None
    return result


def _installation(engine: Engine, app: App, args: argparse.Namespace, event: str) -> Any:
    """The installation an external or scheduled event runs for: the test payload's account,
    else the app's first stored installation (from earlier runs)."""
    if args.payload or app.test_payload_path(event).exists():
        return _ensure_installed(engine, app, _payload(args, app, event))
    stored = engine.installations(app.name)
    if not stored:
        raise BadInput(f"no {app.test_payload_path(event)} and no installation in the store "
                       "yet: run another event first, or give --payload")
    return stored[0]


def _payload(args: argparse.Namespace, app: App, name: str) -> EventPayload:
    path = args.payload or app.test_payload_path(name)
    payload = EventPayload.parse_json(_read(path), str(path))
    if args.event and payload.event != args.event:
        raise BadInput(f"{path}: its event is {payload.event!r}, not {args.event!r}")
    return payload


def _ensure_installed(engine: Engine, app: App, payload: EventPayload) -> Any:
    """The payload's account, installed with the payload's iparams (updated if they changed)."""
    found = engine.installs.get(app.name, payload.account_id)
    if found is None:
        return engine.installs.add(app.name, payload.account_id, version=app.version,
                                   domain=payload.domain, region=payload.region,
                                   iparams=app.check_iparams(payload.iparams))
    if found.iparams != payload.iparams or found.version != app.version:
        return engine.installs.update(app.name, payload.account_id, version=app.version,
                                      iparams=app.check_iparams(payload.iparams))
    return found


def _nearest(app: Path, what: str, name: str, known: list[str]) -> str:
    """Name what the app has, and the nearest one when the name looks mistyped."""
    import difflib

    text = (f"{app}/manifest.json: the app has no {what} {name} "
            f"(it has: {', '.join(known) or 'none'})")
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return text + (f"; did you mean {nearest[0]}?" if nearest else "")


def _print_result(result: InvocationResult, note: str) -> None:
    if result.logs:
        sys.stdout.write(result.logs if result.logs.endswith("\n") else result.logs + "\n")
    if result.outcome == "ok":
        import json

        print(json.dumps(result.value, indent=2, ensure_ascii=False))
    else:
        error = result.error
        assert error is not None
        print(f"{result.outcome}: {error.type}: {error.message}", file=sys.stderr)
        if error.traceback:
            print("Traceback (handler frames):\n" + error.traceback.rstrip(), file=sys.stderr)
    if note:
        print(note.upper() if note in ("allow",) else note, file=sys.stderr)
    for call in result.host_calls:
        print(f"CALL {call.service}.{call.operation} status={call.status} "
              f"duration={call.duration_ms:.2f} ms", file=sys.stderr)
    cpu = f"{result.cpu_ms:.2f} ms" if result.cpu_ms is not None else "-"
    rss = f"{result.max_rss_kb} KB" if result.max_rss_kb is not None else "-"
    print(f"REPORT outcome={result.outcome} duration={result.duration_ms:.2f} ms cpu={cpu} "
          f"max_rss={rss} limit={result.timeout_s:g} s", file=sys.stderr)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4 << 20)
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror})") from None



