"""The terminal writers nntrain prints with."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def make_console(**options: Any) -> Console:
    """A rich Console for text that carries users' names: `cbs:Boom:` is a class, not rich's
    :boom: emoji code, and numbers keep the colour of the text around them."""
    return Console(**{"emoji": False, "highlight": False, **options})
