"""Shared fixtures: hostile and plain fixture apps live in tests/apps/<name>/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).parent / "apps"
EXAMPLES = Path(__file__).parent.parent / "examples"


def make_payload(event: str = "onCallCreate", account_id: str = "82918",
                 **data: Any) -> dict[str, Any]:
    return {"account_id": account_id, "domain": "sample.freshcaller.com", "event": event,
            "region": "US", "timestamp": 1583839672, "data": data, "iparams": {}}


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from handlerbox import Engine

    with Engine(workers=2) as shared:
        yield shared
