"""``lightkeeper --version`` prints the installed package's version (the image's OCI label says the same)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from lightkeeper.cli import run


def test_version_prints_the_package_metadata_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"lightkeeper {version('lightkeeper')}\n"


def test_version_works_from_the_installed_command() -> None:
    executable = Path(sys.executable).with_name("lightkeeper")
    result = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lightkeeper {version('lightkeeper')}"
