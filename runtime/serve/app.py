"""The HTTP routes of `handlerbox serve`, a thin adapter over the Engine's public API; every
request is untrusted input (bodies are capped and validated in runtime.serve.body).

    GET    /healthz, /readyz, /metrics
    GET    /apps                                          POST /apps (archive, or JSON path)
    GET    /apps/{app}                                    DELETE /apps/{app}
    POST   /apps/{app}/versions/{version}/activate
    GET    /apps/{app}/installations                      POST (install)
    GET    /apps/{app}/installations/{account}            PATCH|PUT (update), DELETE
    POST   /apps/{app}/events[?wait=true]                 202 queued, or the result
    POST   /apps/{app}/installations/{account}/methods/{method}
    POST   /webhooks/{token}                              (no bearer: the token authenticates)
    GET    /invocations/{id}

    app = create_app(ServeConfig.parse({...}))          # an ASGI app; its lifespan owns the
    uvicorn.run(app)                                     # engine (or pass engine=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlerbox.runtime.app import App
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.errors import PayloadError
from handlerbox.runtime.payloads import EventPayload, payload_json_fast
from handlerbox.runtime.results import InvocationResult
from handlerbox.runtime.serve import body as bodies
from handlerbox.runtime.serve.appstore import LoadOptions
from handlerbox.runtime.serve.auth import BearerAuth
from handlerbox.runtime.serve.config import ServeConfig
from handlerbox.runtime.serve.door import FrontDoor, new_id
from handlerbox.runtime.serve.metrics import CONTENT_TYPE, RequestMetrics
from handlerbox.runtime.serve.queue import Job
from handlerbox.runtime.serve.responses import (
    ApiError,
    JSONResponse,
    api_error_response,
    error_response,
    from_engine_error,
    invocation_body,
    outcome_status,
    retry_headers,
)
from handlerbox.sandbox.errors import HandlerboxError

ARCHIVE_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/gzip",
                           "application/x-gzip", "application/x-tar", "application/x-gtar",
                           "application/octet-stream"})
INVOCATION_ID = re.compile(r"[0-9a-f]{32}")
MAX_TOKEN_CHARS = 256


class Api:
    """The endpoints; each is a thin step from HTTP to one Engine (or FrontDoor) call."""

    def __init__(self, door: FrontDoor) -> None:
        self.door, self.config = door, door.config

    # -- health ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        ready = self.door.ready
        return JSONResponse({"ready": ready, "state": self.door.state},
                            status_code=200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(self.door.metrics.render(), media_type=CONTENT_TYPE)

    # -- apps -----------------------------------------------------------------------------

    async def list_apps(self, request: Request) -> Response:
        store = self.door.apps
        found = await run_in_threadpool(lambda: [store.describe(n) for n in store.names()])
        return JSONResponse({"apps": [a for a in found if a is not None]})

    async def upload_app(self, request: Request) -> Response:
        self.door.check_open()
        kind = bodies.media_type(request)
        store = self.door.apps
        if kind == "application/json" or kind.endswith("+json"):
            spec = bodies.parse_model(bodies.AppPathBody, await bodies.read_json_object(
                request, self.config.max_json_bytes))
            options = LoadOptions(spec.request_timeout, spec.timeout)
            described = await self._engine_call(store.load_path, spec.path, options)
        elif kind in ARCHIVE_TYPES:
            options = _load_options(request)
            data = await bodies.read_body(request, self.config.max_archive_bytes)
            described = await self._engine_call(store.upload, data,
                                                request.query_params.get("name"), options)
        else:
            raise ApiError(415, "unsupported_media_type", "upload an app as application/zip or "
                           "application/gzip (a tar.gz), or name a server path as "
                           "application/json")
        return JSONResponse(described, status_code=201)

    async def get_app(self, request: Request) -> Response:
        name = request.path_params["app"]
        found = await run_in_threadpool(self.door.apps.describe, name)
        if found is None:
            raise ApiError(404, "app_not_found", f"no app called {clip(name)}")
        return JSONResponse(found)

    async def delete_app(self, request: Request) -> Response:
        name = request.path_params["app"]
        await run_in_threadpool(self.door.apps.unload, name)
        return JSONResponse({"name": name, "loaded": False})

    async def activate_version(self, request: Request) -> Response:
        self.door.check_open()
        params = request.path_params
        return JSONResponse(await self._engine_call(self.door.apps.activate, params["app"],
                                                    params["version"]))

    # -- installations --------------------------------------------------------------------

    async def list_installations(self, request: Request) -> Response:
        app = self._app(request)
        found = await run_in_threadpool(self.door.engine.installations, app.name)
        return JSONResponse({"installations": [i.redacted(app.iparams).to_json()
                                               for i in found]})

    async def install(self, request: Request) -> Response:
        self.door.check_open()
        app = self._app(request)
        spec = bodies.parse_model(bodies.InstallBody, await bodies.read_json_object(
            request, self.config.max_json_bytes))
        installation = await self._engine_call(
            self.door.engine.install, app, spec.account_id, domain=spec.domain,
            region=spec.region, iparams=spec.iparams)
        return JSONResponse({"installation": installation.redacted(app.iparams).to_json()},
                            status_code=201)

    async def get_installation(self, request: Request) -> Response:
        app = self._app(request)
        found = self.door.engine.installation(app.name, request.path_params["account"])
        if found is None:
            raise _no_installation(app.name, request.path_params["account"])
        return JSONResponse({"installation": found.redacted(app.iparams).to_json()})

    async def update_installation(self, request: Request) -> Response:
        self.door.check_open()
        app, account = self._app(request), request.path_params["account"]
        spec = bodies.parse_model(bodies.UpdateBody, await bodies.read_json_object(
            request, self.config.max_json_bytes))
        installation, result = await self._engine_call(
            self.door.engine.update_installation, app, account, iparams=spec.iparams)
        return JSONResponse({"installation": installation.redacted(app.iparams).to_json(),
                             "result": self._setup_result(result)})

    async def uninstall(self, request: Request) -> Response:
        self.door.check_open()
        app, account = self._app(request), request.path_params["account"]
        result = await self._engine_call(self.door.engine.uninstall, app, account)
        return JSONResponse({"uninstalled": True, "result": self._setup_result(result)})

    # -- invocations ----------------------------------------------------------------------

    async def post_event(self, request: Request) -> Response:
        door = self.door
        door.check_open()
        app = self._app(request)
        wait = _flag(request, "wait")
        bodies.require_json(request)
        event, account_id, encoded = self._event(await bodies.read_body(
            request, self.config.max_event_bytes))
        if app.handler_for(event) is None:
            door.metrics.rejected.labels("not_subscribed").inc()
            raise ApiError(404, "unknown_event", f"{app.name} does not subscribe to "
                           f"{clip(event)} (it subscribes to "
                           f"{', '.join(sorted(app.manifest.events)) or 'none'})")
        job = Job(new_id(), app.name, encoded, account_id, event, durable=not wait)
        if not wait:
            await door.accept(job)
            href = str(request.url_for("get_invocation", id=job.id))
            return JSONResponse({"id": job.id, "state": "queued", "href": href},
                                status_code=202, headers={"Location": href})
        job.waiter = asyncio.get_running_loop().create_future()
        door.enqueue(job)
        result, status = await job.waiter
        return self._answer(job.id, "product", result, status)

    async def invoke_method(self, request: Request) -> Response:
        door = self.door
        door.check_open()
        app, account = self._app(request), request.path_params["account"]
        method = request.path_params["method"]
        if app.handler_for_method(method) is None:
            raise ApiError(404, "unknown_method", f"{app.name} has no server method "
                           f"{clip(method)} (it offers "
                           f"{', '.join(sorted(app.manifest.functions)) or 'none'})")
        if door.engine.installation(app.name, account) is None:
            raise _no_installation(app.name, account)
        data = await bodies.read_json_object(request, self.config.max_method_bytes)
        engine = door.engine
        found = await door.invoke("method", lambda: engine.invoke_method_async(
            app, account, method, data))
        assert found is not None
        invocation_id, result, status = found
        return self._answer(invocation_id, "method", result, status)

    async def webhook(self, request: Request) -> Response:
        door = self.door
        door.check_open()
        token = request.path_params["token"]
        body = await bodies.read_body(request, self.config.max_webhook_bytes)
        headers = dict(request.headers.items())
        engine = door.engine
        found = None
        if len(token) <= MAX_TOKEN_CHARS:
            found = await door.invoke("external", lambda: engine.external_event_async(
                token, body, headers))
        if found is None:
            raise ApiError(404, "unknown_webhook", "no webhook has this address (unknown or "
                           "revoked)")
        invocation_id, result, status = found
        return JSONResponse(invocation_body(invocation_id, "external", result, status,
                                            public=True),
                            status_code=status, headers=retry_headers(
                                status, self.config.retry_after_seconds))

    async def get_invocation(self, request: Request) -> Response:
        invocation_id = request.path_params["id"]
        door = self.door
        if INVOCATION_ID.fullmatch(invocation_id):
            if invocation_id in door.running:
                return JSONResponse({"id": invocation_id, "state": "running"})
            recent = door.journal.recent(invocation_id)
            if recent is not None:
                return Response(recent, media_type="application/json")
            found = await door.journal.read(lambda: door.store.get(invocation_id))
            if found is not None:
                return JSONResponse(found)
        raise ApiError(404, "invocation_not_found", "no invocation has this id (unknown, or "
                       f"its result is older than {self.config.results_ttl_seconds:g} s)")

    # -- shared ---------------------------------------------------------------------------

    def _app(self, request: Request) -> App:
        name = request.path_params["app"]
        app = self.door.engine.app(name)
        if app is None:
            raise ApiError(404, "app_not_found", f"no app called {clip(name)} is loaded")
        return app

    def _event(self, body: bytes) -> tuple[str, str, bytes]:
        """(event, account_id, compact JSON) of a product event, or 400/422."""
        fast = payload_json_fast(body)
        if fast is not None:
            return fast
        obj = bodies.parse_json(body)
        try:
            checked = EventPayload.parse(obj)
        except PayloadError as exc:
            self.door.metrics.rejected.labels("invalid_payload").inc()
            raise ApiError(422, exc.code, exc.problems[0], exc.problems) from None
        return checked.event, checked.account_id, checked.json_bytes()

    def _answer(self, invocation_id: str, kind: str, result: InvocationResult,
                status: int) -> Response:
        return JSONResponse(invocation_body(invocation_id, kind, result, status),
                            status_code=status,
                            headers=retry_headers(status, self.config.retry_after_seconds))

    def _setup_result(self, result: InvocationResult | None) -> dict[str, Any] | None:
        """Record a set-up handler's result (afterAppUpdate, onAppUninstall) like any other."""
        if result is None:
            return None
        invocation_id, status = new_id(), outcome_status(result)
        self.door.finish(invocation_id, "setup", result, status, time.time(), 0.0,
                         time.monotonic())
        return invocation_body(invocation_id, "setup", result, status)

    async def _engine_call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking Engine call (it may run a set-up handler) on a thread; its errors
        become their HTTP statuses."""
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        except HandlerboxError as exc:
            raise from_engine_error(exc) from None


def create_app(config: ServeConfig, engine: Engine | None = None) -> Starlette:
    """The ASGI app. Its lifespan starts the FrontDoor (and an Engine, unless one is given)
    and drains it at shutdown. Mounted inside another app, run its lifespan there too:
    `lifespan=lambda _: served.router.lifespan_context(served)`."""
    door = FrontDoor(config, engine)
    api = Api(door)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await door.start()
        try:
            yield
        finally:
            await door.aclose()

    public = frozenset({"/healthz", "/readyz"} | ({"/metrics"} if config.metrics_public
                                                   else set()))
    served = Starlette(
        routes=_routes(api),
        middleware=[Middleware(RequestMetrics, metrics=door.metrics),
                    Middleware(BearerAuth, tokens=config.token_bytes(),
                               public_paths=public, public_prefixes=("/webhooks/",))],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                            HandlerboxError: _engine_error, Exception: _internal_error},
        lifespan=lifespan)
    served.state.door = door
    return served


def _routes(api: Api) -> list[Route]:
    return [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/apps", api.list_apps, methods=["GET"]),
        Route("/apps", api.upload_app, methods=["POST"]),
        Route("/apps/{app}", api.get_app, methods=["GET"]),
        Route("/apps/{app}", api.delete_app, methods=["DELETE"]),
        Route("/apps/{app}/versions/{version}/activate", api.activate_version, methods=["POST"]),
        Route("/apps/{app}/installations", api.list_installations, methods=["GET"]),
        Route("/apps/{app}/installations", api.install, methods=["POST"]),
        Route("/apps/{app}/installations/{account}", api.get_installation, methods=["GET"]),
        Route("/apps/{app}/installations/{account}", api.update_installation,
              methods=["PATCH", "PUT"]),
        Route("/apps/{app}/installations/{account}", api.uninstall, methods=["DELETE"]),
        Route("/apps/{app}/events", api.post_event, methods=["POST"]),
        Route("/apps/{app}/installations/{account}/methods/{method}", api.invoke_method,
              methods=["POST"]),
        Route("/webhooks/{token}", api.webhook, methods=["POST"]),
        Route("/invocations/{id}", api.get_invocation, methods=["GET"], name="get_invocation"),
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: "no such endpoint", 405: f"{request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HandlerboxError)
    return api_error_response(from_engine_error(exc))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed on this request; the "
                          "server log has the details")


def _load_options(request: Request) -> LoadOptions:
    query = request.query_params
    try:
        request_timeout = int(query["request_timeout"]) if "request_timeout" in query else None
        timeout = float(query["timeout"]) if "timeout" in query else None
    except ValueError:
        raise ApiError(422, "invalid_query", "request_timeout and timeout must be numbers"
                       ) from None
    if timeout is not None and not 0 < timeout <= bodies.MAX_TIMEOUT_OVERRIDE:
        raise ApiError(422, "invalid_query", "timeout must be more than 0 and at most "
                       f"{bodies.MAX_TIMEOUT_OVERRIDE:g} seconds")
    return LoadOptions(request_timeout, timeout)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_query", f"{name} must be true or false")
    return value in ("true", "1")


def _no_installation(app: str, account: str) -> ApiError:
    return ApiError(404, "installation_not_found", f"{app} is not installed in {clip(account)}")


def clip(text: str, limit: int = 100) -> str:
    """A name from the request, cut short for a message."""
    return text if len(text) <= limit else text[:limit] + "..."


