"""Notification channels besides email, added by other apps from their AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from approvals.models import HumanTask

# One line of news and the link it is about.
Line = tuple[str, str]


@dataclass(frozen=True)
class Channel:
    """How a channel reaches a person. Its functions are called after the causing commit;
    what they raise is logged by the caller and keeps no other channel from being told."""

    name: str
    label: str
    # Why this person cannot be reached on it ('' when they can): the preferences page
    # says so, and nothing is sent or queued for them there.
    unreachable: Callable[[Any], str]
    # A task's own message (with its actions), at once, to each of these people.
    task: Callable[[str, HumanTask, list[Any]], None]
    # One line with its link, at once.
    notice: Callable[[Any, str, str], None]
    # What a digest gathered: many lines with their links, in one message.
    digest: Callable[[Any, list[Line]], None]


registry: dict[str, Channel] = {}


def register(channel: Channel) -> None:
    """Add a channel (from an AppConfig.ready()); registering a name again replaces it."""
    registry[channel.name] = channel


def registered() -> list[Channel]:
    return list(registry.values())
