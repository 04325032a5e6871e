"""Usage metering end to end: skopeo pushes an image and pulls it twice from a real `dockyard serve`; a clean
shutdown flushes the server's counters, `dockyard admin usage rollup` samples storage, and
`dockyard admin usage report` bills the repository's stored bytes and the bytes its pulls were served."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dockyard.domain.usage import GIB, hours_in_month
from tests.support.cli import dockyard_ok
from tests.support.images import single_image_layout
from tests.support.server import ACCOUNT_ID, ServerProcess
from tests.support.tools import Skopeo, fresh_seed, request_counts

REPOSITORY = "usage/app"


def report(server: ServerProcess, start: datetime, *prices: str) -> dict[str, Any]:
    end = start + timedelta(days=2)  # a test running across midnight (or a month's end) is still inside
    result = dockyard_ok(
        "admin", "usage", "report", "--account", ACCOUNT_ID, "--start", f"{start:%Y-%m-%d}", "--end", f"{end:%Y-%m-%d}",
        "--format", "json", "--data-dir", str(server.data_dir), *prices,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_a_report_bills_stored_bytes_and_transfer_out_of_pulls(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    layout = tmp_path / "layout"
    single_image_layout(layout, layers=2, size=128 * 1024, seed=fresh_seed())
    skopeo.push(server, f"oci:{layout}:latest", f"{REPOSITORY}:latest")
    raw = skopeo.inspect_raw(server, f"{REPOSITORY}:latest")
    manifest = json.loads(raw)
    image_bytes = len(raw) + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])

    for number in range(2):
        skopeo.pull(server, f"{REPOSITORY}:latest", f"oci:{tmp_path / f'pulled-{number}'}:latest")
    served = request_counts(server)
    manifest_gets = sum(n for (route, method, status), n in served.items() if (route, method, status) == (
        "get_manifest", "GET", "200"))  # fmt: skip
    manifest_puts = sum(
        n for (route, _method, status), n in served.items() if (route, status) == ("put_manifest", "201")
    )
    assert manifest_gets >= 3 and manifest_puts == 1  # inspect and each pull read the manifest at least once

    server.stop()  # a clean shutdown flushes what the server counted
    assert server.process is not None and server.process.returncode == 0, server.log()
    rolled = dockyard_ok("admin", "usage", "rollup", "--data-dir", str(server.data_dir))
    assert "sampled 1 repositories" in rolled.stdout

    document = report(server, today)
    (line,) = document["repositories"]
    assert (line["region"], line["repository"]) == ("us-east-1", REPOSITORY)
    assert line["stored_bytes"] == image_bytes
    # The roll-up just sampled this hour; a server's own roll-up may have sampled an earlier hour too.
    assert line["sampled_hours"] >= 1
    assert image_bytes <= line["storage_byte_hours"] <= image_bytes * line["sampled_hours"]
    month_hours = hours_in_month(datetime.now(UTC))
    assert math.isclose(line["storage_gb_months"], line["storage_byte_hours"] / GIB / month_hours)
    assert line["transfer_out_bytes"] >= 2 * image_bytes
    assert line["transfer_out_gb"] == line["transfer_out_bytes"] / GIB
    assert (line["pulls"], line["pushes"]) == (manifest_gets, 1)
    assert math.isclose(line["storage_cost"], line["storage_gb_months"] * 0.10)
    assert math.isclose(line["transfer_cost"], line["transfer_out_bytes"] / GIB * 0.09)
    assert math.isclose(line["cost"], line["storage_cost"] + line["transfer_cost"])
    assert document["total"] == {key: value for key, value in line.items() if key not in ("region", "repository")}

    priced = report(server, today, "--storage-price", "2.5", "--transfer-price", "1")
    assert math.isclose(priced["total"]["transfer_cost"], line["transfer_out_bytes"] / GIB)
    assert math.isclose(priced["total"]["storage_cost"], line["storage_gb_months"] * 2.5)

    table = dockyard_ok(
        "admin", "usage", "report", "--account", ACCOUNT_ID, "--data-dir", str(server.data_dir), "--storage-price", "1"
    )
    assert f"us-east-1/{REPOSITORY}" in table.stdout and "$1.00/GB-month" in table.stdout
