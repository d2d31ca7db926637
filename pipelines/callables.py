"""Which Python function a spec may name (python steps, on_finish), and finding it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from django.conf import settings


def _within(name: str, modules: list[str]) -> bool:
    return any(name == module or name.startswith(module + ".") for module in modules)


def _kind(target: Any) -> str:
    if inspect.isclass(target):
        return "a class"
    if inspect.ismodule(target):
        return "a module"
    if inspect.isbuiltin(target):
        return "a builtin"
    return f"a {type(target).__name__}"


def resolve_callable(path: str) -> Callable[..., Any]:
    """The function `pkg.mod.func` names, if a spec may call it; ValueError says why not.

    A spec is data, possibly posted over the API. It may name only a plain function that
    a module in FIREFLY_CALLABLE_MODULES (or below one) defines itself: not a class, a
    builtin, or a name the module imported from elsewhere (`mod.os.system`,
    `mod.json.loads`, a function `from x import f`), and no private or dunder name
    (`__import__`, `__builtins__`).
    """
    allowed = list(settings.FIREFLY_CALLABLE_MODULES)
    parts = path.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{path!r} is not a dotted path to a function (pkg.mod.func).")
    private = next((part for part in parts if part.startswith("_")), None)
    if private is not None:
        raise ValueError(f"{path!r} names {private!r}: private and dunder names are refused.")
    if not _within(path, allowed):
        raise ValueError(f"{path!r} is outside the allowed modules ({', '.join(allowed)}).")
    # The longest prefix that is a module (only prefixes inside an allowed module are
    # imported); what follows it must be one name that module defines.
    module: Any = None
    index = 1
    for index in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:index])
        if not _within(name, allowed):
            break
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise ValueError(f"cannot import {name!r}: {exc}") from exc
            continue
        except ImportError as exc:
            raise ValueError(f"cannot import {name!r}: {exc}") from exc
        break
    if module is None:
        raise ValueError(f"{path!r} names no module in {', '.join(allowed)}.")
    module_name, rest = module.__name__, parts[index:]
    target = getattr(module, rest[0], None)
    if target is None:
        raise ValueError(f"cannot import {path!r}: {module_name} has no {rest[0]!r}.")
    if len(rest) > 1:
        raise ValueError(
            f"{path!r} reaches into {rest[0]!r}, {_kind(target)} that {module_name} "
            "imported: only a function an allowed module defines may be named."
        )
    if not inspect.isfunction(target):
        raise ValueError(f"{path!r} is {_kind(target)}, not a function.")
    if not _within(target.__module__, allowed):
        raise ValueError(
            f"{path!r} is {target.__module__}.{target.__qualname__}, imported into "
            f"{module_name}: it is defined outside the allowed modules ({', '.join(allowed)})."
        )
    return target
