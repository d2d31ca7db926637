"""Django admin: pipelines, runs with their steps and handoffs, checkpoints, the outbox;
the audit trail's admin is in `audit_admin.py`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from orgs.admin import OrganizationScopedAdmin
from pipelines import (
    audit_admin,  # noqa: F401  (registers the audit trail's admin)
    selectors,
    services,
)
from pipelines.admin_base import ReadOnlyAdmin, ReadOnlyInline, change_link, run_link
from pipelines.errors import FireflyError
from pipelines.models import (
    Checkpoint,
    HandoffEnvelope,
    OutboxEvent,
    Pipeline,
    PipelineGrant,
    PipelineVersion,
    Run,
    SecurityEvent,
    StepRun,
)


class VersionInline(ReadOnlyInline):
    model = PipelineVersion
    fields = readonly_fields = ("number", "created_at", "created_by")


class GrantInline(ReadOnlyInline):
    """Who holds which role on the pipeline; changed on the organization page (/org/),
    whose services audit each change in the pipeline's chain."""

    model = PipelineGrant
    show_change_link = False
    fields = readonly_fields = ("user", "group", "role", "created_at")


@admin.register(Pipeline)
class PipelineAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = ["name", "organization", "member_role", "created_by", "created_at"]
    list_filter = ["organization"]
    list_select_related = ["organization", "created_by"]
    search_fields = ["name"]
    inlines = [GrantInline, VersionInline]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = ["pipeline", "number", "created_at", "created_by"]
    list_filter = ["pipeline"]
    list_select_related = ["pipeline", "created_by"]


class StepInline(ReadOnlyInline):
    model = StepRun
    fields = readonly_fields = (
        "step_name",
        "generation",
        "attempt",
        "status",
        "started_at",
        "finished_at",
        "error",
    )


def handoff_link(envelope_id: int | None) -> str:
    return change_link("handoffenvelope", "handoff", envelope_id)


class ChildRunInline(ReadOnlyInline):
    model = Run
    fk_name = "parent"
    verbose_name = "child run"
    fields = readonly_fields = ("pipeline_version", "status", "created_at", "finished_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return self.visible(request, selectors.child_runs())


class EnvelopeInline(ReadOnlyInline):
    model = HandoffEnvelope
    fk_name = "origin_run"
    verbose_name = "handoff"
    fields = readonly_fields = (
        "origin_step",
        "target_pipeline",
        "child_run_link",
        "wait",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
        "decision",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[HandoffEnvelope]:
        return self.visible(request, selectors.all_handoffs())

    @admin.display(description="child run")
    def child_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.child_run_id)


class RedactForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=services.retention.REASON_MAX,
        help_text="Why their data is erased (an erasure request, a retention rule): it is "
        "kept in the audit trail.",
    )


