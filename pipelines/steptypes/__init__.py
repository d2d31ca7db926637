"""The built-in automatic step types, one module each; registered by the app's ready()."""

from __future__ import annotations

from pipelines import registry
from pipelines.steptypes import basic, handoff, http, python


def register() -> None:
    for module in (python, http, basic, handoff):
        for kind in module.STEP_TYPES:
            registry.register(kind)
