"""Single sign-on over OpenID Connect: strict ID token checks, users and memberships from claims."""

from __future__ import annotations

import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation, ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from accounts.models import Identity, ProvidedMembership
from orgs.models import Membership, Organization
from pipelines.security import refusal_record

log = logging.getLogger("firefly.sso")

# Claims the ID token must carry (OpenID Connect Core 3.1.3.7); PyJWT checks each one.
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat"]


class Refused(Exception):
    """A sign-in the provider's answer does not allow; the message says why."""


def enabled() -> bool:
    """Single sign-on is on when a client id is configured (FIREFLY_OIDC_CLIENT_ID)."""
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", ""))


def sign_in_options(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the provider's name for the login page's button, when SSO is on."""
    if not enabled():
        return {}
    return {"sso_provider_name": settings.FIREFLY_OIDC_PROVIDER_NAME}


def _refuse(request: HttpRequest | None, reason: str, **data: Any) -> None:
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    refusal_record(
        event="sso.refused",
        reason=reason[:1000],
        address=address,
        issuer=getattr(settings, "FIREFLY_OIDC_ISSUER", ""),
        **data,
    )


class OIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's code flow, with the checks it leaves out.

    The library checks the signature, the algorithm and the nonce but not the audience or
    the issuer, and lets PyJWT's expiry error escape as a server error. Here the ID token
    is decoded once with every check, each refusal is recorded, and the user is matched on
    (issuer, sub), then given the memberships the group claim names.
    """

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        # Only the callback passes a nonce: a password login never reaches the provider.
        if not enabled() or request is None or "nonce" not in kwargs:
            return None
        self._username = ""
        try:
            return super().authenticate(request, **kwargs)
        except Refused as exc:
            _refuse(request, str(exc), username=self._username)
        except SuspiciousOperation as exc:
            _refuse(request, f"the provider's answer was refused: {exc}")
        except jwt.InvalidTokenError as exc:
            _refuse(request, f"the ID token is invalid: {exc}")
        except requests.RequestException as exc:
            # An unreachable provider, or one that refused the code (replayed, expired).
            _refuse(request, f"the provider did not complete the sign-in: {exc}")
        return None

    def get_user(self, user_id: Any) -> Any:
        """The session's user, active only, and none at all once SSO is turned off."""
        if not enabled():
            return None
        try:
            user = self.UserModel._default_manager.get(pk=user_id)
        except self.UserModel.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        if "nonce" not in kwargs:
            # A userinfo answer sent as a signed JWT: the library's signature check.
            return dict(super().verify_token(token, **kwargs))
        return self.verify_id_token(token, nonce=kwargs["nonce"])

    def verify_id_token(self, token: str, *, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims, or Refused naming the first check that failed."""
        issuer = settings.FIREFLY_OIDC_ISSUER
        if not issuer:
            raise ImproperlyConfigured("Set FIREFLY_OIDC_ISSUER: ID tokens are checked against it.")
        try:
            key = self.OIDC_RP_IDP_SIGN_KEY or self.retrieve_matching_jwk(token)
        except jwt.InvalidTokenError as exc:
            raise Refused(f"the ID token is malformed: {exc}") from exc
        except SuspiciousOperation as exc:
            raise Refused(f"no key of the provider signed the ID token: {exc}") from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=issuer,
                leeway=settings.FIREFLY_OIDC_LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Refused("the ID token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Refused(f"the ID token is not for this client ({exc})") from exc
        except jwt.InvalidIssuerError as exc:
            raise Refused(f"the ID token comes from another issuer ({exc})") from exc
        except jwt.InvalidSignatureError as exc:
            raise Refused("the ID token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise Refused(f"the ID token is invalid: {exc}") from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise Refused("the ID token names several audiences but not this client as azp")
        if getattr(settings, "OIDC_USE_NONCE", True) and claims.get("nonce") != nonce:
            raise Refused("the ID token's nonce does not match this sign-in")
        return claims

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if str(userinfo.get("sub")) != str(payload["sub"]):
            raise Refused("the userinfo answer is about another subject than the ID token")
        claims = {**payload, **userinfo}
        self._username = str(claims.get("preferred_username") or claims.get("email") or "")
        try:
            return user_from_claims(issuer=payload["iss"], claims=claims)
        except IntegrityError as exc:
            raise Refused("another sign-in of this user ran at the same time; try again") from exc


@transaction.atomic
def user_from_claims(*, issuer: str, claims: dict[str, Any]) -> Any:
    """The user for (issuer, sub), created on first sign-in, with their details, memberships
    and (if FIREFLY_OIDC_SYNC_GROUPS) groups brought in line with the claims."""
    user_model = get_user_model()
    subject = str(claims["sub"])
    username = _username(claims)
    identity = (
        Identity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is None:
        if user_model._default_manager.filter(username=username).exists():
            raise Refused(
                f"the username {username!r} belongs to an account that does not sign in"
                " with this provider"
            )
        user = user_model._default_manager.create_user(username, email=claims.get("email") or "")
        identity = Identity.objects.create(user=user, issuer=issuer, subject=subject)
    user = identity.user
    if not user.is_active:
        raise Refused(f"the account {user.get_username()!r} is deactivated")
    _update_details(user, username, claims)
    values = _claim_values(claims)
    _sync_memberships(user, values)
    if settings.FIREFLY_OIDC_SYNC_GROUPS:
        _sync_groups(user, values)
    identity.last_sign_in_at = timezone.now()
    identity.save(update_fields=["last_sign_in_at"])
    return user


def _username(claims: dict[str, Any]) -> str:
    username = str(claims.get("preferred_username") or claims.get("email") or "")
    if not username:
        raise Refused("the provider sent neither preferred_username nor email")
    if len(username) > 150:
        raise Refused("the provider's username is longer than 150 characters")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise Refused(f"the provider's username {username!r} is not valid here") from exc
    return username


def _update_details(user: Any, username: str, claims: dict[str, Any]) -> None:
    changed = {
        "email": str(claims.get("email") or user.email)[:254],
        "first_name": str(claims.get("given_name") or user.first_name)[:150],
        "last_name": str(claims.get("family_name") or user.last_name)[:150],
    }
    # A renamed account follows the provider unless the new name is someone else's.
    if username != user.get_username():
        taken = type(user)._default_manager.filter(username=username).exclude(pk=user.pk)
        if taken.exists():
            log.warning("sso: %s is now %r at the provider, a name taken here", user, username)
        else:
            changed["username"] = username
    fields = [name for name, value in changed.items() if getattr(user, name) != value]
    for name in fields:
        setattr(user, name, changed[name])
    if fields:
        user.save(update_fields=fields)


def _claim_values(claims: dict[str, Any]) -> list[str]:
    raw = claims.get(settings.FIREFLY_OIDC_GROUPS_CLAIM) or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        log.warning("sso: the %s claim is not a list; ignored", settings.FIREFLY_OIDC_GROUPS_CLAIM)
        return []
    return [value for value in raw if isinstance(value, str)]


def wanted_memberships(values: list[str]) -> dict[str, str]:
    """{organization slug: role} from values `<prefix><slug>[:<role>]` (role member when
    left out); the highest role wins when a slug comes more than once."""
    prefix = settings.FIREFLY_OIDC_ORGANIZATION_PREFIX
    wanted: dict[str, str] = {}
    for value in values:
        if not value.startswith(prefix):
            continue
        slug, _, role = value[len(prefix) :].partition(":")
        role = role or Membership.Role.MEMBER
        if role not in Membership.Role.values or not slug:
            log.warning("sso: group %r names no organization role; ignored", value)
            continue
        rank = Membership.RANK[Membership.Role(role)]
        if slug not in wanted or rank > Membership.RANK[Membership.Role(wanted[slug])]:
            wanted[slug] = role
    return wanted


def _sync_memberships(user: Any, values: list[str]) -> None:
    wanted = wanted_memberships(values)
    organizations = {org.slug: org for org in Organization.objects.filter(slug__in=wanted)}
    unknown = sorted(set(wanted) - set(organizations))
    if unknown:
        # Organizations are made by operators in Firefly, never by a claim.
        log.warning("sso: %s's claim names unknown organizations %s; ignored", user, unknown)
    current = {
        m.organization.slug: m
        for m in Membership.objects.select_for_update()
        .filter(user=user)
        .select_related("organization")
    }
    provided = set(
        ProvidedMembership.objects.filter(membership__user=user).values_list(
            "membership_id", flat=True
        )
    )
    for slug, org in organizations.items():
        membership = current.get(slug)
        if membership is None:
            made = Membership.objects.create(user=user, organization=org, role=wanted[slug])
            ProvidedMembership.objects.create(membership=made)
            log.info("sso: %s joins %s as %s", user, slug, wanted[slug])
        elif membership.pk in provided and membership.role != wanted[slug]:
            log.info("sso: %s in %s: %s -> %s", user, slug, membership.role, wanted[slug])
            membership.role = wanted[slug]
            membership.save(update_fields=["role"])
    for slug, membership in current.items():
        if membership.pk in provided and slug not in organizations:
            log.info("sso: %s leaves %s (no longer in the claim)", user, slug)
            membership.delete()


def _sync_groups(user: Any, values: list[str]) -> None:
    prefix = settings.FIREFLY_OIDC_ORGANIZATION_PREFIX
    names = {value for value in values if not value.startswith(prefix)}
    groups = list(Group.objects.filter(name__in=names))
    missing = sorted(names - {group.name for group in groups})
    if missing:
        log.info("sso: %s's claim names groups that do not exist here: %s", user, missing)
    user.groups.set(groups)


class AuthenticateView(oidc_views.OIDCAuthenticationRequestView):
    """/oidc/authenticate/: to the provider's login; 404 while SSO is off."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        return super().get(request)


class CallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """/oidc/callback/: back from the provider; refusals are recorded, then the login page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        error = request.GET.get("error")
        if error:
            _refuse(request, f"the provider answered error={error[:100]!r}")
        elif "code" in request.GET and "oidc_states" not in request.session:
            _refuse(request, "a provider's answer arrived, but no sign-in began in this browser")
            return self.login_failure()
        try:
            return super().get(request)
        except SuspiciousOperation as exc:
            # The state is not one this browser was given: a forged or replayed answer.
            _refuse(request, f"the provider's answer was refused: {exc}")
            return self.login_failure()
