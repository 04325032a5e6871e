"""oras-py against a real `dockyard serve`: artifacts with a subject (referrers API) and a Helm chart."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import oras.client
import oras.defaults
import oras.oci
import oras.provider
import pytest

from tests.support.images import OCI_INDEX, OCI_MANIFEST
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


@pytest.fixture
def docker_config(tmp_path: Path) -> str:
    """Where oras-py's login writes credentials (never the user's ~/.docker/config.json)."""
    return str(tmp_path / "docker-config.json")


@pytest.fixture
def oras_client(server: ServerProcess, docker_config: str) -> oras.provider.Registry:
    # Dockyard challenges with Basic; oras-py's default "token" backend only speaks the Bearer flow.
    client = oras.client.OrasClient(hostname=server.host, insecure=True, auth_backend="basic")
    answer = client.login(ACCESS_KEY_ID, SECRET_ACCESS_KEY, hostname=server.host, config_path=docker_config)
    assert answer == {"Status": "Login Succeeded"}
    return client


def write(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def get_manifest(server: ServerProcess, reference: str) -> tuple[bytes, str]:
    """(bytes, content type) of `name:tag` or `name@digest`, read with a plain HTTP client."""
    name, separator, ref = reference.rpartition("@") if "@" in reference else reference.rpartition(":")
    assert separator
    with server.client() as http:
        response = http.get(f"/v2/{name}/manifests/{ref}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert response.status_code == 200, response.text
    return response.content, response.headers["content-type"]


def subject_of(server: ServerProcess, reference: str, digest: str) -> oras.oci.Subject:
    raw, media_type = get_manifest(server, reference)
    return oras.oci.Subject(mediaType=media_type, digest=digest, size=len(raw))


def referrers(server: ServerProcess, name: str, digest: str, artifact_type: str | None = None) -> Any:
    params = {"artifactType": artifact_type} if artifact_type else {}
    with server.client() as http:
        response = http.get(f"/v2/{name}/referrers/{digest}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_INDEX
    return response


def test_artifacts_with_a_subject_are_listed_by_the_referrers_api(
    server: ServerProcess, oras_client: oras.provider.Registry, docker_config: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    app_content = b"\x7fELF pretend binary\n" * 100
    app = write(files / "app.bin", app_content)
    # The subject goes up in 512-byte PATCHes with Content-Range (oras-py's chunked mode).
    pushed = oras_client.push(
        f"{server.host}/team/app:v1",
        files=[app],
        do_chunked=True,
        chunk_size=512,
        disable_path_validation=True,
        config_path=docker_config,
    )
    assert pushed.status_code == 201
    subject_digest = pushed.headers["docker-content-digest"]
    subject = subject_of(server, f"team/app@{subject_digest}", subject_digest)

    # An SBOM through oras-py's push: no artifactType of its own, so its config media type stands in.
    sbom_content = json.dumps({"spdxVersion": "SPDX-2.3", "name": "app"}).encode()
    sbom = write(files / "sbom.spdx.json", sbom_content)
    sbom_annotations = {
        "org.example.kind": "sbom",
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
    }
    response = oras_client.push(
        f"{server.host}/team/app:sbom",
        files=[f"{sbom}:application/spdx+json"],
        manifest_config=f"{files / 'no-such-config'}:{SBOM_CONFIG}",
        manifest_annotations=sbom_annotations,
        subject=subject,
        disable_path_validation=True,
        config_path=docker_config,
    )
    assert response.status_code == 201
    assert response.headers["oci-subject"] == subject_digest
    sbom_digest = response.headers["docker-content-digest"]

    # A signature through oras-py's lower-level calls, with an explicit artifactType and an empty config.
    signature_content = b"-----BEGIN SIGNATURE-----\nnot really\n-----END SIGNATURE-----\n"
    signature_digest = push_signature(oras_client, server, files, signature_content, subject)

    listed = referrers(server, "team/app", subject_digest)
    assert "oci-filters-applied" not in listed.headers
    index = listed.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    sbom_raw, _ = get_manifest(server, f"team/app@{sbom_digest}")
    signature_raw, _ = get_manifest(server, f"team/app@{signature_digest}")
    expected = {
        sbom_digest: {
            "mediaType": OCI_MANIFEST,
            "digest": sbom_digest,
            "size": len(sbom_raw),
            "artifactType": SBOM_CONFIG,
            "annotations": sbom_annotations,
        },
        signature_digest: {
            "mediaType": OCI_MANIFEST,
            "digest": signature_digest,
            "size": len(signature_raw),
            "artifactType": SIGNATURE,
            "annotations": {"org.example.signer": "e2e"},
        },
    }
    assert {entry["digest"]: entry for entry in index["manifests"]} == expected

    filtered = referrers(server, "team/app", subject_digest, artifact_type=SIGNATURE)
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert filtered.json()["manifests"] == [expected[signature_digest]]
    none = referrers(server, "team/app", subject_digest, artifact_type="application/vnd.example.none")
    assert none.headers["oci-filters-applied"] == "artifactType"
    assert none.json()["manifests"] == []
    assert referrers(server, "team/app", "sha256:" + "1" * 64).json()["manifests"] == []

    out = tmp_path / "out"
    pulled = oras_client.pull(
        f"{server.host}/team/app:v1",
        outdir=str(out / "app"),
        config_path=docker_config,
    )
    assert [Path(path).read_bytes() for path in pulled] == [app_content]
    pulled = oras_client.pull(
        f"{server.host}/team/app:sbom",
        outdir=str(out / "sbom"),
        config_path=docker_config,
    )
    assert [Path(path).name for path in pulled] == ["sbom.spdx.json"]
    assert Path(pulled[0]).read_bytes() == sbom_content
    pulled = oras_client.pull(
        f"{server.host}/team/app@{signature_digest}", outdir=str(out / "sig"), config_path=docker_config
    )
    assert [Path(path).read_bytes() for path in pulled] == [signature_content]


def push_signature(
    client: oras.provider.Registry,
    server: ServerProcess,
    files: Path,
    content: bytes,
    subject: oras.oci.Subject,
) -> str:
    container = client.get_container(f"{server.host}/team/app:signature")
    empty = write(files / "empty.json", b"{}")
    config = {"mediaType": EMPTY_CONFIG, "digest": oras.defaults.blank_config_hash, "size": 2}
    assert client.upload_blob(empty, container, config).status_code in (200, 201)
    signature = write(files / "app.sig", content)
    layer = oras.oci.NewLayer(signature, media_type="application/vnd.example.signature.v1+pem")
    layer["annotations"] = {oras.defaults.annotation_title: "app.sig"}
    assert client.upload_blob(signature, container, layer).status_code == 201
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE,
        "config": config,
        "layers": [layer],
        "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.example.signer": "e2e"},
    }
    response = client.upload_manifest(manifest, container)
    assert response.status_code == 201, response.text
    assert response.headers["oci-subject"] == subject.digest
    digest: str = response.headers["docker-content-digest"]
    return digest


# ---------------------------------------------------------------------------------------- Helm


CHART_FILES = {
    "Chart.yaml": (
        "apiVersion: v2\nname: hello\ndescription: A minimal chart for Dockyard's tests\n"
        'type: application\nversion: 0.1.0\nappVersion: "1.0.0"\n'
    ),
    "values.yaml": 'replicaCount: 1\nimage:\n  repository: nginx\n  tag: "1.27"\n',
    "templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-hello\n"
        "spec:\n  replicas: {{ .Values.replicaCount }}\n  selector:\n    matchLabels:\n"
        "      app: hello\n  template:\n    metadata:\n      labels:\n        app: hello\n"
        "    spec:\n      containers:\n        - name: hello\n"
        '          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"\n'
    ),
    "templates/NOTES.txt": "Installed {{ .Chart.Name }} {{ .Chart.Version }}.\n",
}


def package_chart(name: str, files: dict[str, str]) -> bytes:
    """What `helm package` makes: a gzipped tar with every file under `<chart name>/`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def chart_contents(archive: bytes) -> dict[str, str]:
    contents = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            file = tar.extractfile(member)
            if file is not None:
                contents[member.name] = file.read().decode()
    return contents


