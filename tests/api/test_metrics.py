"""The metrics endpoint reports traffic and work in progress."""

from __future__ import annotations

import hashlib

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient


def _samples(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_bytes_and_open_sessions_are_counted(client: TestClient) -> None:
    before = _samples(client)
    blob = b"metrics " * 1000
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert client.post(f"/v2/metrics/app/blobs/uploads/?digest={digest}", content=blob).status_code == 201
    open_session = client.post("/v2/metrics/app/blobs/uploads/")
    assert open_session.status_code == 202
    assert client.get(f"/v2/metrics/app/blobs/{digest}").content == blob

    after = _samples(client)
    received = after["dockyard_blob_bytes_received_total"] - before.get("dockyard_blob_bytes_received_total", 0)
    sent = after["dockyard_blob_bytes_sent_total"] - before.get("dockyard_blob_bytes_sent_total", 0)
    assert received >= len(blob)
    assert sent >= len(blob)
    assert after["dockyard_upload_sessions"] >= 1
    assert after["dockyard_scan_queue_depth"] == 0
