"""History's rows: written once, never changed or deleted, one by one or in bulk."""

from __future__ import annotations

from typing import Any

from django.db import models


class ImmutableQuerySet(models.QuerySet):
    """Refuses bulk update and delete: the rows it manages are history."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError(f"{self.model.__name__} rows are immutable and cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError(f"{self.model.__name__} rows are immutable and cannot be deleted.")


class ImmutableModel(models.Model):
    """A row that is written once and never changed or deleted."""

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError(f"{type(self).__name__} rows are immutable and cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError(f"{type(self).__name__} rows are immutable and cannot be deleted.")
