"""The nntrain CLI run in-process, from a chosen folder, as the tests use it."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner, Result

from nntrain.cli import app

_runner = CliRunner()


def nntrain(*args: str, cwd: Path | None = None) -> Result:
    """`nntrain ARGS...` with `cwd` as the working folder (so runs/ lands there)."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return _runner.invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
