"""The machine and software a run measured: CPU, cores, kernel, Python, package versions, commit.

No untrusted input. Everything here is recorded in the results so numbers are never compared
across machines or engine versions without seeing it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from handlerbox.benchmarks.payloads import ROOT

PACKAGES = ("handlerbox", "pydantic", "RestrictedPython", "psutil", "multiprocess", "pebble",
            "matplotlib", "tqdm")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def virtualised() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " hypervisor" in line for line in f)
    except OSError:
        return False


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def commit() -> dict[str, Any]:
    """The git commit of the work tree, and whether runtime/ or sandbox/ differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "engine_modified": bool(git("status", "--porcelain", "runtime", "sandbox"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "engine_modified": None}


def describe() -> dict[str, Any]:
    memory = None
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "cpu_model": cpu_model(), "cores": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)), "virtualised": virtualised(),
        "memory_gib": memory, "kernel": platform.release(), "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": versions(), **commit(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews every number."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_note(start: list[float], end: list[float]) -> str:
    """A warning line when other work was running as the benchmark started, else ''. (The
    end value is recorded too, but includes the suite's own load of about one CPU.)"""
    if start[0] <= 1.5:
        return ""
    return (f"WARNING: the machine was busy (1-minute load average {start[0]:g} at the start, "
            f"{end[0]:g} at the end); other work skews these numbers")


def one_line(info: dict[str, Any]) -> str:
    vm = ", VM" if info.get("virtualised") else ""
    return (f"{info['cpu_model']}, {info['cores']} cores{vm}, {info['memory_gib']} GiB, "
            f"Linux {info['kernel']}, Python {info['python']}, handlerbox "
            f"{info['packages'].get('handlerbox')} @ {info.get('commit')}"
            + (" (engine modified)" if info.get("engine_modified") else ""))
