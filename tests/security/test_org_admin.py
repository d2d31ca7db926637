"""Attacks on organization administration: the services refuse, record, and change nothing;
the Django admin shows staff only the organizations they administer."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from accounts import services
from approvals.models import HumanTask
from inbound import services as inbound
from inbound.models import InboundDelivery
from orgs.admin import OrganizationScopedAdmin
from orgs.models import Membership, Organization
from pipelines import permissions
from pipelines import services as pipelines
from pipelines.errors import Conflict, NotFound, PermissionDenied
from pipelines.models import AuditEntry, Pipeline, PipelineGrant, SecurityEvent
from tests.approvals.conftest import drive
from tokens.services import token_create
from webhooks.models import Webhook

GATED = {
    "name": "release",
    "steps": [
        {"name": "build", "type": "noop"},
        {
            "name": "review",
            "type": "approval",
            "after": ["build"],
            "config": {"assignee_role": "qa"},
        },
    ],
}


@pytest.fixture
def two(db: Any, django_user_model: Any) -> dict[str, Any]:
    """Acme (admin alice, member mallory) and Globex (admin carol), each with a waiting run
    of "release", a token, a webhook, an inbound hook and one of its deliveries."""
    world: dict[str, Any] = {}
    for slug, admin_name in (("acme", "alice"), ("globex", "carol")):
        org = Organization.objects.create(slug=slug, name=slug.title())
        user = django_user_model.objects.create_user(admin_name, password="x", is_staff=True)
        Membership.objects.create(user=user, organization=org, role="admin")
        pipelines.pipeline_create(spec=GATED, organization=org, member_role="viewer")
        drive(pipelines.run_start(pipeline="release", inputs={}, organization=org))
        token_create(user=user, name=f"{slug}-ci", organization=org)
        Webhook.objects.create(
            organization=org, url=f"https://{slug}.example.com/h", events=["run.failed"]
        )
        hook = inbound.hook_create(pipeline="release", name="ci", organization=org)
        InboundDelivery.objects.create(
            organization=org, hook=hook, outcome="refused", http_status=401, reason="forged"
        )
        world[slug] = org
        world[admin_name] = user
        world[f"{slug}_pipeline"] = Pipeline.objects.get(organization=org)
    mallory = django_user_model.objects.create_user("mallory", password="x")
    Membership.objects.create(user=mallory, organization=world["acme"], role="member")
    world["mallory"] = mallory
    return world


def refusals(actor: Any) -> list[str]:
    return list(
        SecurityEvent.objects.filter(event="organization.refused", actor=actor)
        .order_by("id")
        .values_list("data__action", flat=True)
    )


def test_a_member_cannot_grant_themselves_operator(two):
    mallory, pipeline = two["mallory"], two["acme_pipeline"]
    with pytest.raises(PermissionDenied):
        services.grant_set(
            organization=two["acme"],
            pipeline=pipeline,
            role="operator",
            actor=mallory,
            username="mallory",
        )
    with pytest.raises(PermissionDenied):
        services.pipeline_set_member_role(
            organization=two["acme"], pipeline=pipeline, role="operator", actor=mallory
        )
    with pytest.raises(PermissionDenied):
        services.membership_set_role(
            organization=two["acme"],
            membership_id=Membership.objects.get(user=mallory).pk,
            role="admin",
            actor=mallory,
        )
    assert not PipelineGrant.objects.exists()
    assert Membership.objects.get(user=mallory).role == "member"
    assert not permissions.allowed(mallory, "operate_run", pipeline.versions.get().runs.get())
    assert refusals(mallory) == ["grant_set", "pipeline_set_member_role", "membership_set_role"]


def test_an_admin_of_one_organization_cannot_touch_anothers_by_id(two):
    alice, globex = two["alice"], two["globex"]
    grant = PipelineGrant.objects.create(
        pipeline=two["globex_pipeline"], user=two["carol"], role="viewer"
    )
    carol_membership = Membership.objects.get(user=two["carol"])
    seq = two["globex_pipeline"].audit_seq
    attempts = [
        lambda: services.grant_remove(organization=two["acme"], grant_id=grant.pk, actor=alice),
        lambda: services.grant_set(
            organization=two["acme"],
            pipeline=two["globex_pipeline"].pk,
            role="operator",
            actor=alice,
            username="alice",
        ),
        lambda: services.pipeline_set_member_role(
            organization=two["acme"], pipeline=two["globex_pipeline"].pk, role="", actor=alice
        ),
        lambda: services.membership_remove(
            organization=two["acme"], membership_id=carol_membership.pk, actor=alice
        ),
        lambda: services.webhook_deactivate(
            organization=two["acme"],
            webhook_id=Webhook.objects.get(organization=globex).pk,
            actor=alice,
        ),
        # Naming the other organization outright: she is not in it, so it does not exist.
        lambda: services.membership_add(
            organization=globex, username="alice", role="admin", actor=alice
        ),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            attempt()
    assert PipelineGrant.objects.filter(pk=grant.pk, role="viewer").exists()
    assert Membership.objects.filter(pk=carol_membership.pk, role="admin").exists()
    assert Webhook.objects.get(organization=globex).active
    assert not Membership.objects.filter(user=alice, organization=globex).exists()
    assert Pipeline.objects.get(pk=two["globex_pipeline"].pk).audit_seq == seq
    assert len(refusals(alice)) == len(attempts)


def test_the_last_admin_stays_and_a_demotion_counts_at_once(two, django_user_model):
    alice, acme = two["alice"], two["acme"]
    mine = Membership.objects.get(user=alice)
    with pytest.raises(Conflict):
        services.membership_set_role(
            organization=acme, membership_id=mine.pk, role="member", actor=alice
        )
    with pytest.raises(Conflict):
        services.membership_remove(organization=acme, membership_id=mine.pk, actor=alice)
    assert Membership.objects.get(pk=mine.pk).role == "admin"
    # With a second admin she may step down, and her next action in the same request is
    # judged by the new role.
    services.membership_set_role(
        organization=acme,
        membership_id=Membership.objects.get(user=two["mallory"]).pk,
        role="admin",
        actor=alice,
    )
    assert permissions.allowed(alice, "manage_organization", acme)
    services.membership_set_role(
        organization=acme, membership_id=mine.pk, role="member", actor=alice
    )
    assert not permissions.allowed(alice, "manage_organization", acme)
    with pytest.raises(PermissionDenied):
        services.grant_set(
            organization=acme,
            pipeline=two["acme_pipeline"],
            role="viewer",
            actor=alice,
            username="alice",
        )


def test_removing_a_member_drops_their_grants_in_the_pipelines_chain(two):
    acme, alice, mallory = two["acme"], two["alice"], two["mallory"]
    pipeline = two["acme_pipeline"]
    services.grant_set(
        organization=acme, pipeline=pipeline, role="operator", actor=alice, username="mallory"
    )
    assert permissions.allowed(mallory, "operate_run", pipeline.versions.get().runs.get())
    services.membership_remove(
        organization=acme, membership_id=Membership.objects.get(user=mallory).pk, actor=alice
    )
    assert not PipelineGrant.objects.exists()
    events = list(
        AuditEntry.objects.filter(pipeline=pipeline, run__isnull=True)
        .order_by("seq")
        .values_list("event", flat=True)
    )
    assert events[-2:] == ["pipeline.grant_set", "pipeline.grant_removed"]


def test_bad_roles_and_names_are_refused_by_name(two):
    acme, alice = two["acme"], two["alice"]
    with pytest.raises(Exception, match="role must be one of member, author, admin"):
        services.membership_add(organization=acme, username="carol", role="owner", actor=alice)
    with pytest.raises(Exception, match="No active user named 'nobody'"):
        services.membership_add(organization=acme, username="nobody", role="member", actor=alice)
    # carol exists, but in another organization: no grant to a non-member.
    with pytest.raises(Exception, match="not a member of this organization"):
        services.grant_set(
            organization=acme,
            pipeline=two["acme_pipeline"],
            role="viewer",
            actor=alice,
            username="carol",
        )
    assert not PipelineGrant.objects.exists()


# --- the Django admin -----------------------------------------------------------------


TENANT_ADMINS = [
    (model, model_admin)
    for model, model_admin in admin.site._registry.items()
    if any(f.name == "organization" for f in model._meta.get_fields())
]


def test_every_admin_of_a_tenant_table_is_scoped():
    assert len(TENANT_ADMINS) >= 15
    unscoped = [m.__name__ for m, a in TENANT_ADMINS if not isinstance(a, OrganizationScopedAdmin)]
    assert not unscoped


def test_staff_see_none_of_another_organizations_rows_in_the_admin(two):
    alice = two["alice"]
    alice.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(alice)
    assert HumanTask.objects.filter(organization=two["globex"]).exists()
    for model, _ in TENANT_ADMINS:
        label = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        page = client.get(reverse(f"{label}_changelist"))
        assert page.status_code == 200, label
        shown = {row.organization_id for row in page.context["cl"].result_list}
        assert two["globex"].pk not in shown, label
        others = model._default_manager.filter(organization=two["globex"]).values_list(
            "pk", flat=True
        )
        for pk in list(others[:3]):
            change = client.get(reverse(f"{label}_change", args=[pk]))
            # Django answers a row it cannot find with a redirect to the admin index.
            assert change.status_code in (302, 404), (label, pk, change.status_code)
    # Filter choices name only her organization's pipelines and people.
    audit = client.get(reverse("admin:pipelines_auditentry_changelist")).content.decode()
    assert "carol" not in audit
    organizations = client.get(reverse("admin:orgs_organization_changelist"))
    assert [o.slug for o in organizations.context["cl"].result_list] == ["acme"]


def test_a_superuser_sees_every_organization(two, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(root)
    page = client.get(reverse("admin:pipelines_pipeline_changelist"))
    assert {p.organization_id for p in page.context["cl"].result_list} == {
        two["acme"].pk,
        two["globex"].pk,
    }
