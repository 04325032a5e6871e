"""Scanning an OCI image layout on disk (`dockyard scan`), with the same code the server scans with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockyard.domain.manifests import parse_manifest
from dockyard.domain.names import Digest
from dockyard.domain.scanning.errors import ScanFailed
from dockyard.domain.scanning.matching import ScanFindings
from dockyard.domain.scanning.service import ImageScanner

REF_ANNOTATION = "org.opencontainers.image.ref.name"


def scan_layout(layout: Path, ref: str | None, scanner: ImageScanner) -> ScanFindings:
    descriptor = _pick(_load(layout / "index.json"), ref)
    manifest_bytes = _blob(layout, descriptor["digest"]).read_bytes()
    manifest = parse_manifest(manifest_bytes, descriptor.get("mediaType"))
    if manifest.is_index:
        raise ScanFailed("the reference names an image list; name one of its images with --ref")
    layers = [_blob(layout, str(layer.digest)) for layer in manifest.blobs[1:]]
    streams = [path.open("rb") for path in layers]
    try:
        return scanner.scan_layers(streams)
    finally:
        for stream in streams:
            stream.close()


def _load(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScanFailed(f"not an OCI image layout: {exc}") from None
    return document


def _pick(index: dict[str, Any], ref: str | None) -> dict[str, Any]:
    manifests: list[dict[str, Any]] = index.get("manifests", [])
    if ref is not None:
        matching = [m for m in manifests if m.get("annotations", {}).get(REF_ANNOTATION) == ref]
        if not matching:
            raise ScanFailed(f"no image named {ref!r} in the layout")
        return matching[0]
    if len(manifests) != 1:
        raise ScanFailed(f"the layout holds {len(manifests)} images; choose one with --ref")
    return manifests[0]


def _blob(layout: Path, digest_text: str) -> Path:
    digest = Digest.parse(digest_text)  # validated: the path is built from a checked algorithm and hex
    path = layout / "blobs" / digest.algorithm / digest.hex
    if not path.is_file():
        raise ScanFailed(f"blob {digest} is missing from the layout")
    return path
