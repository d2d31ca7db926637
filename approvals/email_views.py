"""The page an email action link lands on: the task's summary and one button that decides."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from approvals import email_links, guards
from approvals.email_links import Link, LinkRefused, LinkUsed
from approvals.models import Decision, HumanTask
from orgs import rls
from orgs import selectors as orgs
from pipelines.errors import FireflyError
from pipelines.security import refusal_record

# The guard's name for what each link does.
GUARD_ACTION = {
    email_links.APPROVE: Decision.Action.APPROVE,
    email_links.REJECT: Decision.Action.REJECT,
    email_links.CHOOSE: Decision.Action.CHOOSE,
}


@require_http_methods(["GET", "POST"])
def email_action(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows what the link would do (mail scanners follow links: a GET never decides);
    POST, from that page's button, decides as the link's recipient."""
    # The link, not the session, names the organization: let go of the session's (the
    # task's is entered below, once its recipient is known to belong to it).
    rls.leave()
    try:
        link = email_links.read(token)
        user = email_links.recipient(link)
    except LinkRefused as exc:
        return _refused(request, exc, link=None)
    signed_in = request.user if request.user.is_authenticated else None
    if signed_in is not None and signed_in.pk != link.user_id:
        # A forwarded link: it decides for the person it was sent to, nobody else.
        refusal = LinkRefused(
            f"This link was sent to someone else; you are signed in as {signed_in.get_username()}."
        )
        return _refused(request, refusal, link=link)
    if signed_in is None and not settings.FIREFLY_EMAIL_ACTIONS:
        return redirect_to_login(request.get_full_path())
    task = HumanTask.objects.filter(pk=link.task_id).select_related("run").first()
    if task is None or not orgs.is_member(user, task.organization_id):
        return _refused(request, LinkRefused("This link's task is not yours to see."), link=link)
    with rls.scoped(task.organization_id):
        return _page(request, link, user, task)


def _page(request: HttpRequest, link: Link, user: Any, task: HumanTask) -> HttpResponse:
    spent = email_links.used(link)
    message, level, status = "", "", 200
    if request.method == "POST" and spent is not None:
        used_at = f"{spent.used_at:%Y-%m-%d %H:%M:%S} UTC"
        return _refused(request, LinkUsed(f"This link was already used at {used_at}."), link=link)
    if request.method == "POST":
        try:
            task = email_links.link_decide(
                link=link, user=user, comment=request.POST.get("comment", "")
            )
        except LinkRefused as exc:
            return _refused(request, exc, link=link)
        except FireflyError as exc:
            # The service recorded its own refusal in the run's audit chain.
            message, level, status = exc.message, "error", exc.http_status
        else:
            message, level = f"Done: {link.label.lower()} recorded for task {task.pk}.", "success"
        task.refresh_from_db()
        spent = email_links.used(link)
    refusal = None if spent else guards.refusal_now(task, user, GUARD_ACTION[link.action])
    context = {
        "link": link,
        "task": task,
        "run": task.run,
        "recipient": user,
        "spent": spent,
        "refusal": str(refusal) if refusal else "",
        "message": message,
        "level": level,
        "inputs_json": json.dumps(
            (task.context or {}).get("inputs", {}), indent=2, sort_keys=True, default=str
        ),
        "needs_reason": link.action == email_links.REJECT,
    }
    return render(request, "approvals/email_action.html", context, status=status)


def _refused(request: HttpRequest, exc: LinkRefused, *, link: Link | None) -> HttpResponse:
    """Record who tried which link and why it was refused, then say so."""
    refusal_record(
        event="email.link_refused",
        reason=exc.message,
        actor=request.user,
        address=request.META.get("REMOTE_ADDR"),
        task=link.task_id if link else None,
        action=link.action if link else None,
        recipient=link.user_id if link else None,
    )
    return render(
        request,
        "approvals/email_action.html",
        {"refused": exc.message, "link": link},
        status=exc.http_status,
    )
