"""REST API for human tasks: list, read, and decide them through the approvals services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import bulk, selectors, services
from approvals.models import Decision, HumanTask
from firefly_site.api_errors import AUTH_ERRORS, CONFLICT, INVALID, NOT_FOUND, THROTTLED
from firefly_site.throttles import AuditedScopedThrottle
from pipelines.api import Page, organization_or_404, validated
from pipelines.serializers import CleanJSONField

# --- serializers ------------------------------------------------------------------------


class TaskSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.IntegerField(source="run_id")
    pipeline = serializers.CharField(source="run.pipeline_version.pipeline.name")
    step_name = serializers.CharField()
    generation = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=HumanTask.Kind.choices)
    status = serializers.ChoiceField(choices=HumanTask.Status.choices)
    assignee = serializers.CharField(source="assignee.username", allow_null=True)
    role = serializers.CharField(source="assignee_role.name", allow_null=True)
    claimed_by = serializers.CharField(source="claimed_by.username", allow_null=True)
    claimed_at = serializers.DateTimeField(allow_null=True)
    instructions = serializers.CharField(allow_blank=True)
    quorum = serializers.IntegerField()
    allow_self_approval = serializers.BooleanField()
    due_at = serializers.DateTimeField(allow_null=True)
    on_timeout = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField(source="decided_by.username", allow_null=True)


class DecisionSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username", allow_null=True)
    action = serializers.ChoiceField(choices=Decision.Action.choices)
    comment = serializers.CharField(allow_blank=True)
    data = serializers.JSONField(allow_null=True)
    rollback_to = serializers.CharField(allow_blank=True)
    channel = serializers.CharField(
        allow_blank=True,
        help_text="Where it was made: web, api, email, chat or deadline (empty: earlier).",
    )
    on_behalf_of = serializers.CharField(
        source="on_behalf_of.username",
        allow_null=True,
        help_text="Whom `user` stood in for as their out-of-office delegate.",
    )
    created_at = serializers.DateTimeField()


class TaskDetailSerializer(TaskSerializer):
    context = serializers.JSONField(help_text="Run inputs and upstream outputs shown to people.")
    form_schema = serializers.JSONField(allow_null=True)
    options = serializers.ListField(child=serializers.CharField(), allow_null=True)
    decisions = serializers.SerializerMethodField()
    can_act = serializers.SerializerMethodField(help_text="Whether you may decide this task.")
    rollback_targets = serializers.SerializerMethodField(
        help_text="Steps you may roll the run back to (open tasks only)."
    )

    @extend_schema_field(DecisionSerializer(many=True))
    def get_decisions(self, task: HumanTask) -> Any:
        return DecisionSerializer(selectors.task_decisions(task), many=True).data

    def get_can_act(self, task: HumanTask) -> bool:
        return services.can_act(self.context["request"].user, task)

    def get_rollback_targets(self, task: HumanTask) -> list[str]:
        return services.rollback_targets(task) if task.is_open else []


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class RejectSerializer(serializers.Serializer):
    comment = serializers.CharField(allow_blank=True, help_text="Why; required by the service.")


class RollbackSerializer(serializers.Serializer):
    to_step = serializers.CharField(max_length=100, help_text="A completed upstream step.")
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class CompleteSerializer(serializers.Serializer):
    data = CleanJSONField(
        required=False, help_text="Form data for an input task (matches its form_schema)."
    )
    choice = serializers.CharField(required=False, help_text="One of a choice task's options.")


class ReassignSerializer(serializers.Serializer):
    to = serializers.CharField(
        required=False, max_length=150, help_text="A member of the organization to give it to."
    )
    to_role = serializers.CharField(
        required=False, max_length=150, help_text="A role (group) to give it to."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("to") and not attrs.get("to_role"):
            raise serializers.ValidationError(
                {"to": "Give to (a username), to_role (a role), or both."}
            )
        return attrs


def _reassign(*, task_id: int, user: Any, to: str = "", to_role: str = "") -> HumanTask:
    return services.task_reassign(
        task_id=task_id, user=user, assignee=to or None, role=to_role or None
    )


# --- filters ----------------------------------------------------------------------------


class TaskFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=HumanTask.Status.choices)
    run = django_filters.NumberFilter(field_name="run_id", help_text="A run id.")
    mine = django_filters.BooleanFilter(
        method="filter_mine",
        help_text="true: tasks for you or one of your roles (superusers: all).",
    )

    class Meta:
        model = HumanTask
        fields = ["status", "run", "mine"]

    def filter_mine(
        self, queryset: QuerySet[HumanTask], name: str, value: bool
    ) -> QuerySet[HumanTask]:
        if not value:
            return queryset
        return queryset.filter(selectors.for_user(self.request.user, self.request.organization))


# --- views ------------------------------------------------------------------------------


class TaskList(generics.ListAPIView):
    queryset = HumanTask.objects.none()  # for the schema; get_queryset scopes every request
    serializer_class = TaskSerializer
    pagination_class = Page
    filterset_class = TaskFilter

    def get_queryset(self) -> QuerySet[HumanTask]:
        # A list shows no context or form: leave those (the largest columns) unread.
        tasks = selectors.tasks(self.request.user, self.request.organization)
        return tasks.defer("context", "form_schema")

    @extend_schema(
        summary="Human tasks, newest first",
        responses={200: TaskSerializer(many=True), **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


def _require_visible(request: Request, task_id: int) -> None:
    """404 unless the user may open the task in the request's organization."""
    visible = HumanTask.objects.filter(selectors.visible(request.user, request.organization))
    if not visible.filter(pk=task_id).exists():
        raise Http404


