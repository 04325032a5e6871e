"""S3 blob stores for the contract suite: moto's in-process mock always, a real radosgw when one is given.

Each store gets a bucket of its own, emptied and deleted afterwards. The radosgw comes from the environment
(`eval "$(.ci/services/radosgw.sh)"` starts one and prints the variables):

    DOCKYARD_TEST_S3_ENDPOINT     e.g. http://127.0.0.1:41723
    DOCKYARD_TEST_S3_ACCESS_KEY   DOCKYARD_TEST_S3_SECRET_KEY   DOCKYARD_TEST_S3_REGION (default us-east-1)

Without it the radosgw tests are skipped with the reason, except under CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from dockyard.storage.blobs.s3 import S3BlobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_PREFIX = "registry"
CLIENT_CONFIG = Config(
    s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60, retries={"mode": "standard"}
)


@contextlib.contextmanager
def moto_s3_store(root: Path) -> Iterator[S3BlobStore]:
    from moto import mock_aws

    (root / "store").mkdir()  # the traversal test checks that no file appears here (or anywhere under root)
    with mock_aws():  # a fresh, empty S3 for each test
        client = _moto_client()
        with _fresh_bucket(client) as bucket:
            yield S3BlobStore(bucket, S3_PREFIX, client)


@functools.cache
def _moto_client() -> S3Client:
    """One client for every moto test (making one takes 0.4 s); moto intercepts it while a mock is active."""
    return boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=CLIENT_CONFIG,
    )


@contextlib.contextmanager
def radosgw_s3_store(root: Path) -> Iterator[S3BlobStore]:
    endpoint = os.environ.get("DOCKYARD_TEST_S3_ENDPOINT")
    if not endpoint:
        reason = 'DOCKYARD_TEST_S3_ENDPOINT is not set: no radosgw to test against (eval "$(.ci/services/radosgw.sh)")'
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(f"{reason}; CI=true requires the radosgw tests to run", pytrace=False)
        pytest.skip(reason)
    try:
        access_key, secret_key = os.environ["DOCKYARD_TEST_S3_ACCESS_KEY"], os.environ["DOCKYARD_TEST_S3_SECRET_KEY"]
    except KeyError as missing:
        pytest.fail(f"DOCKYARD_TEST_S3_ENDPOINT is set but {missing} is not", pytrace=False)
    (root / "store").mkdir()  # the traversal test checks that no file appears here (or anywhere under root)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("DOCKYARD_TEST_S3_REGION", "us-east-1"),
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=CLIENT_CONFIG,
    )
    with _fresh_bucket(client) as bucket:
        yield S3BlobStore(bucket, S3_PREFIX, client)


@contextlib.contextmanager
def _fresh_bucket(client: S3Client) -> Iterator[str]:
    bucket = f"dockyard-test-{uuid.uuid4().hex[:24]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        for uploads in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for pending in uploads.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]
        client.delete_bucket(Bucket=bucket)
