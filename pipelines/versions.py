"""Pipeline versions: creating them, and reading a version's parsed spec (cached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from pipelines.audit import AuditChain
from pipelines.errors import NotFound
from pipelines.models import Pipeline, PipelineVersion
from pipelines.spec import PipelineSpec, parse_spec


@dataclass(frozen=True)
class VersionInfo:
    spec: PipelineSpec
    pipeline_id: int
    pipeline_name: str
    number: int


_versions: dict[int, VersionInfo] = {}


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


def pipeline_create(*, spec: Any, actor: Any = None) -> PipelineVersion:
    """Validate a spec and save it as the pipeline's next version.

    A spec identical to the latest version returns that version unchanged.
    """
    version, _ = pipeline_create_or_get(spec=spec, actor=actor)
    return version


@transaction.atomic
def pipeline_create_or_get(*, spec: Any, actor: Any = None) -> tuple[PipelineVersion, bool]:
    """As `pipeline_create`; returns (version, created): False for the unchanged latest."""
    parsed = parse_spec(spec)
    pipeline, _ = Pipeline.objects.get_or_create(name=parsed.name)
    # Lock the pipeline so two uploads of one name cannot take the same number.
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    latest = pipeline.versions.order_by("-number").first()
    if latest is not None and latest.spec == spec:
        return latest, False
    version = PipelineVersion.objects.create(
        pipeline=pipeline,
        number=(latest.number if latest else 0) + 1,
        spec=spec,
        created_by=actor,
    )
    chain = AuditChain(pipeline, pipeline.pk)
    chain.add("pipeline.version_created", actor=actor, data={"version": version.number})
    chain.flush()
    Pipeline.objects.filter(pk=pipeline.pk).update(
        description=parsed.description, audit_seq=pipeline.audit_seq, audit_head=pipeline.audit_head
    )
    return version, True


def pipeline_version(name: str, number: int | None = None) -> PipelineVersion:
    versions = PipelineVersion.objects.select_related("pipeline").filter(pipeline__name=name)
    version = (versions.filter(number=number) if number else versions.order_by("-number")).first()
    if version is None:
        what = f"pipeline {name!r}" + (f" version {number}" if number else "")
        raise NotFound(f"No {what}.")
    return version
