"""`dockyard lifecycle`: try a lifecycle policy offline against images described as `aws ecr describe-images`
prints them, and see what GetLifecyclePolicyPreview would answer.

Input images are DescribeImages `imageDetails` (a JSON list, or the whole response). Timestamps may be epoch
seconds or ISO-8601 strings (the aws CLI prints the latter); `lastRecordedPullTime`, `lastArchivedAt`,
`lastActivatedAt`, `imageStatus` (`ARCHIVED` puts an image in the archive class; a `storageClass` of
`STANDARD`/`ARCHIVE` may be given instead) and `subjectManifestDigest` are optional. DescribeImages does
not report what an index lists, so Dockyard reads an extra, optional `childManifestDigests` list on index
entries.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

import typer

from dockyard.domain.lifecycle import (
    ImageFacts,
    LifecyclePolicy,
    LifecyclePolicyInvalid,
    StorageClass,
    parse_policy,
    preview,
    preview_to_json,
)
from dockyard.domain.manifests import INDEX_TYPES

lifecycle_app = typer.Typer(help="Lifecycle policies: evaluate a policy offline.", no_args_is_help=True)

CHILDREN_FIELD: Final = "childManifestDigests"  # Dockyard's extension to DescribeImages' ImageDetail
_ARCHIVED_STATUS: Final = "ARCHIVED"


@lifecycle_app.callback()
def _group() -> None:
    """Lifecycle policies: evaluate a policy offline."""


@lifecycle_app.command()
def evaluate(
    policy: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="The lifecycle policy text (a JSON file)."),
    ],
    images: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='DescribeImages output: a list of imageDetails or {"imageDetails": [...]}.',
        ),
    ],
    now: Annotated[
        str | None,
        typer.Option(help="Evaluate as of this ISO-8601 time (default: now; no offset means UTC)."),
    ] = None,
) -> None:
    """Print what GetLifecyclePolicyPreview would answer for POLICY over IMAGES, as JSON."""
    parsed = _read_policy(policy)
    moment = _option_time(now) if now is not None else datetime.now(UTC)
    result = preview(parsed, _load_images(images), moment)
    typer.echo(json.dumps(preview_to_json(result), indent=2))


def _read_policy(path: Path) -> LifecyclePolicy:
    try:
        return parse_policy(_read_text(path, "--policy"))
    except LifecyclePolicyInvalid as error:
        typer.echo(error.message, err=True)  # the API's message, word for word
        raise typer.Exit(1) from None


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint=option) from None


def _option_time(text: str) -> datetime:
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        raise typer.BadParameter(f"not an ISO-8601 time: {text!r}", param_hint="--now") from None


def _load_images(path: Path) -> list[ImageFacts]:
    text = _read_text(path, "--images")
    try:
        images = [image_from_detail(detail) for detail in _image_details(json.loads(text))]
    except (ValueError, OverflowError, OSError) as error:  # bad JSON, fields or times (out of range too)
        raise typer.BadParameter(f"{path}: {error}", param_hint="--images") from None
    repeated = [digest for digest, count in Counter(image.digest for image in images).items() if count > 1]
    if repeated:
        raise typer.BadParameter(f"{path}: {repeated[0]} is listed more than once", param_hint="--images")
    return images


def _image_details(document: object) -> Sequence[Mapping[str, object]]:
    if isinstance(document, dict) and "imageDetails" in document:
        document = document["imageDetails"]
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise ValueError('expected a list of imageDetails or {"imageDetails": [...]}')
    return document


def image_from_detail(detail: Mapping[str, object]) -> ImageFacts:
    """One DescribeImages `ImageDetail` as the facts lifecycle evaluation needs."""
    children = _strings(detail, CHILDREN_FIELD)
    subject = detail.get("subjectManifestDigest")
    return ImageFacts(
        digest=_string(detail.get("imageDigest"), "imageDigest"),
        tags=_strings(detail, "imageTags"),
        pushed_at=_timestamp(detail.get("imagePushedAt"), "imagePushedAt"),
        last_pulled_at=_optional_timestamp(detail, "lastRecordedPullTime"),
        last_archived_at=_optional_timestamp(detail, "lastArchivedAt"),
        last_activated_at=_optional_timestamp(detail, "lastActivatedAt"),
        storage_class=_storage_class(detail),
        subject_digest=None if subject is None else _string(subject, "subjectManifestDigest"),
        is_index=bool(children) or detail.get("imageManifestMediaType") in INDEX_TYPES,
        child_digests=children,
    )


def _storage_class(detail: Mapping[str, object]) -> StorageClass:
    """`storageClass` (as previews spell it) if given, else from `imageStatus`."""
    named = detail.get("storageClass")
    if named is not None:
        return StorageClass(_string(named, "storageClass").upper())
    # ACTIVATING images are on their way back to standard storage, so they count as standard.
    return StorageClass.ARCHIVE if detail.get("imageStatus") == _ARCHIVED_STATUS else StorageClass.STANDARD


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    return value


def _strings(detail: Mapping[str, object], field: str) -> tuple[str, ...]:
    values = detail.get(field) or []
    if not isinstance(values, list):
        raise ValueError(f"{field} must be a list of strings")
    return tuple(_string(value, field) for value in values)


def _optional_timestamp(detail: Mapping[str, object], field: str) -> datetime | None:
    value = detail.get(field)
    return None if value is None else _timestamp(value, field)


def _timestamp(value: object, field: str) -> datetime:
    """Epoch seconds (the AWS JSON protocol) or ISO-8601 text (the aws CLI's output)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return _utc(datetime.fromisoformat(value))
    raise ValueError(f"{field} must be epoch seconds or an ISO-8601 string")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment
