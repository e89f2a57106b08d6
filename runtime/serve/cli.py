"""`handlerbox serve`'s command line: flags and a JSON config file become a ServeConfig; no
untrusted input (the operator's own settings). Kept light: uvicorn and Starlette load only
when the command runs.

    handlerbox serve --config serve.json
    handlerbox serve --token-file tokens.txt --database hb.sqlite3 --data-dir apps/ \\
                     --app examples/call_logger --port 8080 --workers 4

Tokens come from the config file (`tokens`), --token-file (one a line) or the environment
variable HANDLERBOX_SERVE_TOKENS (comma-separated), never from a flag (a flag shows in `ps`).
Exit: 0 after a clean stop (SIGTERM or Ctrl-C), 1 when the server cannot start, 2 bad
settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TOKENS_ENV = "HANDLERBOX_SERVE_TOKENS"

_FLAGS = {"host": "host", "port": "port", "database": "database", "data_dir": "data_dir",
          "queue_size": "queue_size", "consumers": "consumers",
          "grace": "shutdown_grace_seconds", "results_ttl": "results_ttl_seconds",
          "handler_logs": "handler_logs"}


def add_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve apps over HTTP: uploads, installations, "
                                "events, server methods, webhooks, /metrics")
    serve.add_argument("--config", type=Path, help="a JSON file of settings (ServeConfig); "
                       "flags override it")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks one)")
    serve.add_argument("--database", help="the SQLite file for installations, data, results "
                       "and accepted events (default: temporary)")
    serve.add_argument("--data-dir", help="where uploaded app versions live (default: "
                       "temporary)")
    serve.add_argument("--app", action="append", default=[], help="an app folder to load at "
                       "start (repeatable)")
    serve.add_argument("--app-root", action="append", default=[], help="a folder POST /apps may "
                       "load server-local apps from (repeatable; default: none)")
    serve.add_argument("--workers", type=int, help="the engine's worker budget")
    serve.add_argument("--queue-size", type=int, help="product events that may wait")
    serve.add_argument("--consumers", type=int, help="tasks feeding queued events to the engine")
    serve.add_argument("--grace", type=float, help="seconds queued events get to run at "
                       "SIGTERM before they are left for the next start")
    serve.add_argument("--results-ttl", type=float, help="seconds results stay readable")
    serve.add_argument("--handler-logs", choices=["attach", "separate", "off"])
    serve.add_argument("--token-file", type=Path, help="bearer tokens, one a line")
    serve.add_argument("--cluster-redis", help="enqueue product events to the cluster on this "
                       "Redis (`handlerbox worker` hosts run them) instead of in process")
    serve.add_argument("--cluster-shards", type=int, help="the cluster's shard count (the "
                       "same as its hosts')")
    serve.add_argument("--cluster-namespace", help="the cluster's Redis key prefix")
    serve.add_argument("--metrics-public", action="store_true", default=None,
                       help="serve /metrics without a token")
    serve.set_defaults(func=run)


def settings(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    """The settings the flags, the config file and the environment make together."""
    from handlerbox.runtime.serve.config import ServeConfig

    found: dict[str, Any] = ServeConfig.read(args.config) if args.config else {}
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            found[key] = value
    if args.metrics_public:
        found["metrics_public"] = True
    if args.app:
        found["apps"] = [*found.get("apps", []), *args.app]
    if args.app_root:
        found["app_roots"] = [*found.get("app_roots", []), *args.app_root]
    if args.workers is not None:
        found["engine"] = {**found.get("engine", {}), "workers": args.workers}
    if args.cluster_redis:
        cluster = {**found.get("cluster", {}), "redis_url": args.cluster_redis}
        for flag, key in (("cluster_shards", "shards"), ("cluster_namespace", "namespace")):
            if getattr(args, flag) is not None:
                cluster[key] = getattr(args, flag)
        found["cluster"] = cluster
    tokens = list(found.get("tokens", []))
    if args.token_file:
        try:
            lines = args.token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            from handlerbox.runtime.errors import ConfigError

            raise ConfigError(f"{args.token_file}: cannot be read ({exc.strerror})") from None
        tokens += [line.strip() for line in lines if line.strip()]
    tokens += [t.strip() for t in environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    found["tokens"] = tokens
    return found


def run(args: argparse.Namespace) -> int:
    from handlerbox.runtime.errors import ConfigError
    from handlerbox.runtime.serve.config import ServeConfig

    try:
        config = ServeConfig.parse(settings(args, dict(os.environ)))
    except ConfigError as exc:
        print(f"handlerbox serve: {exc}", file=sys.stderr)
        if "serve.tokens" in str(exc):
            print(f"give bearer tokens in the config file, --token-file or {TOKENS_ENV}",
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    from handlerbox.runtime.serve.main import serve

    return serve(config)