def test_helm_chart_round_trips_as_an_oci_artifact(
    server: ServerProcess, oras_client: oras.provider.Registry, docker_config: str, tmp_path: Path
) -> None:
    chart = package_chart("hello", CHART_FILES)
    archive = write(tmp_path / "chart" / "hello-0.1.0.tgz", chart)
    chart_config = {
        "name": "hello",
        "version": "0.1.0",
        "description": "A minimal chart for Dockyard's tests",
        "apiVersion": "v2",
        "appVersion": "1.0.0",
        "type": "application",
    }
    config_bytes = json.dumps(chart_config).encode()
    config = write(tmp_path / "chart" / "config.json", config_bytes)

    response = oras_client.push(
        f"{server.host}/charts/hello:0.1.0",
        files=[f"{archive}:{HELM_CHART}"],
        manifest_config=f"{config}:{HELM_CONFIG}",
        disable_path_validation=True,
        config_path=docker_config,
    )
    assert response.status_code == 201
    digest = response.headers["docker-content-digest"]

    raw, content_type = get_manifest(server, "charts/hello:0.1.0")
    assert content_type == OCI_MANIFEST
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == HELM_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART]
    with server.client() as http:
        assert http.get(f"/v2/charts/hello/blobs/{manifest['config']['digest']}").content == config_bytes
        assert http.get("/v2/charts/hello/tags/list").json() == {"name": "charts/hello", "tags": ["0.1.0"]}
        by_digest = http.head(f"/v2/charts/hello/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
        assert by_digest.headers["content-type"] == OCI_MANIFEST
        assert int(by_digest.headers["content-length"]) == len(raw)

    pulled = oras_client.pull(
        f"{server.host}/charts/hello:0.1.0", outdir=str(tmp_path / "pulled"), config_path=docker_config
    )
    assert [Path(path).name for path in pulled] == ["hello-0.1.0.tgz"]
    assert Path(pulled[0]).read_bytes() == chart
    assert chart_contents(Path(pulled[0]).read_bytes()) == {f"hello/{p}": t for p, t in CHART_FILES.items()}


def test_a_sha512_artifact_pushed_with_tag_parameters_is_pulled_and_deleted_by_oras(
    server: ServerProcess, oras_client: oras.provider.Registry, docker_config: str, tmp_path: Path
) -> None:
    """Content addressed by sha512, pushed by digest with `tag=` parameters (oras-py cannot push sha512 itself);
    oras-py pulls it by tag, then deletes a tag its way: HEAD the tag, DELETE the digest the HEAD named."""
    content, config = b"addressed by sha512\n" * 64, b"{}"
    layer = {
        "mediaType": "text/plain",
        "digest": "sha512:" + hashlib.sha512(content).hexdigest(),
        "size": len(content),
        "annotations": {oras.defaults.annotation_title: "note.txt"},
    }
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.note",
        "config": {"mediaType": EMPTY_CONFIG, "digest": "sha512:" + hashlib.sha512(config).hexdigest(), "size": 2},
        "layers": [layer],
    }
    raw = json.dumps(document).encode()
    digest = "sha512:" + hashlib.sha512(raw).hexdigest()
    with server.client() as http:
        for blob in (content, config):
            blob_digest = "sha512:" + hashlib.sha512(blob).hexdigest()
            uploaded = http.post("/v2/notes/long-digest/blobs/uploads/", params={"digest": blob_digest}, content=blob)
            assert uploaded.status_code == 201, uploaded.text
        pushed = http.put(
            f"/v2/notes/long-digest/manifests/{digest}?tag=one&tag=two",
            content=raw,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert pushed.status_code == 201, pushed.text
        assert pushed.headers["docker-content-digest"] == digest
        assert pushed.headers["oci-tag"] == "one, two"

    pulled = oras_client.pull(
        f"{server.host}/notes/long-digest:one", outdir=str(tmp_path / "pulled"), config_path=docker_config
    )
    assert [Path(path).read_bytes() for path in pulled] == [content]
    assert oras_client.get_tags(f"{server.host}/notes/long-digest") == ["one", "two"]

    assert oras_client.delete_tag(f"{server.host}/notes/long-digest", "one")  # deletes the manifest, both tags with it
    with server.client() as http:
        for reference in (digest, "one", "two"):
            gone = http.get(f"/v2/notes/long-digest/manifests/{reference}")
            assert gone.status_code == 404, (reference, gone.text)
        assert http.delete(f"/v2/notes/long-digest/manifests/{digest}").status_code == 404
