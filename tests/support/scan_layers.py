"""Hostile and broken layers for scanner tests (the scanner must answer FAILED or UNSUPPORTED_IMAGE, clearly,
and keep serving), plus ECR API helpers to push raw layers and wait for a scan to finish."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import zlib
from typing import Any

from botocore.exceptions import ClientError

from tests.api.ecr.helpers import error_code, upload_layer
from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

GiB = 1024**3
TERMINAL = frozenset({"COMPLETE", "FAILED", "UNSUPPORTED_IMAGE"})


def header_only(name: str, declared_size: int) -> bytes:
    """A gzipped tar whose one member declares `declared_size` bytes and carries none (a tar bomb's header).

    Sizes past the 8 GiB the octal field holds are written as a pax `size` record, as tar does.
    """
    info = tarfile.TarInfo(name)
    info.size = declared_size
    info.mode = 0o644
    return gzip.compress(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"\0" * 1024, mtime=0)


def corrupt_gzip() -> bytes:
    """The gzip magic and header, then bytes that are not a deflate stream."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"this is not deflate data " * 8


def zstd_like() -> bytes:
    return b"\x28\xb5\x2f\xfd" + b"\0" * 64


def deep_path(depth: int = 300) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/" * depth + "file")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return gzip.compress(raw.getvalue(), mtime=0)


def config_for(layers: list[bytes], label: str) -> bytes:
    """An image config; diff_ids of undecompressable layers are their own digests (nothing checks them)."""

    def diff_id(blob: bytes) -> str:
        try:
            return sha256(gzip.decompress(blob))
        except (OSError, EOFError, zlib.error):
            return sha256(blob)

    document = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(layer) for layer in layers]},
    }
    return json.dumps(document, sort_keys=True).encode()


def put_layers(ecr: Any, repository: str, layers: list[bytes], tag: str) -> str:
    """Upload `layers` and a config through the layer API, PutImage an OCI manifest; returns its digest."""
    config = config_for(layers, tag)
    descriptors = []
    for blob in layers:
        upload_layer(ecr, repository, blob)
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": sha256(blob), "size": len(blob)})
    upload_layer(ecr, repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": descriptors,
    }
    answer = ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
    digest: str = answer["image"]["imageId"]["imageDigest"]
    return digest


def wait_for_scan(ecr: Any, repository: str, image_id: dict[str, str], timeout: float = 45.0) -> dict[str, Any]:
    """Poll DescribeImageScanFindings until the scan reaches a final status (bounded); returns the answer.

    The whole finding list is gathered with the paginator once the scan is COMPLETE.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | str = "no answer yet"
    while time.monotonic() < deadline:
        try:
            answer = ecr.describe_image_scan_findings(repositoryName=repository, imageId=image_id)
        except ClientError as error:
            if error_code(error) != "ScanNotFoundException":  # the push's scan may not be queued yet
                raise
            last = "ScanNotFoundException"
        else:
            last = answer
            if answer["imageScanStatus"]["status"] in TERMINAL:
                if answer["imageScanStatus"]["status"] == "COMPLETE":
                    findings = []
                    for page in ecr.get_paginator("describe_image_scan_findings").paginate(
                        repositoryName=repository, imageId=image_id, PaginationConfig={"PageSize": 7}
                    ):
                        findings.extend(page["imageScanFindings"]["findings"])
                    answer["imageScanFindings"]["findings"] = findings
                return answer
        time.sleep(0.2)  # polling a background worker, with a deadline
    raise AssertionError(f"the scan of {image_id} in {repository} did not finish within {timeout}s: {last}")
