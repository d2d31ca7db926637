"""Django admin for webhooks: edits go through the services; the delivery log is read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from orgs.admin import OrganizationScopedAdmin
from orgs.models import Organization
from orgs.selectors import administered
from pipelines.admin_base import ReadOnlyAdmin
from webhooks import services
from webhooks.models import WEBHOOK_EVENTS, Webhook, WebhookDelivery


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    # Set by WebhookAdmin, so that a refused URL is recorded with who tried it.
    request: HttpRequest | None = None
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in WEBHOOK_EVENTS], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Webhook
        # No secret: it is generated, shown once, and replaced only by rotating it.
        fields = ("organization", "url", "events", "active")
        help_texts = {
            "url": (
                "Its host and port must be in FIREFLY_WEBHOOK_ALLOWED_HOSTS, and its "
                "addresses public (or in FIREFLY_OUTBOUND_ALLOWED_ADDRESSES)."
            ),
        }

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"]
        user = self.request.user if self.request is not None else None
        address = self.request.META.get("REMOTE_ADDR") if self.request is not None else None
        services.webhook_url_check(url=url, actor=user, address=address)
        return url


def masked(webhook: Webhook) -> str:
    # Nothing of the secret: it is stored encrypted and decrypted only to sign.
    if webhook.pk is None:
        return "generated when saved"
    shown = f"{'•' * 12} (shown once, when created or rotated)"
    until = webhook.previous_secret_until
    if webhook.previous_secret_encrypted and until is not None and until > timezone.now():
        shown += f"; the previous secret also signs until {until:%Y-%m-%d %H:%M %Z}"
    return shown


def secrets_page(request: HttpRequest, hooks: list[Webhook], title: str) -> HttpResponse:
    """The one page that shows secrets in full, answered directly (never stored)."""
    context = {**admin.site.each_context(request), "title": title, "hooks": hooks}
    return TemplateResponse(request, "admin/webhooks/secrets.html", context)


@admin.register(Webhook)
class WebhookAdmin(OrganizationScopedAdmin):
    form = WebhookForm
    list_display = (
        "id",
        "organization",
        "url",
        "events",
        "active",
        "created_by",
        "created_at",
        "log",
    )
    list_filter = ("organization", "active")
    list_select_related = ("organization", "created_by")
    search_fields = ("url",)
    readonly_fields = ("signing_secret", "created_by", "created_at", "log")
    actions = ("rotate_secret",)

    @admin.display(description="secret")
    def signing_secret(self, obj: Webhook) -> str:
        return masked(obj)

    @admin.display(description="deliveries")
    def log(self, obj: Webhook) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:webhooks_webhookdelivery_changelist")
        return format_html('<a href="{}?webhook__id__exact={}">delivery log</a>', url, obj.pk)

    @admin.action(description="Rotate the secret of the selected webhooks", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> HttpResponse:
        rotated = [
            services.webhook_secret_rotate(webhook_id=pk)
            for pk in queryset.order_by("pk").values_list("pk", flat=True)
        ]
        for hook in rotated:
            self.log_change(request, hook, "Rotated the secret.")
        return secrets_page(request, rotated, "New webhook secrets")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A webhook stays in the organization it was made for: it hears only its events.
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("organization", *fields) if obj is not None else fields

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        # The subclass's metaclass builds its fields anew: adjust them after it.
        form = super().get_form(request, obj, change, **kwargs)
        form = type(form.__name__, (form,), {"request": request})
        organization = form.base_fields.get("organization")
        if isinstance(organization, forms.ModelChoiceField):
            # Superusers may leave it to the default organization; staff pick one of theirs.
            organization.required = not request.user.is_superuser
            if not request.user.is_superuser:
                organization.queryset = Organization.objects.filter(
                    pk__in=administered(request.user)
                )
        return form

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        actor = request.user if request.user.is_authenticated else None
        address = request.META.get("REMOTE_ADDR")
        if change:
            services.webhook_update(
                webhook_id=obj.pk,
                url=obj.url,
                events=obj.events,
                active=obj.active,
                actor=actor,
                address=address,
            )
            return
        created = services.webhook_create(
            url=obj.url,
            events=obj.events,
            active=obj.active,
            actor=actor,
            address=address,
            organization=obj.organization_id,
        )
        obj.pk = created.pk
        obj.secret_encrypted = created.secret_encrypted
        obj.new_secret = created.new_secret
        obj.created_by = created.created_by
        obj.created_at = created.created_at
        obj._state = created._state

    def response_add(
        self, request: HttpRequest, obj: Webhook, post_url_continue: Any = None
    ) -> Any:
        # The receiver needs the generated secret: shown here once, as the API does.
        return secrets_page(request, [obj], "Webhook added")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "created_at",
        "event",
        "webhook",
        "status",
        "attempts",
        "response_code",
        "latency_ms",
        "delivered_at",
    )
    list_filter = ("status", "event", "webhook")
    list_select_related = ("webhook",)
    search_fields = ("=event_id",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "webhook",
        "event",
        "event_id",
        "status",
        "attempts",
        "response_code",
        "latency_ms",
        "last_error",
        "created_at",
        "delivered_at",
        "payload",
    )
