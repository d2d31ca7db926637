"""`POST /hooks/<token>/`: a delivery from another system. No session, no CSRF token and
no API token: the signature with the hook's secret is the authentication."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inbound.receiving import delivery_receive


def _declared(request: HttpRequest) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


@csrf_exempt
@require_POST
def receive(request: HttpRequest, token: str) -> JsonResponse:
    answer = delivery_receive(
        token=token,
        read=request.read,
        headers=request.headers,
        content_length=_declared(request),
        address=request.META.get("REMOTE_ADDR"),
    )
    body = dict(answer.body)
    if answer.run_id is not None:
        body["url"] = request.build_absolute_uri(reverse("api:run", args=[answer.run_id]))
    return JsonResponse(body, status=answer.status, headers=answer.headers)
