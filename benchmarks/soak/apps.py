"""The soak's apps: copies of the fixture apps in three groups, each loaded on its own.

No untrusted input. Each copy is loaded separately (its own key, so its own workers):

    regular   soak_app copies, default deadline: normal requests, handler errors, memory bombs
    forever   soak_forever copies loaded with a short timeout override: timeouts
    victims   soak_app copies that get only the spinning handler: the kills from outside
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from handlerbox import App, Engine

ROOT = Path(__file__).resolve().parents[2]
SOAK_APP = ROOT / "tests" / "apps" / "soak_app"
FOREVER_APP = ROOT / "tests" / "apps" / "soak_forever"

Member: TypeAlias = "tuple[int, App]"
"""An app and its index among all the soak's apps (its payloads' account id)."""


def copy_apps(directory: Path, apps: int) -> dict[str, list[Path]]:
    """`apps` app directories in three groups: forever (a fifth), victims (a tenth), regular."""
    if apps < 3:
        raise ValueError("the soak needs at least 3 apps (regular, forever, victim)")
    forever = max(1, apps // 5)
    victims = max(1, apps // 10)
    plan = ([("forever", FOREVER_APP)] * forever + [("victims", SOAK_APP)] * victims
            + [("regular", SOAK_APP)] * (apps - forever - victims))
    groups: dict[str, list[Path]] = {"regular": [], "forever": [], "victims": []}
    for i, (group, source) in enumerate(plan):
        target = directory / f"soak{i:02d}_{group}"
        shutil.copytree(source, target)
        groups[group].append(target)
    return groups


def load_apps(engine: Engine, directory: Path, apps: int,
              timeout: float) -> dict[str, list[Member]]:
    """Copy `apps` apps into `directory` and load each, the forever ones with `timeout`."""
    groups: dict[str, list[Member]] = {}
    index = 0
    for group, dirs in copy_apps(directory, apps).items():
        groups[group] = []
        for path in dirs:
            app = engine.load_app(path, timeout=timeout if group == "forever" else None)
            groups[group].append((index, app))
            index += 1
    return groups
