"""The site's URLs plus two that raise, for the server-error tests."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from firefly_site.urls import handler500
from firefly_site.urls import urlpatterns as site

# The message carries what an error page must never show, so showing it fails the test.
LEAK = f"boom {settings.SECRET_KEY} {settings.CELERY_BROKER_URL}"


def page_that_raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(LEAK)


class ApiThatRaises(APIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError(LEAK)


urlpatterns = [
    path("boom/", page_that_raises),
    path("api/v1/boom/", ApiThatRaises.as_view()),
    *site,
]

__all__ = ["handler500", "urlpatterns"]
