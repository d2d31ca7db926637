"""REST API for outbound webhook subscriptions: list and create (organization admins)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from orgs import selectors as orgs
from orgs.api import InOrganization
from webhooks import selectors, services
from webhooks.models import WEBHOOK_EVENTS, Webhook


class WebhookSerializer(serializers.ModelSerializer):
    # Plain text here: the service's outbound guard judges the URL, and records a refusal.
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENTS), allow_empty=False
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Signs deliveries; generated when left out. Shown only in the create response.",
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Webhook
        fields = ("id", "url", "events", "secret", "active", "created_at", "created_by")
        read_only_fields = ("id", "created_at", "created_by")


class WebhookCreatedSerializer(WebhookSerializer):
    # The plaintext the service just generated or was given: the stored secret is encrypted.
    secret = serializers.CharField(
        source="new_secret", read_only=True, help_text="Keep it: it is not shown again."
    )


class AdministersOrganization(InOrganization):
    """The request's organization, administered by the user."""

    message = "Only the organization's admins manage its webhooks."

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and orgs.is_admin(
            request.user, getattr(request.organization, "pk", None)
        )


class WebhookListCreate(generics.ListCreateAPIView):
    """The organization's outbound webhook subscriptions. Its admins only."""

    permission_classes = (AdministersOrganization,)
    queryset = Webhook.objects.none()  # for the schema; get_queryset scopes every request
    serializer_class = WebhookSerializer

    def get_queryset(self) -> QuerySet[Webhook]:
        return selectors.webhook_list(self.request.organization)

    @extend_schema(request=WebhookSerializer, responses={201: WebhookCreatedSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            webhook = services.webhook_create(
                **serializer.validated_data,
                actor=request.user,
                address=request.META.get("REMOTE_ADDR"),
                organization=request.organization,
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"url": exc.messages}) from exc
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)
