"""The site's URLs plus two that raise, for the server-error tests, and the forgetful
queries of the row-level security tests."""

import importlib

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.urls import handler500
from firefly_site.urls import urlpatterns as site
from pipelines.models import Pipeline, Run

# The message carries what an error page must never show, so showing it fails the test.
LEAK = f"boom {settings.SECRET_KEY} {settings.CELERY_BROKER_URL}"


def page_that_raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(LEAK)


class ApiThatRaises(APIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError(LEAK)


TENANT_TABLES = importlib.import_module("orgs.migrations.0003_row_level_security").TENANT_TABLES


def unscoped_rows() -> dict[str, list[int]]:
    """What raw SQL with no filter at all sees: each tenant table's organization ids
    (the grants: their pipeline ids)."""
    seen = {}
    with connection.cursor() as cursor:
        for table in TENANT_TABLES:
            cursor.execute(f"SELECT DISTINCT organization_id FROM {table}")
            seen[table] = sorted(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT DISTINCT pipeline_id FROM pipelines_pipelinegrant")
        seen["pipelines_pipelinegrant"] = sorted(row[0] for row in cursor.fetchall())
    return seen


def forgetful_page(request: HttpRequest) -> JsonResponse:
    return JsonResponse(unscoped_rows())


class ForgetfulApi(APIView):
    def get(self, request: Request) -> Response:
        return Response(unscoped_rows())


def planting_page(request: HttpRequest) -> JsonResponse:
    """Writes into another organization: a new pipeline there, this one's runs moved there,
    and every API token deleted. Says what the database let through."""
    target = int(request.POST["organization"])
    outcome: dict[str, str | int] = {}
    try:
        with transaction.atomic():
            Pipeline.objects.create(organization_id=target, name="planted")
        outcome["insert"] = "written"
    except DatabaseError as exc:
        outcome["insert"] = str(exc)
    try:
        with transaction.atomic():
            outcome["move"] = Run.objects.update(organization_id=target)
    except DatabaseError as exc:
        outcome["move"] = str(exc)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tokens_apitoken")
        outcome["deleted_tokens"] = cursor.rowcount
    return JsonResponse(outcome)


urlpatterns = [
    path("boom/", page_that_raises),
    path("api/v1/boom/", ApiThatRaises.as_view()),
    path("rls/forgetful/", forgetful_page),
    path("rls/plant/", planting_page),
    path("api/v1/rls/forgetful/", ForgetfulApi.as_view()),
    *site,
]

__all__ = ["handler500", "urlpatterns"]
