"""Django admin for inbound hooks (changes go through the services; the secret is shown
once, when a hook is added or its secret rotated) and their read-only delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from inbound import services
from inbound.models import InboundDelivery, InboundHook
from orgs.admin import OrganizationScopedAdmin
from orgs.models import Organization
from orgs.selectors import administered
from pipelines.admin_base import ReadOnlyAdmin
from pipelines.errors import FireflyError
from pipelines.models import Pipeline


class InboundHookForm(forms.ModelForm):
    class Meta:
        model = InboundHook
        fields = ("organization", "pipeline", "name", *services.SETTABLE)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        pipeline, organization = data.get("pipeline"), data.get("organization")
        if pipeline and organization and pipeline.organization_id != organization.pk:
            self.add_error("pipeline", "This pipeline is not in that organization.")
        return data


def secrets_page(request: HttpRequest, hooks: list[InboundHook], title: str) -> HttpResponse:
    """The one page that shows secrets in full, answered directly (never stored)."""
    shown = [(hook, request.build_absolute_uri(hook.path)) for hook in hooks]
    context = {**admin.site.each_context(request), "title": title, "hooks": shown}
    return TemplateResponse(request, "admin/inbound/secrets.html", context)


def _actor(request: HttpRequest) -> Any:
    return request.user if request.user.is_authenticated else None


@admin.register(InboundHook)
class InboundHookAdmin(OrganizationScopedAdmin):
    form = InboundHookForm
    list_display = (
        "name",
        "pipeline",
        "organization",
        "signature_format",
        "enabled",
        "hook_url",
        "created_at",
        "log",
    )
    list_filter = ("organization", "enabled", "signature_format")
    list_select_related = ("organization", "pipeline")
    search_fields = ("name", "pipeline__name")
    readonly_fields = ("hook_url", "signing_secret", "created_by", "created_at", "log")
    actions = ("rotate_secret",)

    @admin.display(description="URL")
    def hook_url(self, obj: InboundHook) -> str:
        return obj.path if obj.pk else "made when saved"

    @admin.display(description="secret")
    def signing_secret(self, obj: InboundHook) -> str:
        if obj.pk is None:
            return "generated when saved"
        return f"{'•' * 12} (shown once, when added or rotated)"

    @admin.display(description="deliveries")
    def log(self, obj: InboundHook) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:inbound_inbounddelivery_changelist")
        return format_html('<a href="{}?hook__id__exact={}">delivery log</a>', url, obj.pk)

    @admin.action(description="Rotate the secret of the selected hooks", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[InboundHook]) -> Any:
        rotated = []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                rotated.append(
                    services.hook_secret_rotate(
                        hook_id=pk, actor=_actor(request), address=request.META.get("REMOTE_ADDR")
                    )
                )
            except FireflyError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
        for hook in rotated:
            self.log_change(request, hook, "Rotated the secret.")
        return secrets_page(request, rotated, "New inbound hook secrets")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A hook stays on the pipeline (and so the organization) it was made for.
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("organization", "pipeline", "name", *fields) if obj is not None else fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not request.user.is_superuser:
            mine = administered(request.user)
            if db_field.name == "organization":
                kwargs["queryset"] = Organization.objects.filter(pk__in=mine)
            elif db_field.name == "pipeline":
                kwargs["queryset"] = Pipeline.objects.filter(organization_id__in=mine)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _settings(self, form: Any) -> dict[str, Any]:
        return {name: form.cleaned_data[name] for name in services.SETTABLE}

    def save_model(self, request: HttpRequest, obj: InboundHook, form: Any, change: bool) -> None:
        address = request.META.get("REMOTE_ADDR")
        if change:
            services.hook_update(
                hook_id=obj.pk, actor=_actor(request), address=address, **self._settings(form)
            )
            return
        created = services.hook_create(
            pipeline=obj.pipeline.name,
            name=obj.name,
            actor=_actor(request),
            organization=obj.organization_id,
            address=address,
            **self._settings(form),
        )
        obj.pk = created.pk
        obj.token = created.token
        obj.new_secret = created.new_secret
        obj.created_by = created.created_by
        obj.created_at = created.created_at
        obj._state = created._state

    def delete_model(self, request: HttpRequest, obj: InboundHook) -> None:
        services.hook_delete(
            hook_id=obj.pk, actor=_actor(request), address=request.META.get("REMOTE_ADDR")
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[InboundHook]) -> None:
        for hook in queryset:
            self.delete_model(request, hook)

    def response_add(
        self, request: HttpRequest, obj: InboundHook, post_url_continue: Any = None
    ) -> Any:
        # The sender needs the generated secret: shown here once, as the API does.
        return secrets_page(request, [obj], "Inbound hook added")


@admin.register(InboundDelivery)
class InboundDeliveryAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "received_at",
        "hook",
        "outcome",
        "http_status",
        "delivery_id",
        "run",
        "reason",
        "address",
    )
    list_filter = ("outcome", "http_status", "hook")
    list_select_related = ("hook",)
    search_fields = ("=delivery_id", "=body_sha256")
    date_hierarchy = "received_at"
    readonly_fields = (
        "hook",
        "delivery_id",
        "outcome",
        "reason",
        "http_status",
        "run",
        "received_at",
        "address",
        "body_bytes",
        "body_sha256",
    )
