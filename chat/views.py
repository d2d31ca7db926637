"""`POST /chat/slack/interactions/`: Slack interactivity requests, signed with the app secret."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat.interactions import interaction_receive
from orgs import rls


@csrf_exempt
@require_POST
def slack_interactions(request: HttpRequest) -> HttpResponse:
    """No session and no CSRF token: the signature is the authentication, and the person
    is the Slack user it names (interactions.py)."""
    # The click names the task, and the task its organization: nothing of a session's.
    rls.leave()
    answer = interaction_receive(
        body=request.body, headers=request.headers, address=request.META.get("REMOTE_ADDR")
    )
    if answer.body is None:
        return HttpResponse(status=answer.status)
    return JsonResponse(answer.body, status=answer.status)
