"""Conversions between table rows and the value objects of `dockyard.domain.ports`."""

from __future__ import annotations

import json
from typing import Any

from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import (
    IamUser,
    ManifestRecord,
    Repository,
    RepositorySettings,
    Template,
)


def manifest_row(repository_id: int, record: ManifestRecord) -> dict[str, Any]:
    return {
        "repository_id": repository_id,
        "digest": str(record.digest),
        "media_type": record.media_type,
        "size": record.size,
        "artifact_type": record.artifact_type,
        "subject_digest": str(record.subject) if record.subject else None,
        "annotations": json.dumps(record.annotations) if record.annotations else None,
        "pushed_at": record.pushed_at,
        "image_size": record.image_size,
        "config_media_type": record.config_media_type,
        "last_pulled_at": record.last_pulled_at,
        "storage_class": record.storage_class,
        "last_archived_at": record.last_archived_at,
        "last_activated_at": record.last_activated_at,
    }


def manifest_record(row: Any) -> ManifestRecord:
    return ManifestRecord(
        digest=Digest.parse(row.digest),
        media_type=row.media_type,
        size=row.size,
        artifact_type=row.artifact_type,
        subject=Digest.parse(row.subject_digest) if row.subject_digest else None,
        annotations=json.loads(row.annotations) if row.annotations else {},
        pushed_at=row.pushed_at,
        image_size=row.image_size,
        config_media_type=row.config_media_type,
        last_pulled_at=row.last_pulled_at,
        storage_class=row.storage_class,
        last_archived_at=row.last_archived_at,
        last_activated_at=row.last_activated_at,
    )


def user_record(row: Any) -> IamUser:
    return IamUser(row.account_id, row.user_name, row.user_id, row.path, row.created_at)


def template_record(row: Any) -> Template:
    return Template(row.prefix, json.loads(row.document), row.created_at, row.updated_at)


def settings_row(settings: RepositorySettings) -> dict[str, Any]:
    return {
        "tag_mutability": settings.tag_mutability,
        "mutability_exclusions": json.dumps(list(settings.mutability_exclusions))
        if settings.mutability_exclusions
        else None,
        "scan_on_push": settings.scan_on_push,
        "encryption_type": settings.encryption_type,
        "kms_key": settings.kms_key,
    }


def repository_record(row: Any) -> Repository:
    settings = RepositorySettings(
        tag_mutability=row.tag_mutability,
        mutability_exclusions=tuple(json.loads(row.mutability_exclusions)) if row.mutability_exclusions else (),
        scan_on_push=bool(row.scan_on_push),
        encryption_type=row.encryption_type,
        kms_key=row.kms_key,
    )
    return Repository(row.id, RepositoryRef(row.account_id, row.region, row.name), row.created_at, settings)
