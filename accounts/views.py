"""The organization page (members, grants, tokens, webhooks) and the header's switcher."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import selectors, services
from orgs import selectors as orgs
from orgs.middleware import SESSION_KEY
from orgs.models import Membership
from pipelines import permissions
from pipelines.errors import FireflyError, PermissionDenied
from pipelines.models import PipelineRole
from pipelines.security import refusal_record
from tokens import selectors as token_selectors
from tokens import services as token_services
from tokens.models import ApiToken
from webhooks import selectors as webhook_selectors
from webhooks import services as webhook_services
from webhooks.models import WEBHOOK_EVENTS, Webhook

TOKENS_SHOWN = 200
TOKEN_NAME_MAX = ApiToken._meta.get_field("name").max_length or 100
MAX_TOKEN_DAYS = 3650
WEBHOOK_URL_MAX = Webhook._meta.get_field("url").max_length or 500

# Pages that make sense in any organization; after a switch, any other page (one run,
# one task of the organization left) goes to the inbox instead of a 404.
SWITCH_BACK_TO = {"home", "runs", "pipelines", "org"}


def _address(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR")


def _organization(request: HttpRequest) -> Any:
    org = getattr(request, "organization", None)
    if org is None:
        raise Http404("You belong to no organization.")
    return org


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    org = _organization(request)
    user = request.user
    admin = permissions.allowed(user, "manage_organization", org)
    context: dict[str, Any] = {
        "nav": "org",
        "organization": org,
        "is_admin": admin,
        "own_memberships": list(selectors.memberships_of(user)),
        "tokens": list(token_selectors.token_list(viewer=user, organization=org)[:TOKENS_SHOWN]),
        "member_roles": Membership.Role.choices,
        "pipeline_roles": PipelineRole.choices,
        "webhook_events": WEBHOOK_EVENTS,
        "token_days": token_services.default_lifetime().days,
    }
    if admin:
        context.update(
            members=list(selectors.members(org)),
            pipelines=list(selectors.pipelines_with_grants(org)),
            webhooks=list(webhook_selectors.webhook_list(org)),
        )
    context.update(extra)
    return context


@login_required
def organization(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/organization.html", _context(request))


def _refused(request: HttpRequest, exc: FireflyError) -> HttpResponse:
    """Not found: a 404 page; not allowed: a 403 page; anything else: the message on the
    organization page (the form's input was wrong, or the change would break a rule)."""
    if exc.http_status == 404:
        raise Http404(exc.message)
    if isinstance(exc, PermissionDenied):
        back = reverse("org")
        return render(request, "403.html", {"text": exc.message, "back": back}, status=403)
    messages.error(request, exc.message)
    return redirect("org")


def _act(
    request: HttpRequest, change: Callable[..., Any], done: str, **arguments: Any
) -> HttpResponse:
    """Call one service as the signed-in user in the current organization, then go back to
    the organization page (with what happened, or why not)."""
    org = _organization(request)
    try:
        change(organization=org, actor=request.user, address=_address(request), **arguments)
    except FireflyError as exc:
        return _refused(request, exc)
    messages.success(request, done)
    return redirect("org")


# --- members --------------------------------------------------------------------------


@require_POST
@login_required
def member_add(request: HttpRequest) -> HttpResponse:
    username = request.POST.get("username", "").strip()
    role = request.POST.get("role", "")
    return _act(
        request,
        services.membership_add,
        f"{username} added as {role}.",
        username=username,
        role=role,
    )


@require_POST
@login_required
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    role = request.POST.get("role", "")
    return _act(
        request,
        services.membership_set_role,
        f"Role changed to {role}.",
        membership_id=membership_id,
        role=role,
    )


@require_POST
@login_required
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    return _act(request, services.membership_remove, "Member removed.", membership_id=membership_id)


# --- pipelines ------------------------------------------------------------------------


@require_POST
@login_required
def pipeline_member_role(request: HttpRequest, pipeline_id: int) -> HttpResponse:
    role = request.POST.get("role", "")
    done = f"Every member is now {role} of that pipeline." if role else "Pipeline made private."
    return _act(request, services.pipeline_set_member_role, done, pipeline=pipeline_id, role=role)


@require_POST
@login_required
def grant_add(request: HttpRequest, pipeline_id: int) -> HttpResponse:
    role = request.POST.get("role", "")
    holder = request.POST.get("holder", "")
    name = request.POST.get("name", "").strip()
    if holder not in ("user", "group"):
        holder = "user"
    return _act(
        request,
        services.grant_set,
        f"{name} is now {role} of that pipeline.",
        pipeline=pipeline_id,
        role=role,
        username=name if holder == "user" else "",
        group=name if holder == "group" else "",
    )


@require_POST
@login_required
def grant_remove(request: HttpRequest, grant_id: int) -> HttpResponse:
    return _act(request, services.grant_remove, "Grant removed.", grant_id=grant_id)


# --- tokens ---------------------------------------------------------------------------


@never_cache
@require_POST
@login_required
def token_create(request: HttpRequest) -> HttpResponse:
    """A token of the signed-in user for the current organization; its key shown once."""
    org = _organization(request)
    name = request.POST.get("name", "").strip()
    days = request.POST.get("expires_in_days", "").strip()
    if not name or len(name) > TOKEN_NAME_MAX:
        messages.error(request, f"Name the token (1 to {TOKEN_NAME_MAX} characters).")
        return redirect("org")
    if days and not (days.isdigit() and 1 <= int(days) <= MAX_TOKEN_DAYS):
        messages.error(request, f"Expires in: a number of days from 1 to {MAX_TOKEN_DAYS}.")
        return redirect("org")
    try:
        token, key = token_services.token_create(
            user=request.user,
            name=name,
            organization=org,
            expires_in=timedelta(days=int(days)) if days else None,
        )
    except FireflyError as exc:
        return _refused(request, exc)
    context = _context(request, new_token=token, new_token_key=key)
    return render(request, "accounts/organization.html", context)


@require_POST
@login_required
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    _organization(request)
    try:
        token = token_services.token_revoke(
            token_id=token_id, actor=request.user, address=_address(request)
        )
    except FireflyError as exc:
        return _refused(request, exc)
    messages.success(request, f"Token {token.name} ({token.prefix}) revoked.")
    return redirect("org")


# --- webhooks -------------------------------------------------------------------------


@never_cache
@require_POST
@login_required
def webhook_create(request: HttpRequest) -> HttpResponse:
    """A webhook of the current organization; its secret shown once."""
    org = _organization(request)
    url = request.POST.get("url", "").strip()
    events = request.POST.getlist("events")
    if not url or len(url) > WEBHOOK_URL_MAX:
        messages.error(request, f"Give the webhook's URL (at most {WEBHOOK_URL_MAX} characters).")
        return redirect("org")
    try:
        webhook = webhook_services.webhook_create(
            url=url,
            events=events,
            actor=request.user,
            address=_address(request),
            organization=org,
        )
    except FireflyError as exc:
        return _refused(request, exc)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("org")
    context = _context(request, new_webhook=webhook, new_webhook_secret=webhook.new_secret)
    return render(request, "accounts/organization.html", context)


@require_POST
@login_required
def webhook_deactivate(request: HttpRequest, webhook_id: int) -> HttpResponse:
    return _act(request, services.webhook_deactivate, "Webhook deactivated.", webhook_id=webhook_id)


# --- the switcher ---------------------------------------------------------------------


def _back(request: HttpRequest) -> str:
    """Where to go after a switch: the page it came from if that is a page of this site
    that every organization has, else the inbox."""
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    if safe and target.startswith("/") and not target.startswith("//"):
        try:
            match = resolve(target.split("?", 1)[0])
        except Resolver404:
            match = None
        if match is not None and match.url_name in SWITCH_BACK_TO:
            return target
    return reverse("home")


@require_POST
@login_required
def switch(request: HttpRequest) -> HttpResponse:
    """Act in another of the user's organizations (one they are not in does not exist)."""
    wanted = request.POST.get("organization", "").strip()
    org = orgs.resolve(request.user, wanted) if wanted else None
    if org is None:
        refusal_record(
            event="organization.refused",
            reason="switch to an organization the user does not belong to",
            actor=request.user,
            address=_address(request),
            organization=None,
            action="switch",
            wanted=wanted[:100],
        )
        raise Http404(f"No organization {wanted!r}.")
    request.session[SESSION_KEY] = org.slug
    messages.success(request, f"Now in {org.name}.")
    return redirect(_back(request))
