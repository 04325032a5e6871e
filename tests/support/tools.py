"""External clients for end-to-end tests: skopeo, podman, umoci, containerd (Debian packages), server metrics.

A missing tool fails the test with the package to install: CI installs them, so a skip would hide a gap.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import ServerProcess

# Every external command is bounded: a hung client fails the test instead of hanging the suite.
COMMAND_TIMEOUT = 90.0

DEBIAN_PACKAGES = {
    "skopeo": "skopeo",
    "podman": "podman",
    "umoci": "umoci",
    "containerd": "containerd",
    "ctr": "containerd",
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH; the end-to-end suite needs it "
            f"(apt-get install {DEBIAN_PACKAGES.get(name, name)})",
            pytrace=False,
        )
    return path


def run(command: list[str], timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded), capturing its output; never raises on a non-zero exit."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command[0]} did not finish within {timeout}s: {command}\n{exc.stderr!r}")


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.args}\nexit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@dataclass
class Skopeo:
    """skopeo with a private trust policy (accept anything): no dependency on /etc/containers/policy.json."""

    binary: str
    policy: Path

    @classmethod
    def create(cls, workdir: Path) -> Skopeo:
        binary = require_tool("skopeo")
        workdir.mkdir(parents=True, exist_ok=True)
        policy = workdir / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        return cls(binary, policy)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([self.binary, "--policy", str(self.policy), *args])

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, describe(result)
        return result

    def push(self, server: ServerProcess, source: str, target: str, *extra: str) -> None:
        """Copy `source` (e.g. oci:DIR:tag) to docker://<server>/<target> with the root credentials."""
        self.ok(
            "copy", "--quiet", *tls_flags(server, "dest-"), "--dest-creds", server.creds, *extra,
            source, f"docker://{server.host}/{target}",
        )  # fmt: skip

    def pull(self, server: ServerProcess, source: str, target: str, *extra: str) -> None:
        """Copy docker://<server>/<source> to `target` (e.g. oci:DIR:tag) with the root credentials."""
        self.ok(
            "copy", "--quiet", *tls_flags(server, "src-"), "--src-creds", server.creds, *extra,
            f"docker://{server.host}/{source}", target,
        )  # fmt: skip

    def inspect_raw(self, server: ServerProcess, reference: str) -> bytes:
        """The manifest bytes `skopeo inspect --raw` prints, exactly as the registry served them."""
        command = [
            self.binary, "--policy", str(self.policy), "inspect", "--raw", *tls_flags(server),
            "--creds", server.creds, f"docker://{server.host}/{reference}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr.decode()}"
        return result.stdout


def tls_flags(server: ServerProcess, prefix: str = "") -> list[str]:
    """skopeo's flags for reaching `server`: verifying its CA over HTTPS, plain HTTP otherwise."""
    if server.cert_dir is None:
        return [f"--{prefix}tls-verify=false"]
    return [f"--{prefix}cert-dir", str(server.cert_dir)]


# Metric sample key: (route, method, status)
RequestKey = tuple[str, str, str]


def request_counts(server: ServerProcess) -> Counter[RequestKey]:
    """`dockyard_http_requests_total` of the registry door, read from the server's /metrics."""
    response = httpx.get(f"{server.url}/metrics", timeout=10, verify=server.verify())
    assert response.status_code == 200, response.text
    counts: Counter[RequestKey] = Counter()
    for family in text_string_to_metric_families(response.text):
        if family.name != "dockyard_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("door") == "registry":
                key = (sample.labels["route"], sample.labels["method"], sample.labels["status"])
                counts[key] += int(sample.value)
    return counts


def requests_between(before: Counter[RequestKey], after: Counter[RequestKey]) -> Counter[RequestKey]:
    """Requests served between two snapshots (only the keys that grew)."""
    grown = Counter(after)
    grown.subtract(before)
    return Counter({key: value for key, value in grown.items() if value > 0})


def count(counts: Counter[RequestKey], route: str, status: str | None = None) -> int:
    """Requests to one route, all methods, optionally only those answered with `status`."""
    return sum(value for (r, _m, s), value in counts.items() if r == route and status in (None, s))


UPLOAD_ROUTES = ("start_upload", "upload_chunk", "finish_upload")


def uploads(counts: Counter[RequestKey]) -> dict[str, int]:
    """Blob-upload requests of each kind; a POST answered 201 is counted as `mount`, not `start_upload`.

    (A single-POST monolithic upload also answers 201, but neither skopeo nor podman uses it.)
    """
    result = {route: count(counts, route) for route in UPLOAD_ROUTES}
    result["start_upload"] -= count(counts, "start_upload", "201")
    result["mount"] = count(counts, "start_upload", "201")
    return result


# ---------------------------------------------------------------------------------------- OCI layouts


def fresh_seed() -> int:
    """A layer seed never used before, so no blob digest repeats across tests or runs.

    containers/image keeps a blob-info cache across runs (as root in /var/lib/containers/cache), keyed by
    digest and registry host:port; with reused digests a stale entry from an earlier run on the same port
    would make skopeo try extra mounts and skew the request counts the tests assert.
    """
    return secrets.randbelow(2**62)


def layout_blobs(root: Path) -> dict[str, bytes]:
    """Every blob file of an OCI image layout, by digest."""
    return {
        f"{folder.name}:{path.name}": path.read_bytes()
        for folder in (root / "blobs").iterdir()
        for path in folder.iterdir()
    }


def layout_manifest_digest(root: Path, ref_name: str) -> str:
    """The digest index.json of an OCI layout lists under `ref_name`."""
    index = json.loads((root / "index.json").read_text())
    found = [
        entry["digest"]
        for entry in index["manifests"]
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name
    ]
    assert len(found) == 1, f"{root}/index.json lists {ref_name!r} {len(found)} times: {index}"
    digest: str = found[0]
    return digest
