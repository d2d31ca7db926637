"""Pipeline versions: creating them, and reading a version's parsed spec (cached)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, models, transaction

from orgs import selectors as orgs
from orgs.models import Organization
from pipelines import permissions
from pipelines.audit import AuditChain
from pipelines.errors import NotFound, PermissionDenied
from pipelines.models import Pipeline, PipelineVersion
from pipelines.security import refusal_record
from pipelines.spec import PipelineSpec, parse_spec


@dataclass(frozen=True)
class VersionInfo:
    spec: PipelineSpec
    pipeline_id: int
    pipeline_name: str
    number: int


_versions: dict[int, VersionInfo] = {}

M = TypeVar("M", bound=models.Model)

# Called in the transaction that saves a new version: `hook(version=, spec=, actor=)`.
# The schedules app keeps the spec's schedules in step there; an error it raises refuses
# the version (nothing is saved).
version_hooks: list[Callable[..., None]] = []


def on_version_created(hook: Callable[..., None]) -> None:
    """Call `hook(version=, spec=, actor=)` when a new version is saved, in its transaction."""
    if hook not in version_hooks:  # ready() may run again (tests, reloads): once is enough
        version_hooks.append(hook)


def version_info(version_id: int) -> VersionInfo:
    """A version's parsed spec and names; versions are immutable, so each process reads once."""
    info = _versions.get(version_id)
    if info is None:
        version = PipelineVersion.objects.select_related("pipeline").get(pk=version_id)
        info = VersionInfo(
            parse_spec(version.spec), version.pipeline_id, version.pipeline.name, version.number
        )
        _versions[version_id] = info
    return info


def version_spec(version_id: int) -> PipelineSpec:
    return version_info(version_id).spec


def pipeline_create(
    *, spec: Any, actor: Any = None, organization: Any = None, member_role: str | None = None
) -> PipelineVersion:
    """Validate a spec and save it as the pipeline's next version.

    A spec identical to the latest version returns that version unchanged.
    """
    version, _ = pipeline_create_or_get(
        spec=spec, actor=actor, organization=organization, member_role=member_role
    )
    return version


def pipeline_create_or_get(
    *, spec: Any, actor: Any = None, organization: Any = None, member_role: str | None = None
) -> tuple[PipelineVersion, bool]:
    """As `pipeline_create`; returns (version, created): False for the unchanged latest.

    In `organization` (None: the default one). A new pipeline needs an author of the
    organization and is seen only by its author, its grants and the organization's
    admins until `member_role` (here, or later by an admin) opens it to every member; a
    new version needs an author who operates the pipeline. Refusals are recorded.
    """
    org_id = orgs.pk_of(organization)
    parsed = parse_spec(spec)
    existing = Pipeline.objects.filter(organization_id=org_id, name=parsed.name).first()
    rule, obj = ("create_version", existing) if existing else ("create_pipeline", org_id)
    if not permissions.allowed(actor, rule, obj):
        reason = (
            f"You may not add pipeline {parsed.name!r} or a version of it in this"
            " organization: that takes its author role and, for an existing pipeline,"
            " its operator role."
        )
        refusal_record(
            event="pipeline.refused",
            reason=reason,
            actor=actor,
            organization=org_id,
            pipeline=parsed.name,
        )
        raise PermissionDenied(reason)
    return _create_version(spec, parsed, actor, org_id, member_role)


@transaction.atomic
def _create_version(
    spec: Any, parsed: PipelineSpec, actor: Any, org_id: int, member_role: str | None
) -> tuple[PipelineVersion, bool]:
    person = actor if permissions.is_person(actor) else None
    pipeline, created = Pipeline.objects.get_or_create(
        organization_id=org_id,
        name=parsed.name,
        defaults={"created_by": person, "member_role": member_role or ""},
    )
    # Lock the pipeline so two uploads of one name cannot take the same number.
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    latest = pipeline.versions.order_by("-number").first()
    if latest is not None and latest.spec == spec:
        return latest, False
    version = PipelineVersion.objects.create(
        organization_id=org_id,
        pipeline=pipeline,
        number=(latest.number if latest else 0) + 1,
        spec=spec,
        created_by=actor,
    )
    chain = AuditChain(pipeline, pipeline.pk)
    # A new pipeline's audience is part of what was decided when it was made.
    data = {"version": version.number, **({"member_role": pipeline.member_role} if created else {})}
    chain.add("pipeline.version_created", actor=actor, data=data)
    chain.flush()
    Pipeline.objects.filter(pk=pipeline.pk).update(
        description=parsed.description, audit_seq=pipeline.audit_seq, audit_head=pipeline.audit_head
    )
    for hook in version_hooks:
        hook(version=version, spec=parsed, actor=actor)
    return version, True


def pipeline_version(
    name: str, number: int | None = None, *, organization: Any = None
) -> PipelineVersion:
    """The version (latest when `number` is None) of the organization's pipeline `name`."""
    version = _read_version(name, number, organization)
    if version is None:
        what = f"pipeline {name!r}" + (f" version {number}" if number else "")
        raise NotFound(f"No {what}.")
    return version


def _read_version(name: str, number: int | None, organization: Any) -> PipelineVersion | None:
    """The version with its pipeline in one plain query: every run start reads it, and
    building it with the ORM cost ten times the round trip's CPU."""
    if connection.vendor != "postgresql":
        # SQLite returns times as text, which the ORM's converters turn into datetimes.
        where: dict[str, Any] = (
            {"organization__slug": settings.FIREFLY_DEFAULT_ORGANIZATION}
            if organization is None
            else {"organization_id": orgs.pk_of(organization)}
        )
        found = PipelineVersion.objects.select_related("pipeline").filter(
            **where, pipeline__name=name
        )
        return (found.filter(number=number) if number else found.order_by("-number")).first()
    quote = connection.ops.quote_name
    versions, pipelines = PipelineVersion._meta, Pipeline._meta
    v_fields, p_fields = list(versions.concrete_fields), list(pipelines.concrete_fields)
    columns = [f"v.{quote(f.column or f.name)}" for f in v_fields]
    columns += [f"p.{quote(f.column or f.name)}" for f in p_fields]
    if organization is None:
        # The default organization by its slug, in the same query: no round trip first
        # for its id (with no default organization yet there is no pipeline in it either).
        org = f"(SELECT id FROM {quote(Organization._meta.db_table)} WHERE slug = %s)"
        params: list[Any] = [settings.FIREFLY_DEFAULT_ORGANIZATION]
    else:
        org, params = "%s", [orgs.pk_of(organization)]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(versions.db_table)} v"
        f" JOIN {quote(pipelines.db_table)} p ON p.id = v.pipeline_id"
        f" WHERE v.organization_id = {org} AND p.name = %s"
    )
    params.append(name)
    if number:
        sql += " AND v.number = %s"
        params.append(number)
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY v.number DESC LIMIT 1", params)
        row = cursor.fetchone()
    if row is None:
        return None
    version = _from_row(PipelineVersion, v_fields, row[: len(v_fields)])
    version.pipeline = _from_row(Pipeline, p_fields, row[len(v_fields) :])
    return version


def _from_row(model: type[M], fields: list[Any], row: Any) -> M:
    values = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") and v is not None else v
        for f, v in zip(fields, row, strict=True)
    ]
    return model.from_db(connection.alias, [f.attname for f in fields], values)
