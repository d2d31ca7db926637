"""REST API for API tokens: list yours (admins: all of the organization), create, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.api_errors import AUTH_ERRORS, INVALID, NOT_FOUND
from tokens import selectors, services
from tokens.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token without its secret (nothing of it is stored but a hash)."""

    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    revoked_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = ApiToken
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "user",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "revoked_by",
        )
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_in_days = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        help_text="Days until it expires; FIREFLY_TOKEN_TTL_DAYS (90) when left out.",
    )


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        read_only=True, help_text="Keep it: it is shown only in this response."
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = (*ApiTokenSerializer.Meta.fields, "token")
        read_only_fields = fields


class TokenListCreate(generics.ListCreateAPIView):
    """Your API tokens in this organization (its admins: everyone's), without their secrets."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ApiToken.objects.none()
        return selectors.token_list(
            viewer=self.request.user, organization=self.request.organization
        )

    @extend_schema(responses={200: ApiTokenSerializer(many=True), **AUTH_ERRORS})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a token for yourself; the response holds it, once",
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer, **INVALID, **AUTH_ERRORS},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        days = serializer.validated_data.get("expires_in_days")
        if request.organization is None:
            raise exceptions.NotFound("You belong to no organization.")
        token, key = services.token_create(
            user=request.user,
            organization=request.organization,
            name=serializer.validated_data["name"],
            expires_in=timedelta(days=days) if days else None,
        )
        body = {**ApiTokenSerializer(token).data, "token": key}
        return Response(body, status=status.HTTP_201_CREATED)


class TokenRevoke(APIView):
    @extend_schema(
        summary="Revoke a token (its owner or an organization admin)",
        request=None,
        responses={200: ApiTokenSerializer, **AUTH_ERRORS, **NOT_FOUND},
    )
    def post(self, request: Request, pk: int) -> Response:
        token = services.token_revoke(
            token_id=pk, actor=request.user, address=request.META.get("REMOTE_ADDR")
        )
        return Response(ApiTokenSerializer(token).data)
