"""Finding the user's App from a ``module:attr`` string (``-A``, ``CLOUDQ_APP``).

Click-free, so the Lambda handler can use it without loading the CLI.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from cloudq.errors import ConfigError

if TYPE_CHECKING:
    from cloudq.app import App


class AppNotFound(ConfigError):
    """The app path does not name a cloudq App."""


class AppImportError(ConfigError):
    """Importing the app's module failed."""


def load_app(spec: str, *, option: str = "-A") -> App:
    """Import ``module:attr`` (or ``module`` with an ``app`` attribute) and return the App.

    The current directory is put on ``sys.path`` first, as Celery does, so ``-A shop.tasks``
    works from the project's root without installing it.
    """
    from cloudq.app import App

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.strip().partition(":")
    if not module_name or (":" in spec and not attr):
        raise AppNotFound(f"{option} {spec!r}: expected module:attribute, e.g. shop.tasks:app")
    module = _import(module_name, spec, option)
    found: Any = module
    for part in (attr or "app").split("."):
        if not hasattr(found, part):
            raise AppNotFound(_missing_attribute(module, module_name, attr or "app", spec, option))
        found = getattr(found, part)
    if not isinstance(found, App):
        raise AppNotFound(
            f"{option} {spec!r}: {module_name}:{attr or 'app'} is {type(found).__name__} "
            f"{found!r}, not a cloudq.App"
        )
    return found


def _import(module_name: str, spec: str, option: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise AppNotFound(
                f"{option} {spec!r}: no module named {missing!r} (searched the current "
                f"directory {os.getcwd()} and sys.path)"
            ) from exc
        raise AppImportError(_import_failure(module_name, spec, option)) from exc
    except Exception as exc:
        raise AppImportError(_import_failure(module_name, spec, option)) from exc


def _import_failure(module_name: str, spec: str, option: str) -> str:
    return (f"{option} {spec!r}: importing {module_name} failed:\n"
            f"{traceback.format_exc().rstrip()}")


def _missing_attribute(module: Any, module_name: str, attr: str, spec: str, option: str) -> str:
    from cloudq.app import App

    apps = [name for name, value in vars(module).items() if isinstance(value, App)]
    hint = f"; it has the App(s) {', '.join(apps)}" if apps else "; it defines no cloudq.App"
    close = difflib.get_close_matches(attr, apps, n=1)
    if close:
        hint += f" (did you mean {option} {module_name}:{close[0]}?)"
    return f"{option} {spec!r}: module {module_name!r} has no attribute {attr!r}{hint}"
