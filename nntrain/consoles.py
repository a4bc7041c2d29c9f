"""The terminal writers nntrain prints with."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from rich.console import Console


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (`nntrain fit ... | head`): the command goes on unprinted, as
        rich's default would end it with exit code 1 and mark a training run failed."""
        self.quiet = True
        _to_devnull(self.file if self.stderr else sys.stdout)


def _to_devnull(stream: Any) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())  # print() from user code too
    os.close(devnull)


def shell(*words: object) -> str:
    """A command a user can paste into a shell: each word quoted where it needs it (a path
    with spaces, say)."""
    return shlex.join(str(word) for word in words)


def write_stdout(text: str) -> None:
    """`text` to stdout, flushed; once the reader has gone, nothing (as the consoles do)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _to_devnull(sys.stdout)


def make_console(**options: Any) -> Console:
    """A rich Console for text that carries users' names: `cbs:Boom:` is a class, not rich's
    :boom: emoji code, and numbers keep the colour of the text around them."""
    return _Console(**{"emoji": False, "highlight": False, **options})
