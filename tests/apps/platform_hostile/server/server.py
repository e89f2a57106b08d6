"""platform_hostile: a hostile tenant's app (tests/test_platform_attacks.py). Each handler
tries something it must not be able to do and reports what happened; the tests check that
every attempt was refused and that the host and the worker are unharmed."""

import services
from services import MethodError, ServiceError, db, request, schedule, webhook

SERVICES = {"db": db, "request": request, "schedule": schedule, "webhook": webhook}


def run_ops(payload):
    """Each op is [service, operation, kwargs]: its value, or the ServiceError it raised."""
    out = []
    for service, operation, kwargs in payload["data"].get("ops", []):
        call = getattr(SERVICES[service], operation)
        try:
            out.append({"value": call(**kwargs)})
        except ServiceError as error:
            out.append({"status": error.status, "message": error.message})
    return out


KINDS = (("AttributeError", AttributeError), ("TypeError", TypeError),
         ("NameError", NameError), ("ValueError", ValueError), ("KeyError", KeyError),
         ("ServiceError", ServiceError))


def kind(error):
    for name, cls in KINDS:
        if isinstance(error, cls):
            return name
    return "Exception"


def attempt(name, action, results):
    try:
        got = action()
    except Exception as error:  # every refusal is fine; what is recorded is its kind
        results[name] = "refused: " + kind(error)
        return
    results[name] = "GOT " + repr(got)[:80]


def dunder(name):
    return "__" + name + "__"


def internals(payload):
    """Reach for the services module's internals in every way the language allows."""
    results = {}
    attempt("getattr services _transport", lambda: getattr(services, "_transport"), results)  # noqa: B009
    attempt("getattr services connect", lambda: getattr(services, "connect"), results)  # noqa: B009
    attempt("getattr services SIGNATURES", lambda: getattr(services, "SIGNATURES"), results)  # noqa: B009
    attempt("getattr db _transport", lambda: getattr(db, "_transport"), results)  # noqa: B009
    attempt("db.get closure", lambda: getattr(db.get, dunder("closure")), results)
    attempt("db.get globals", lambda: getattr(db.get, dunder("globals")), results)
    attempt("db.get code", lambda: getattr(db.get, dunder("code")), results)
    attempt("db.get wrapped", lambda: getattr(db.get, dunder("wrapped")), results)
    attempt("db dict", lambda: getattr(db, dunder("dict")), results)
    attempt("db class", lambda: getattr(db, dunder("class")), results)
    attempt("type(db)", lambda: type(db), results)
    attempt("type(services)", lambda: type(services), results)
    attempt("ServiceError init", lambda: getattr(ServiceError, dunder("init")), results)
    attempt("ServiceError subclasses", lambda: getattr(ServiceError, dunder("subclasses")),
            results)
    attempt("ServiceError mro", lambda: ServiceError.mro(), results)
    attempt("setattr db.get", lambda: setattr(db, "get", db.delete), results)
    attempt("setattr services.db", lambda: setattr(services, "db", None), results)
    attempt("setattr ServiceError", lambda: setattr(ServiceError, "status", 200), results)
    attempt("setattr MethodError", lambda: setattr(MethodError, "message", "x"), results)

    def rewrite_caught():
        try:
            db.get("no-such-key")
        except ServiceError as error:
            error.status = 200
            return error

    attempt("write caught ServiceError", rewrite_caught, results)

    class Sneaky(ServiceError):
        def reinit(self):
            super().__init__(200, "fine")

    # Called on the class, `self` is whatever the caller passes: super() is then bound to
    # an object that is not the handler's own.
    attempt("super init on db", lambda: Sneaky.reinit(db), results)
    attempt("super init on a host ServiceError",
            lambda: Sneaky.reinit(ServiceError(500, "x")), results)
    # Services still work afterwards, and still answer for this installation only.
    db.set("after-internals", {"ok": True})
    return {"results": results, "after": db.get("after-internals")}


class Cycle:
    pass


def bad_args(payload):
    """Service arguments that are not plain JSON: each must be a clear ServiceError."""
    cyclic = {"a": 1}
    cyclic["self"] = cyclic
    deep = []
    for _ in range(150):
        deep = [deep]
    cases = {
        "set": {1, 2},
        "big int": 2 ** 70,
        "negative big int": -(2 ** 64),
        "nan": float("nan"),
        "inf": float("inf"),
        "cyclic dict": cyclic,
        "ten MB string": "x" * (10 * 1024 * 1024),
        "bytes": b"abc",
        "lone surrogate": "\ud800",
        "object": Cycle(),
        "function": bad_args,
        "deep": deep,
        "non-string key": {1: "one"},
    }
    out = {}
    for name, value in cases.items():
        try:
            db.set("bad", value)
            out[name] = {"stored": True}
        except ServiceError as error:
            out[name] = {"status": error.status, "message": error.message[:300]}
    for name, call in (("context set", lambda: request.invoke("local", context={"x": {1}})),
                       ("schedule data nan", lambda: schedule.create(
                           "n", {"x": float("nan")}, schedule_at="2099-01-01T00:00:00Z")),
                       ("revoke url int", lambda: webhook.revoke(2 ** 80)),
                       ("key as int", lambda: db.get(12)),
                       ("too many args", lambda: db.get("a", "b"))):
        try:
            call()
            out[name] = {"stored": True}
        except ServiceError as error:
            out[name] = {"status": error.status, "message": error.message[:300]}
        except TypeError as error:
            out[name] = {"type_error": str(error)[:300]}
    out["still works"] = db.set("good", {"v": 1})
    return out


class Fake(ServiceError):
    def __init__(self):
        super().__init__(200, "fake success")


def own_service_error(payload):
    """A handler's own ServiceError subclass is just an exception of its own."""
    try:
        raise Fake()
    except ServiceError as error:
        caught = {"status": error.status, "message": error.message}
    db.set("own", caught)
    raise Fake()


def flood(payload):
    """Calls a cheap service past every refusal, until the deadline ends it."""
    made = 0
    while True:
        made += 1
        try:
            webhook.revoke("no-such-token")
        except ServiceError:
            pass


def later(store=db.set, error=ServiceError):
    """A generator whose `finally` makes a host call: it runs whenever the generator is
    finalized, with the service function it captured (the module namespace is gone by then)."""
    try:
        yield 1
    finally:
        try:
            store("planted-by-an-earlier-invocation", 1)
        except error:
            pass


class Holder:
    pass


def plant(payload):
    """Leaves suspended generators in reference cycles: only a GC pass frees them, and GC
    passes happen whenever the worker allocates enough, in whatever runs then."""
    for _ in range(payload["data"].get("n", 1)):
        holder = Holder()
        generator = later()
        next(generator)
        holder.generator = generator
        holder.itself = holder
    return "planted"


def innocent(payload):
    """Makes no host call at all; allocates enough to set off a GC pass."""
    junk = []
    for i in range(payload["data"].get("alloc", 200000)):
        junk.append([i])
    return len(junk)
