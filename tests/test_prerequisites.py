"""A missing prerequisite skips a test here and fails it under ``CI=1`` (tests/prerequisites.py); CI fails early
without the data mirrors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from prerequisites import require, require_mirrors, require_module

TESTS = Path(__file__).parent
REPO = TESTS.parent


def test_a_missing_prerequisite_fails_under_ci_and_skips_elsewhere():
    with pytest.raises(pytest.fail.Exception, match="CI is set but the widget is missing"):
        require(False, "the widget is missing", environ={"CI": "1"})
    with pytest.raises(pytest.skip.Exception, match="the widget is missing"):
        require(False, "the widget is missing", environ={})
    require(True, "never shown", environ={"CI": "1"})  # present: nothing happens


def test_a_missing_module_or_mirror_goes_through_require(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_xyz is not installed.*pip install x"):
        require_module("no_such_module_xyz", "pip install x")
    assert require_module("json", "stdlib").dumps([]) == "[]"
    monkeypatch.delenv("LSI_DATA", raising=False)
    with pytest.raises(pytest.fail.Exception, match="offline data mirrors"):
        require_mirrors()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="offline data mirrors"):
        require_mirrors()


SKIPS = re.compile(r"pytest\.skip\(|importorskip|skipif\(|mark\.skip\b")


def test_every_skip_for_a_missing_prerequisite_goes_through_require():
    """No test file skips on its own: a bare skip stays green in CI. Only prerequisites.py may skip."""
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in sorted(TESTS.rglob("*.py")) if path.name not in {"prerequisites.py", Path(__file__).name}
             for number, line in enumerate(path.read_text().splitlines(), 1) if SKIPS.search(line)]
    assert not found, "skip through prerequisites.require instead:\n" + "\n".join(found)


def test_ci_run_fails_early_without_the_data_mirrors(tmp_path):
    """A clone with no ../shared/data beside it and no LSI_DATA: .ci/run stops before installing or testing."""
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", clone / ".ci" / "run")
    stubs = tmp_path / "bin"  # make, apt-get and sudo must not be reached: each would exit 99
    stubs.mkdir()
    for name in ("make", "apt-get", "sudo"):
        (stubs / name).write_text("#!/bin/sh\nexit 99\n")
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in {"LSI_DATA", "CI"}}
    env["PATH"] = f"{stubs}:{env['PATH']}"
    result = subprocess.run(["bash", str(clone / ".ci" / "run")], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "data mirrors" in result.stderr and "LSI_DATA" in result.stderr
