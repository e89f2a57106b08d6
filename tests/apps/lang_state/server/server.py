"""Hostile fixture for the admitted language: `plant` uses every admitted module the way a
handler may (configuring logging, defining enums and flags, filling an lru_cache, loading
zones) and tries the ways it may not (the functional Enum API, the real enum base through
mro(), dataclass and total_ordering on shared classes, wraps on a shared function);
`probe` reports what an invocation can see of all that.

tests/test_state_leaks.py dispatches probe, plant, probe to one worker: each refused attempt
must be refused, and the two probes must agree.
"""

import functools
import logging
import re
import uuid
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum, Flag, IntFlag, auto
from zoneinfo import ZoneInfo, available_timezones


class Perm(Flag):
    R = auto()
    W = auto()
    X = auto()


@dataclass(frozen=True)
class Stamp:
    zone: str
    tags: list = field(default_factory=list)


@functools.cache
def square(n):
    return n * n


def use_everything():
    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("app").setLevel(logging.DEBUG)
    logging.getLogger("app").debug("planted by account %s", "A")
    combined = [Perm(7), Perm.R | Perm.X, re.I | re.M | re.X]
    re.compile("planted", re.I | re.S)
    for n in range(100):
        square(n)
    zones = [ZoneInfo(key) for key in ("America/New_York", "Europe/Berlin", "Asia/Kolkata")]
    stamp = asdict(Stamp(str(zones[0]), ["planted"]))
    return [combined, stamp, len(available_timezones())]


def functional_enum():
    Enum("Planted", [("A", 1), ("__del__", lambda self: print("finalizer"))])


def enum_through_mro():
    real = type(re.I).mro()[5]
    real("Planted", [("A", 1), ("__getattr__", lambda self, name: name)])


ATTACKS = {
    "functional-enum": functional_enum,
    "real-enum-through-mro": enum_through_mro,
    "dataclass-on-uuid": lambda: dataclass(frozen=True)(uuid.UUID),
    "total-ordering-on-uuid": lambda: functools.total_ordering(uuid.UUID),
    "wraps-on-a-shared-function": lambda: functools.wraps(probe)(functools.reduce),
    "write-to-the-enum-base": lambda: setattr(Enum, "planted", 1),
}


def plant(payload):
    use_everything()
    outcome = {}
    for name, attack in ATTACKS.items():
        try:
            attack()
        except (TypeError, AttributeError):
            outcome[name] = "refused"
        else:
            outcome[name] = "planted"
    return outcome


def probe(payload):
    app = logging.getLogger("app")
    return {
        "account": payload["account_id"],
        "logging": [logging.getLogger().level, app.level, app.getEffectiveLevel(),
                    app.isEnabledFor(logging.DEBUG)],
        "enum-bases": [len(Enum), len(Flag), len(IntFlag), hasattr(Enum, "planted")],
        "flags": [str(Perm.R | Perm.W), str(re.I | re.M)],
        "cache": list(square.cache_info()),
        "dataclass": [is_dataclass(uuid.UUID), is_dataclass(Stamp)],
        "zone": str(ZoneInfo("Europe/Berlin")),
    }
