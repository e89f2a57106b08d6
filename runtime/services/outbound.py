"""Wiring of the outbound-request service (request templates over httpx) into an engine: the
operator's network policy from EngineConfig, and each call's app context; no untrusted input.
"""

from __future__ import annotations

from collections.abc import Callable

from handlerbox.runtime.app import App
from handlerbox.runtime.config import EngineConfig
from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.http import AppContext, NetworkPolicy, RequestService
from handlerbox.runtime.services.installations import Installation
from handlerbox.runtime.services.templates import TemplatePolicy

Resolver = Callable[[Scope], "tuple[App, Installation | None] | None"]


def network_policy(config: EngineConfig) -> NetworkPolicy:
    return NetworkPolicy(allow_networks=list(config.allow_networks),
                         allow_http_hosts=frozenset(config.allow_http_hosts))


def template_policy(config: EngineConfig) -> TemplatePolicy:
    return TemplatePolicy(frozenset(h.lower() for h in config.allow_http_hosts))


def request_service(config: EngineConfig, resolve: Resolver) -> RequestService:
    """The `request` service: each call's templates and timeout come from the app's loaded
    version, its iparams from the installation (none when the app is not installed)."""

    def app_context(scope: Scope) -> AppContext:
        found = resolve(scope)
        if found is None:
            raise ServiceError(404, f"the app {scope.app} is not loaded")
        app, installation = found
        return AppContext(templates=app.templates,
                          iparams=installation.iparams if installation else {},
                          request_timeout=float(app.request_timeout or 15))

    return RequestService(network_policy(config), app_context)
