"""Celery tasks of schedules: thin wrappers that call a service."""

from __future__ import annotations

from celery import shared_task

from schedules import firing


# Safe to run twice, or in parallel: each schedule is locked with SKIP LOCKED and each
# slot's firing row is unique, so a slot starts at most one run however many beats run.
@shared_task(name="schedules.tasks.fire_schedules")
def fire_schedules() -> None:
    firing.schedules_fire()
