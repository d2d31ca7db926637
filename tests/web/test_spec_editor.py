"""The pipeline page's spec editor (authors only) and the step types page."""

from __future__ import annotations

import html
from typing import Any

import pytest
import yaml
from django.test import Client

from orgs.models import Membership, Organization
from pipelines import registry
from pipelines.models import AuditEntry, Pipeline, PipelineVersion, SecurityEvent
from tests.web.conftest import gate_pipeline

CHECK = "/pipelines/gated/edit/check/"
SAVE = "/pipelines/gated/edit/"


@pytest.fixture
def gated(users: dict[str, Any]) -> str:
    return gate_pipeline()


def _text(client: Client) -> str:
    """The editor's starting text, as the page shows it."""
    page = client.get("/pipelines/gated/").content.decode()
    start = page.index('name="spec"')
    start = page.index(">", start) + 1
    return html.unescape(page[start : page.index("</textarea>", start)])


def test_an_author_edits_from_the_current_spec(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    page = client.get("/pipelines/gated/").content.decode()
    assert 'id="spec-text"' in page
    assert 'hx-trigger="input changed delay:500ms"' in page
    assert 'aria-live="polite"' in page
    assert '<label for="spec-text">' in page
    text = _text(client)
    assert yaml.safe_load(text) == PipelineVersion.objects.get(pipeline__name="gated").spec


def test_the_check_marks_the_line_of_each_problem(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    text = _text(client).replace(
        "assignee_role: reviewers", "assignee_role: reviewers\n    quorum: 0"
    )
    line = text.splitlines().index("    quorum: 0") + 1
    answer = client.post(CHECK, {"spec": text}, HTTP_HX_REQUEST="true")
    assert answer.status_code == 200
    html = answer.content.decode()
    assert f'<li data-line="{line}">' in html
    assert "steps[review].config.quorum" in html
    assert f'class="gl bad" data-line="{line}"' in html
    assert 'id="spec-preview"' not in html  # the last valid picture stays
    fixed = client.post(CHECK, {"spec": text.replace("quorum: 0", "quorum: 2")}).content.decode()
    assert "Valid: 3 steps" in fixed
    assert 'id="spec-preview"' in fixed
    assert "gl bad" not in fixed
    assert PipelineVersion.objects.filter(pipeline__name="gated").count() == 1


def test_saving_makes_a_version_with_its_audit_entry(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    text = _text(client).replace(
        "assignee_role: reviewers", "assignee_role: reviewers\n    quorum: 2"
    )
    answer = client.post(SAVE, {"spec": text})
    assert answer.status_code == 302
    latest = PipelineVersion.objects.filter(pipeline__name="gated").order_by("-number").first()
    assert latest is not None
    assert latest.number == 2
    assert latest.created_by == users["boss"]
    assert latest.spec["steps"][1]["config"]["quorum"] == 2
    entry = AuditEntry.objects.filter(event="pipeline.version_created").order_by("-id").first()
    assert entry is not None
    assert entry.data["version"] == 2
    page = client.get("/pipelines/gated/").content.decode()
    assert "Version 2 of gated saved." in page


def test_an_invalid_save_shows_the_errors_and_saves_nothing(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    text = _text(client).replace("type: noop", "type: nothing", 1)
    answer = client.post(SAVE, {"spec": text})
    assert answer.status_code == 400
    html = answer.content.decode()
    assert "unknown step type" in html
    assert '<details class="card editor" id="edit" open>' in html
    assert PipelineVersion.objects.filter(pipeline__name="gated").count() == 1
    assert SecurityEvent.objects.filter(event="spec.refused", actor=users["boss"]).exists()


def test_the_editor_keeps_to_its_pipeline(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    text = _text(client).replace("name: gated", "name: another")
    answer = client.post(SAVE, {"spec": text})
    assert answer.status_code == 400
    assert "this page edits pipeline" in answer.content.decode()
    assert not Pipeline.objects.filter(name="another").exists()


@pytest.mark.parametrize("path", [CHECK, SAVE])
def test_a_member_who_is_no_author_gets_no_editor_and_403(
    client: Client, users: dict[str, Any], gated: str, path: str
) -> None:
    client.force_login(users["starter"])
    assert 'id="spec-text"' not in client.get("/pipelines/gated/").content.decode()
    spec = yaml.safe_dump(PipelineVersion.objects.get(pipeline__name="gated").spec)
    forged = spec.replace("assignee_role: reviewers", "assignee_role: starter")
    answer = client.post(path, {"spec": forged})
    assert answer.status_code == 403
    assert PipelineVersion.objects.filter(pipeline__name="gated").count() == 1
    assert SecurityEvent.objects.filter(event="pipeline.refused", actor=users["starter"]).exists()


def test_another_organizations_pipeline_is_not_found(
    client: Client, users: dict[str, Any], gated: str, django_user_model: Any
) -> None:
    other = Organization.objects.create(name="Other", slug="other")
    stranger = django_user_model.objects.create_user("stranger", password="x")
    Membership.objects.create(user=stranger, organization=other, role=Membership.Role.ADMIN)
    client.force_login(stranger)
    spec = yaml.safe_dump(PipelineVersion.objects.get(pipeline__name="gated").spec)
    assert client.post(CHECK, {"spec": spec}).status_code == 404
    assert client.post(SAVE, {"spec": spec}).status_code == 404
    assert PipelineVersion.objects.filter(pipeline__name="gated").count() == 1


def test_saving_needs_the_csrf_token(users: dict[str, Any], gated: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["boss"])
    spec = yaml.safe_dump(PipelineVersion.objects.get(pipeline__name="gated").spec)
    assert client.post(SAVE, {"spec": spec.replace("reviewers", "r1")}).status_code == 403
    assert client.post(CHECK, {"spec": spec}).status_code == 403
    assert PipelineVersion.objects.filter(pipeline__name="gated").count() == 1


def test_nasty_text_in_the_editor_is_a_clear_error(
    client: Client, users: dict[str, Any], gated: str
) -> None:
    client.force_login(users["boss"])
    for text in ("a: &x [1]\nb: *x\n", "[" * 5000, "x" * (300 * 1024), "name: gated\n\tsteps: []"):
        answer = client.post(CHECK, {"spec": text})
        assert answer.status_code == 200
        assert "problem" in answer.content.decode()


def test_the_step_types_page_lists_every_type(client: Client, users: dict[str, Any]) -> None:
    client.force_login(users["starter"])
    page = client.get("/step-types/").content.decode()
    for name in registry.names():
        assert f'id="type-{name}"' in page
    assert "waits for people" in page
    assert "quorum" in page
    assert "{#" not in page  # no template comment leaks into a page
    assert 'href="/step-types/"' in client.get("/pipelines/").content.decode()
