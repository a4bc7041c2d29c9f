"""User code named in a config (`my_layers:Gated`). Importing it runs it, so it happens only
for names the user wrote, and commands that read someone else's run ask for --trust-code."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nntrain.errors import UserError

if TYPE_CHECKING:
    from nntrain.config.schema import Config


def load_object(target: str, search_dirs: Iterable[Path] = (), what: str = "class") -> Any:
    """Import `package.module:Name`, looking in `search_dirs` (the config's folder) first,
    then on the Python path."""
    module_name, _, attribute = target.partition(":")
    added = [str(d) for d in search_dirs if str(d) not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(
                f"cannot import '{module_name}' for {target}",
                "put the module next to the config file or on PYTHONPATH",
            ) from None
        raise UserError(f"importing {module_name} for {target} failed: {e}",
                        f"install what {module_name} imports, or fix the import") from None
    except Exception as e:  # user code may raise anything while importing
        raise UserError(f"importing {module_name} for {target} failed: "
                        f"{type(e).__name__}: {e}", f"fix {module_name}'s code") from None
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)
    try:
        return getattr(module, attribute)
    except AttributeError:
        from nntrain.config.loader import closest

        # what the module defines itself: not `np` or the names it imported
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and not isinstance(v, types.ModuleType)
                 and getattr(v, "__module__", module.__name__) == module.__name__]
        near = closest(attribute, names)
        raise UserError(f"module {module_name} has no {what} '{attribute}'",
                        f"did you mean '{module_name}:{near}'?" if near else
                        f"define {attribute} in {module_name}, or name one it has") from None


def custom_names(config: Config) -> list[str]:
    """Every `module:Name` a config refers to."""
    from nntrain.config.entries import entry_args, entry_name, is_custom

    names = [entry_name(e) for e in config.model.layers]
    for entry in config.fit.callbacks:
        names.append(entry_name(entry))
        schedule = getattr(entry_args(entry), "schedule", None)  # learning_rate_scheduler's
        if isinstance(schedule, str):
            names.append(schedule)
    if config.data.generator:
        names.append(config.data.generator)
    return [n for n in names if is_custom(n)]


def require_trust(config: Config, trust_code: bool, run_path: Path) -> None:
    names = custom_names(config)
    if names and not trust_code:
        raise UserError(
            f"the config of {run_path} names Python code ({', '.join(sorted(set(names)))}); "
            "reading the run would import and run it",
            "if you trust that code, pass --trust-code",
        )