@admin.register(Run)
class RunAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "id",
        "pipeline_version",
        "status",
        "created_by",
        "created_at",
        "finished_at",
        "redacted_at",
    ]
    list_filter = ["status", "pipeline_version__pipeline"]
    list_select_related = ["pipeline_version__pipeline", "created_by"]
    search_fields = ["=id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = ["handed_off_by", "is_finishing"]
    inlines = [StepInline, ChildRunInline, EnvelopeInline]
    actions = ("redact",)

    def has_redact_permission(self, request: HttpRequest) -> bool:
        # The runs listed are those of organizations the user administers (the scoped
        # queryset); the service checks each run again, and records a refusal.
        return bool(request.user.is_active and request.user.is_staff)

    @admin.action(
        description="Erase the data of the selected runs (asks for the reason)",
        permissions=["redact"],
    )
    def redact(self, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
        form = RedactForm(request.POST if "reason" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Erase the data of these runs?",
                "runs": queryset.select_related("pipeline_version__pipeline").order_by("pk"),
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/pipelines/run/redact.html", context)
        erased = 0
        for run_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.run_redact(
                    run_id=run_id, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except FireflyError as exc:
                self.message_user(request, f"Run {run_id}: {exc.message}", messages.ERROR)
            else:
                erased += 1
        if erased:
            self.message_user(request, f"Erased the data of {erased} run(s).", messages.SUCCESS)
        return None

    @admin.display(description="handed off by")
    def handed_off_by(self, obj: Run) -> str:
        if obj.parent_id is None:
            return "-"
        envelope = selectors.handoff_origin(obj)
        return format_html(
            "{} ({})", run_link(obj.parent_id), handoff_link(envelope.pk if envelope else None)
        )

    @admin.display(description="on_finish running", boolean=True)
    def is_finishing(self, obj: Run) -> bool:
        return obj.is_finishing


class HandoffStatusFilter(admin.SimpleListFilter):
    """The envelope's status, which the model derives from its timestamps."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(status, status) for status in HandoffEnvelope.Status.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        status = self.value()
        if status in HandoffEnvelope.Status.values:
            return selectors.handoffs_with_status(queryset, status)
        return queryset


@admin.register(HandoffEnvelope)
class HandoffEnvelopeAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "id",
        "origin_run_link",
        "origin_step",
        "target_pipeline",
        "child_run_link",
        "wait",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
    ]
    list_filter = [HandoffStatusFilter, "wait"]
    list_select_related = ["acknowledged_by", "child_run"]
    search_fields = ["target_pipeline", "=origin_run__id"]
    search_help_text = "A target pipeline, or an origin run id."
    show_full_result_count = False
    readonly_fields = (
        "origin_run_link",
        "origin_step",
        "origin_step_run",
        "key",
        "target_pipeline",
        "payload",
        "wait",
        "child_run_link",
        "status",
        "queued_at",
        "accepted_at",
        "acknowledged_at",
        "acknowledged_by",
        "decision",
    )
    fields = readonly_fields

    @admin.display(description="origin run", ordering="origin_run_id")
    def origin_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.origin_run_id)

    @admin.display(description="child run", ordering="child_run_id")
    def child_run_link(self, obj: HandoffEnvelope) -> str:
        return run_link(obj.child_run_id)


@admin.register(StepRun)
class StepRunAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "step_name",
        "run_id_link",
        "generation",
        "attempt",
        "status",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status"]
    search_fields = ["=run__id", "step_name"]
    show_full_result_count = False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: StepRun) -> str:
        return run_link(obj.run_id)


@admin.register(Checkpoint)
class CheckpointAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "seq",
        "run_id_link",
        "kind",
        "step_name",
        "generation",
        "status",
        "paused",
        "created_at",
    ]
    list_filter = ["kind", "paused"]
    search_fields = ["=run__id", "step_name"]
    show_full_result_count = False

    @admin.display(description="run", ordering="run_id")
    def run_id_link(self, obj: Checkpoint) -> str:
        return run_link(obj.run_id)


@admin.register(SecurityEvent)
class SecurityEventAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = ["created_at", "event", "actor_name", "address", "reason"]
    list_filter = ["event"]
    search_fields = ["actor_name", "=address"]
    date_hierarchy = "created_at"
    show_full_result_count = False


class OutboxRelayedFilter(admin.SimpleListFilter):
    title = "relayed"
    parameter_name = "relayed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "waiting"), ("yes", "relayed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("no", "yes"):
            return queryset.filter(relayed_at__isnull=self.value() == "no")
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    """Events waiting for their durable subscribers (webhooks, audit sinks) and those relayed;
    an operator can relay waiting ones now instead of waiting for the sweep."""

    list_display = ["id", "event", "organization", "created_at", "relayed_at", "attempts"]
    list_filter = [OutboxRelayedFilter, "event"]
    list_select_related = ["organization"]
    search_fields = ["=id", "event"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = [
        "event",
        "organization",
        "payload",
        "created_at",
        "relayed_at",
        "attempts",
        "last_error",
    ]
    actions = ["relay_now"]

    def has_relay_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    @admin.action(description="Relay the selected events now", permissions=["relay"])
    def relay_now(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        # The queryset is already held to the organizations the user administers.
        selected = list(queryset.values_list("pk", flat=True))
        waiting = queryset.filter(relayed_at__isnull=True).count()
        relayed = services.outbox_relay(ids=selected)
        text = f"Relayed {relayed} of {len(selected)} selected events"
        if len(selected) > waiting:
            text += f" ({len(selected) - waiting} had been relayed already)"
        if relayed < waiting:
            text += f"; {waiting - relayed} failed again and wait for the sweep (see last error)"
            self.message_user(request, text + ".", messages.WARNING)
            return
        self.message_user(request, text + ".", messages.SUCCESS)
