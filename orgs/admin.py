"""Django admin scoped to organizations: staff see only the rows of those they administer."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import ForeignKey, Model, QuerySet
from django.http import HttpRequest

from orgs import selectors


def _scoped(request: HttpRequest) -> bool:
    return not request.user.is_superuser


def in_scope(request: HttpRequest, organization_id: int | None) -> bool:
    """Whether the signed-in user administers the organization (superusers: every one)."""
    if not _scoped(request):
        return True
    return organization_id is not None and organization_id in selectors.administered(request.user)


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A filter by a related row that offers only rows of the administered organizations:
    the choices of Django's own filter would list every organization's pipelines, webhooks
    and users by name."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list[Any]:
        choices = super().field_choices(field, request, model_admin)
        if not _scoped(request):
            return choices
        related = field.related_model
        administered = selectors.administered(request.user)
        if related is get_user_model():
            allowed = set(
                related.objects.filter(memberships__organization_id__in=administered).values_list(
                    "pk", flat=True
                )
            )
        elif _has_organization(related):
            allowed = set(
                related.objects.filter(organization_id__in=administered).values_list(
                    "pk", flat=True
                )
            )
        else:
            return choices
        return [(pk, label) for pk, label in choices if pk in allowed]


def _has_organization(model: type[Model]) -> bool:
    try:
        field = model._meta.get_field("organization")
    except Exception:  # FieldDoesNotExist
        return False
    return isinstance(field, ForeignKey)


class OrganizationScopedAdmin(admin.ModelAdmin):
    """For a model with an `organization` key: non-superuser staff see, and may open, only
    the rows of organizations they administer; anyone else's rows are not there (a change
    page of one answers as for a row that does not exist). Related-row filters offer only
    rows of those organizations. Django's model permissions still apply on top."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if not _scoped(request):
            return queryset
        return queryset.filter(organization_id__in=selectors.administered(request.user))

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = list(super().get_list_filter(request))
        if not _scoped(request):
            return filters
        scoped: list[Any] = []
        for entry in filters:
            if isinstance(entry, str) and self._is_relation(entry):
                scoped.append((entry, ScopedRelatedFilter))
            elif isinstance(entry, str) or not isinstance(entry, tuple):
                # A plain column's choices come from this admin's (scoped) queryset, a
                # SimpleListFilter's from code.
                scoped.append(entry)
            # A (field, filter class) pair lists values of the whole table (the index
            # scans of large tables do): left out, as it could name other organizations'
            # people.
        return scoped

    def _is_relation(self, path: str) -> bool:
        model: Any = self.model
        field = None
        for part in path.split("__"):
            field = model._meta.get_field(part)
            model = field.related_model
        return field is not None and field.is_relation

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not in_scope(request, obj.organization_id):
            return False
        return super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not in_scope(request, obj.organization_id):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not in_scope(request, obj.organization_id):
            return False
        return super().has_delete_permission(request, obj)