def _detail(request: Request, task_id: int) -> Response:
    task = selectors.task_detail(request.user, request.organization, task_id)
    if task is None:
        raise Http404
    return Response(TaskDetailSerializer(task, context={"request": request}).data)


class TaskDetail(APIView):
    @extend_schema(
        summary="A task with its context and decisions",
        responses={200: TaskDetailSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        return _detail(request, pk)


DECIDE_ERRORS = {**INVALID, **AUTH_ERRORS, **NOT_FOUND, **CONFLICT, **THROTTLED}


def _action(
    summary: str,
    body: type[serializers.Serializer] | None,
    call: Callable[..., HumanTask],
    *,
    decides: bool = True,
) -> type[APIView]:
    """A POST endpoint that validates `body` and calls one service with its fields (and,
    for a decision, the channel it came through)."""

    class TaskAction(APIView):
        throttle_classes = [AuditedScopedThrottle]
        throttle_scope = "decide"

        @extend_schema(
            summary=summary,
            request=body,
            responses={200: TaskDetailSerializer, **DECIDE_ERRORS},
        )
        def post(self, request: Request, pk: int) -> Response:
            _require_visible(request, pk)
            fields = validated(body, request) if body is not None else {}
            if decides:
                fields["channel"] = Decision.Channel.API
            call(task_id=pk, user=request.user, **fields)
            # Found visible above; the service checked again under its lock.
            task = selectors.task_reloaded(pk)
            return Response(TaskDetailSerializer(task, context={"request": request}).data)

    TaskAction.__name__ = TaskAction.__qualname__ = f"Task{summary.split()[0]}"
    return TaskAction


TaskApprove = _action(
    "Approve a task (one vote toward its quorum)", CommentSerializer, services.task_approve
)
TaskReject = _action("Reject a task: the run ends rejected", RejectSerializer, services.task_reject)
TaskRollback = _action(
    "Roll the run back to a completed upstream step", RollbackSerializer, services.task_rollback
)
TaskComplete = _action(
    "Complete an input task (data) or a choice task (choice)",
    CompleteSerializer,
    services.task_complete,
)
TaskClaim = _action("Claim a task for yourself", None, services.task_claim, decides=False)
TaskUnclaim = _action(
    "Unclaim a task: give it back to its role", None, services.task_unclaim, decides=False
)
TaskBreakClaim = _action(
    "Break someone else's claim on a task (organization admins)",
    None,
    services.task_claim_break,
    decides=False,
)
TaskReassign = _action(
    "Reassign a task to a member or a role (organization admins)",
    ReassignSerializer,
    _reassign,
    decides=False,
)


# --- many at once -------------------------------------------------------------------------


class BulkSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=bulk.ACTIONS)
    tasks = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        min_length=1,
        max_length=bulk.BULK_MAX,
        help_text=f"Task ids, at most {bulk.BULK_MAX}; each is decided on its own.",
    )
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Required to reject."
    )


class BulkOutcomeSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=["decided", "refused"])
    status = serializers.CharField(
        allow_blank=True, help_text="The task's status after the decision (decided only)."
    )
    reason = serializers.CharField(allow_blank=True, help_text="Why it was refused.")
    code = serializers.CharField(allow_blank=True, help_text="The refusal's error code.")
    http_status = serializers.IntegerField(
        help_text="The status this task alone would have answered (200, 403, 404, 409...)."
    )


