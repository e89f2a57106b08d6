"""Workarounds for known Engine faults, each used only when the fault shows and to be deleted
once the engine is fixed; no untrusted input beyond what the routes validated.

Engine.install builds its onAppInstall candidate without created_at/updated_at, so it always
raises InstallationError "installation.created_at: is required" (tests/test_platform_events.py
INSTALL_BUG). `install` calls Engine.install and, on exactly that error, does the same steps
through the Engine's public parts: the same checks, the same onAppInstall payload, the same
allow/block rules (runtime.events.setup_answer), then Engine.installs.add.
"""

from __future__ import annotations

import time
from typing import Any

from handlerbox.runtime.app import App
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.errors import (
    InstallationError,
    InstallationExists,
    SetupBlocked,
    SetupFailed,
)
from handlerbox.runtime.events import envelope, setup_answer
from handlerbox.runtime.services.installations import Installation

INSTALL_FAULT = "installation.created_at: is required"


def install(engine: Engine, app: App, account_id: str, *, domain: str, region: str,
            iparams: dict[str, Any]) -> Installation:
    """Engine.install, or its steps when the engine shows the created_at fault."""
    try:
        return engine.install(app, account_id, domain=domain, region=region, iparams=iparams)
    except InstallationError as exc:
        if INSTALL_FAULT not in exc.problems:
            raise
    if engine.installation(app.name, account_id) is not None:
        raise InstallationExists(f"{app.name} is already installed in {account_id}")
    checked = app.check_iparams(iparams)
    now = time.time()
    candidate = Installation.build(app=app.name, account_id=account_id, version=app.version,
                                   domain=domain, region=region, iparams=checked,
                                   created_at=now, updated_at=now)
    if app.handler_for("onAppInstall") is not None:
        result = engine.dispatch(app, envelope(candidate, "onAppInstall",
                                               {"app": app.name, "version": app.version}))
        if not result.ok:
            assert result.error is not None
            raise SetupFailed(f"{app.name}'s onAppInstall failed ({result.outcome}: "
                              f"{result.error.type}: {result.error.message[:200]}); the action "
                              "was refused")
        answer = setup_answer(result.value)
        if answer.malformed:
            raise SetupFailed(f"{app.name}'s onAppInstall gave a malformed answer: "
                              f"{answer.malformed}")
        if not answer.allow:
            raise SetupBlocked(answer.message)
    return engine.installs.add(app.name, account_id, version=app.version, domain=domain,
                               region=region, iparams=checked)
