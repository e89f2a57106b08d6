"""Soak: T seconds of mixed traffic with faults over many apps, then the engine's invariants.

    python -m benchmarks.soak --seconds T [--apps 20] [--workers 2] [--threads 8] [--quick]
                              [--json] [--async-tasks 2] [--max-requests N] [--seed 0] ...

No untrusted input (the apps are our own fixtures). The apps are copies of tests/apps/soak_app
and tests/apps/soak_forever in a temporary directory, each loaded separately (its own key, so
its own workers), in three groups:

    regular   soak_app copies, default deadline: normal (90%), handler errors (3%),
              memory bombs (2%: "a" * 10**10 against the worker's RLIMIT_AS)
    forever   soak_forever copies loaded with a short override (--timeout, 0.3 s): timeouts (3%)
    victims   soak_app copies that get only the spinning handler: the 2% killed from outside

Requests come from --threads threads (engine.dispatch) and --async-tasks coroutines on one
event loop thread (await engine.dispatch_async), at most --slow-slots of the timeouts and kills
at once. Every payload carries a sequence number that the handlers echo, so a caller that got
another caller's result is caught.

Memory. The soak's own bookkeeping stays small whatever T (per-caller counters, an array of
normal latencies, a pid bitmap, the live process set), so host RSS growth is the engine's.

Then it checks one_result_each, outcomes, mix, no_orphans, host_rss and p99_normal (the last
two reported but not enforced with --quick), and exits 1 if a check fails.

One job a module:

    classes    the request classes (mix, events, groups, outcomes), their schedule, payloads
    apps       the fixture apps copied into their three groups and loaded
    traffic    the callers, on threads and on an event loop, and the slow-slot gate
    tally      each caller's counts, each result checked against its own request
    injector   SIGKILLs a victim app's worker from outside while its handler spins
    processes  the engine's processes (orphans after close) and the host's RSS
    findings   what a run found, every caller merged, and the figures derived from it
    checks     the end-of-run checks
    report     the report: figures and checks as JSON, and as text
    runner     run(): sets it all up, runs the traffic, closes the engine
    __main__   the command line
"""

from handlerbox.benchmarks.soak.classes import MIX
from handlerbox.benchmarks.soak.report import describe
from handlerbox.benchmarks.soak.runner import run

__all__ = ["MIX", "describe", "run"]