class BulkResultSerializer(serializers.Serializer):
    decided = serializers.IntegerField()
    refused = serializers.IntegerField()
    results = BulkOutcomeSerializer(many=True)


class TaskBulk(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "decide"

    @extend_schema(
        summary="Approve or reject many tasks, each on its own",
        request=BulkSerializer,
        responses={200: BulkResultSerializer, **INVALID, **AUTH_ERRORS, **THROTTLED},
    )
    def post(self, request: Request) -> Response:
        fields = validated(BulkSerializer, request)
        outcomes = bulk.tasks_decide(
            user=request.user,
            organization=request.organization,
            action=fields["action"],
            task_ids=bulk.task_ids(fields["tasks"]),
            comment=fields["comment"],
            channel=Decision.Channel.API,
        )
        results = [vars(o) for o in outcomes]
        decided = sum(o.decided for o in outcomes)
        body = {"decided": decided, "refused": len(outcomes) - decided, "results": results}
        return Response(BulkResultSerializer(body).data)


# --- out of office ------------------------------------------------------------------------


class DelegationSerializer(serializers.Serializer):
    delegate = serializers.CharField(source="delegate.username")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    active = serializers.SerializerMethodField(help_text="In force now.")

    def get_active(self, delegation: Any) -> bool:
        return bool(delegation.active())


class CoveringSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username", help_text="Who is away.")
    ends_at = serializers.DateTimeField()


class DelegationStateSerializer(serializers.Serializer):
    delegation = DelegationSerializer(allow_null=True, help_text="Yours; null when none.")
    covering = CoveringSerializer(many=True, help_text="Whom you stand in for now.")


class DelegationSetSerializer(serializers.Serializer):
    delegate = serializers.CharField(max_length=150, help_text="A member's username.")
    starts_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    ends_at = serializers.DateTimeField()


def _delegation_state(request: Request) -> Response:
    state = {
        "delegation": selectors.delegation_of(request.user, request.organization),
        "covering": selectors.covering_now(request.user, request.organization),
    }
    return Response(DelegationStateSerializer(state).data)


class MyDelegation(APIView):
    @extend_schema(
        summary="Your out-of-office delegate, and whom you cover",
        responses={200: DelegationStateSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request) -> Response:
        organization_or_404(request)
        return _delegation_state(request)

    @extend_schema(
        summary="Name a delegate who decides your tasks too, on your behalf, for a date range",
        request=DelegationSetSerializer,
        responses={200: DelegationStateSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request) -> Response:
        organization = organization_or_404(request)
        fields = validated(DelegationSetSerializer, request)
        services.delegation_set(
            user=request.user,
            organization=organization,
            delegate=fields["delegate"],
            starts_at=fields.get("starts_at") or timezone.now(),
            ends_at=fields["ends_at"],
            address=request.META.get("REMOTE_ADDR"),
        )
        return _delegation_state(request)

    @extend_schema(
        summary="End your delegation now (none: nothing changes)",
        responses={204: None, **AUTH_ERRORS, **NOT_FOUND},
    )
    def delete(self, request: Request) -> Response:
        organization = organization_or_404(request)
        services.delegation_clear(
            user=request.user, organization=organization, address=request.META.get("REMOTE_ADDR")
        )
        return Response(status=204)


# --- comments -----------------------------------------------------------------------------


class TaskCommentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    author = serializers.CharField(source="author.username")
    body = serializers.CharField()
    mentions = serializers.ListField(
        child=serializers.CharField(), help_text="Who was told (may open the task)."
    )
    created_at = serializers.DateTimeField()


class CommentWriteSerializer(serializers.Serializer):
    body = serializers.CharField(
        max_length=5000, help_text="The comment; @username mentions notify that person."
    )


class TaskComments(APIView):
    throttle_classes = [AuditedScopedThrottle]
    throttle_scope = "decide"

    @extend_schema(
        summary="A task's comment thread, oldest first",
        responses={200: TaskCommentSerializer(many=True), **AUTH_ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, pk: int) -> Response:
        task = selectors.task_detail(request.user, request.organization, pk)
        if task is None:
            raise Http404
        return Response(TaskCommentSerializer(selectors.task_comments(task), many=True).data)

    @extend_schema(
        summary="Comment on a task (@mentions notify those who may open it)",
        request=CommentWriteSerializer,
        responses={201: TaskCommentSerializer, **INVALID, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, pk: int) -> Response:
        _require_visible(request, pk)
        fields = validated(CommentWriteSerializer, request)
        comment = services.task_comment(task_id=pk, user=request.user, body=fields["body"])
        return Response(TaskCommentSerializer(comment).data, status=201)
