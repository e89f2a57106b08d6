"""Hostile fixture: `plant` tries every known way to leave state in the worker's shared
objects for the next invocation; `probe` reports what an invocation sees of them.

tests/test_state_leaks.py dispatches probe (account B), plant (account A), probe (account B)
to one worker: each plant must be refused, and the two probes must agree.
"""

import collections
import json
import re
import typing
import urllib.parse
import uuid


class Reinit(re.error):
    """`reinit` called on the class (Reinit.reinit(Reinit, ...)) binds super() to the class:
    `super().__init__` is then re.error's unbound __init__, which sets msg/pattern/pos on
    whatever it is given."""

    def reinit(self, target, *args):
        super().__init__(target, *args)


class NewId(uuid.UUID):
    def reinit(self, target, *args):
        super().__init__(target, *args)


class Getter(property):
    def reinit(self, target, *args):
        super().__init__(target, *args)


def spy(*args, **kwargs):
    return "spied"


def facade_subclass():
    class Swap(type(json)):
        def reinit(self, target, *args):
            super().__init__(target, *args)

    Swap.reinit(Swap, json, "json", {"dumps": spy})


ATTACKS = {
    "json-facade-reinit": facade_subclass,
    "json-facade-stash": lambda: setattr(json, "stash", ["account A"]),
    "json-dumps-swap": lambda: setattr(json, "dumps", spy),
    "uuid-namespace-reinit": lambda: NewId.reinit(NewId, uuid.NAMESPACE_DNS,
                                                  "12345678123456781234567812345678"),
    "property-getter-rebind": lambda: Getter.reinit(
        Getter, type(urllib.parse.urlparse("http://h/")).hostname, spy),
    "class-attributes-through-exception-init": lambda: Reinit.reinit(
        Reinit, json.JSONDecodeError, "account A"),
    # A cached alias forwards attribute writes to its origin, collections.abc.Mapping.
    "cached-typing-alias-fields": lambda: Reinit.reinit(
        Reinit, typing.Mapping[str, int], "account A"),
    "chainmap-register": lambda: collections.ChainMap.register(dict),
    "typing-mapping-register": lambda: typing.Mapping.register(int),
    "register-through-getattr": lambda: getattr(collections.ChainMap, "regis" + "ter")(list),
}


def plant(payload):
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
    parsed = urllib.parse.urlparse("http://user@example.com:8080/path")
    alias = typing.Mapping[str, int]
    return {
        "account": payload["account_id"],
        "json": json.dumps({"a": [1, 2]}),
        "json-names": [hasattr(json, n) for n in ("stash", "dumps", "loads")],
        "uuid": str(uuid.NAMESPACE_DNS),
        "hostname": parsed.hostname,
        "json-error-class": [hasattr(json.JSONDecodeError, n) for n in ("msg", "pattern")],
        "alias": [repr(alias), hasattr(alias, "msg"), hasattr(typing.Mapping, "pattern")],
        "chainmap": [isinstance(x, collections.ChainMap) for x in ({}, [], 1)],
        "mapping": [isinstance(x, typing.Mapping) for x in ({}, [], 1)],
    }
