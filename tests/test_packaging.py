"""The distribution: one import name, no generic top-level packages, the CLI and its plugins.

Builds the wheel the way `pip install` would and reads its file list and entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=300,
                   capture_output=True)
    (built,) = out.glob("handlerbox-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_everything_under_the_one_name_handlerbox(
        wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"handlerbox"}
    names = set(wheel.namelist())
    for folder in ("runtime", "sandbox", "benchmarks"):  # every module of the three trees
        for path in (ROOT / folder).rglob("*.py"):
            assert f"handlerbox/{path.relative_to(ROOT).as_posix()}" in names, path


def test_the_cli_and_the_bench_plugin_are_entry_points(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "handlerbox = handlerbox.runtime.cli:main" in text
    assert "[handlerbox.commands]" in text and "handlerbox.benchmarks.__main__:main" in text


def test_the_runtime_never_imports_the_benchmarks() -> None:
    for path in (ROOT / "runtime").rglob("*.py"):
        text = path.read_text()
        assert "import handlerbox.benchmarks" not in text, path
        assert "from handlerbox.benchmarks" not in text, path
