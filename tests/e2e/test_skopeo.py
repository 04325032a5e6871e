"""skopeo (containers/image) against a real `dockyard serve`: push, pull, dedup, mounts, multi-arch, auth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from tests.support.images import OCI_INDEX, OCI_MANIFEST, Layout, random_layers, single_image_layout
from tests.support.server import ACCESS_KEY_ID, ServerProcess
from tests.support.tools import (
    Skopeo,
    count,
    describe,
    fresh_seed,
    layout_blobs,
    layout_manifest_digest,
    request_counts,
    requests_between,
    require_tool,
    run,
    uploads,
)

NO_UPLOADS = {"start_upload": 0, "upload_chunk": 0, "finish_upload": 0, "mount": 0}


def manifest_of(layout: Path, digest: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(blob_bytes(layout, digest))
    return document


def blob_bytes(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_digest).read_bytes()


def layer_digests(layout: Path, manifest_digest: str) -> list[str]:
    layers = manifest_of(layout, manifest_digest)["layers"]
    assert isinstance(layers, list)
    return [layer["digest"] for layer in layers]


def test_push_then_pull_round_trips_digests_and_bytes(
    server: ServerProcess,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=3, seed=fresh_seed())

    skopeo.push(server, f"oci:{source}:v1", "team/app:v1")
    pulled = tmp_path / "pulled"
    skopeo.pull(server, "team/app:v1", f"oci:{pulled}:v1")

    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(source)
    assert skopeo.inspect_raw(server, "team/app:v1") == blob_bytes(source, digest)
    with server.client() as http:
        response = http.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["docker-content-digest"] == digest
    assert response.content == blob_bytes(source, digest)


def test_pulled_layout_unpacks_to_the_layer_files(
    server: ServerProcess,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    """umoci unpacks what skopeo pulled: the layers hold the files they were built from."""
    umoci = require_tool("umoci")
    source = tmp_path / "source"
    seed = fresh_seed()
    single_image_layout(source, tag="v1", layers=2, size=64 * 1024, seed=seed)
    skopeo.push(server, f"oci:{source}:v1", "team/unpack:v1")
    pulled = tmp_path / "pulled"
    skopeo.pull(server, "team/unpack:v1", f"oci:{pulled}:v1")

    bundle = tmp_path / "bundle"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    result = run([umoci, "unpack", *rootless, "--image", f"{pulled}:v1", str(bundle)])
    assert result.returncode == 0, describe(result)
    expected = {layer.name for layer in (bundle / "rootfs" / "data").iterdir()}
    assert expected == {f"file-{seed}-0.bin", f"file-{seed}-1.bin"}
    assert (bundle / "rootfs" / "data" / f"file-{seed}-1.bin").stat().st_size == 64 * 1024


def test_second_push_of_the_same_image_uploads_no_blob(
    server: ServerProcess,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=3, seed=fresh_seed())
    first = request_counts(server)
    skopeo.push(server, f"oci:{source}:v1", "team/app:v1")
    second = request_counts(server)
    skopeo.push(server, f"oci:{source}:v1", "team/app:v2")
    third = request_counts(server)

    first_push = requests_between(first, second)
    each_blob_once = {"start_upload": 4, "upload_chunk": 4, "finish_upload": 4, "mount": 0}
    assert uploads(first_push) == each_blob_once, first_push
    second_push = requests_between(second, third)
    assert uploads(second_push) == NO_UPLOADS, second_push
    assert count(second_push, "get_blob", "200") >= 4, "skopeo should have found each blob with HEAD"
    assert count(second_push, "put_manifest", "201") == 1
    with server.client() as http:
        for tag in ("v1", "v2"):
            response = http.head(f"/v2/team/app/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert response.headers["docker-content-digest"] == digest
        assert http.get("/v2/team/app/tags/list").json() == {"name": "team/app", "tags": ["v1", "v2"]}


def test_copy_to_another_repository_mounts_the_layers(
    server: ServerProcess,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=3, seed=fresh_seed())
    layers = layer_digests(source, digest)
    skopeo.push(server, f"oci:{source}:v1", "team/app:v1")

    before = request_counts(server)
    skopeo.push(server, f"oci:{source}:v1", "team/copy:v1")
    during = requests_between(before, request_counts(server))

    # containers/image remembers (blob-info cache) that the layers live in team/app on this registry and
    # asks to mount them from there; only the config, which it never tries to reuse, is uploaded again.
    assert uploads(during) == {"start_upload": 1, "upload_chunk": 1, "finish_upload": 1, "mount": 3}, during
    with server.client() as http:
        for layer in layers:
            assert http.head(f"/v2/team/copy/blobs/{layer}").status_code == 200
    pulled = tmp_path / "pulled"
    skopeo.pull(server, "team/copy:v1", f"oci:{pulled}:v1")
    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(source)


def test_mount_by_hand_answers_201_for_a_known_blob_and_202_otherwise(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, seed=fresh_seed())
    layer = layer_digests(source, digest)[0]
    skopeo.push(server, f"oci:{source}:v1", "team/app:v1")

    with server.client() as http:
        assert http.head(f"/v2/other/blobs/{layer}").status_code == 404
        mounted = http.post(f"/v2/other/blobs/uploads/?mount={layer}&from=team/app")
        assert mounted.status_code == 201, mounted.text
        assert mounted.headers["location"] == f"/v2/other/blobs/{layer}"
        assert mounted.headers["docker-content-digest"] == layer
        head = http.head(f"/v2/other/blobs/{layer}")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(blob_bytes(source, layer))
        assert http.get(f"/v2/other/blobs/{layer}").content == blob_bytes(source, layer)

        unknown = "sha256:" + "0" * 64
        refused = http.post(f"/v2/other/blobs/uploads/?mount={unknown}&from=team/app")
        assert refused.status_code == 202, refused.text
        location = refused.headers["location"]
        assert location.startswith("/v2/other/blobs/uploads/")
        assert http.get(location).status_code == 204, "the refused mount must open a usable upload session"
        assert http.delete(location).status_code == 204
        assert http.head(f"/v2/other/blobs/{unknown}").status_code == 404

        # The blob exists in the registry, but not in the repository named by `from`.
        elsewhere = http.post(f"/v2/third/blobs/uploads/?mount={layer}&from=nowhere/at-all")
        assert elsewhere.status_code == 202, elsewhere.text
        assert http.delete(elsewhere.headers["location"]).status_code == 204
        assert http.head(f"/v2/third/blobs/{layer}").status_code == 404


def multi_arch_layout(root: Path) -> tuple[str, dict[str, str]]:
    """An index of an amd64 and an arm64 image; returns the index digest and the child digest per arch."""
    layout = Layout(root)
    children = {
        arch: layout.add_image(random_layers(2, 64 * 1024, seed), architecture=arch, label=arch)
        for arch, seed in (("amd64", fresh_seed()), ("arm64", fresh_seed()))
    }
    index = layout.add_index(list(children.values()))
    layout.tag(index, "multi")
    return index["digest"], {arch: child["digest"] for arch, child in children.items()}


def test_multi_arch_index_round_trips_and_platform_selection(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    index_digest, children = multi_arch_layout(source)

    skopeo.push(server, f"oci:{source}:multi", "team/multi:v1", "--all")
    assert skopeo.inspect_raw(server, "team/multi:v1") == blob_bytes(source, index_digest)
    with server.client() as http:
        response = http.get("/v2/team/multi/manifests/v1", headers={"Accept": OCI_INDEX})
        assert response.headers["content-type"] == OCI_INDEX
        assert response.headers["docker-content-digest"] == index_digest
        for child in children.values():
            head = http.head(f"/v2/team/multi/manifests/{child}", headers={"Accept": OCI_MANIFEST})
            assert head.status_code == 200
            assert head.headers["content-type"] == OCI_MANIFEST

    everything = tmp_path / "all"
    skopeo.pull(server, "team/multi:v1", f"oci:{everything}:v1", "--all")
    assert layout_manifest_digest(everything, "v1") == index_digest
    assert layout_blobs(everything) == layout_blobs(source)

    arm64 = tmp_path / "arm64"
    skopeo.pull(server, "team/multi:v1", f"oci:{arm64}:v1", "--override-arch", "arm64")
    assert layout_manifest_digest(arm64, "v1") == children["arm64"]
    config = manifest_of(arm64, children["arm64"])["config"]
    assert isinstance(config, dict)
    assert json.loads(blob_bytes(arm64, config["digest"]))["architecture"] == "arm64"
    assert set(layout_blobs(arm64)) < set(layout_blobs(source)), "only the arm64 image should be pulled"


def test_push_without_or_with_wrong_credentials_is_refused(
    server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    single_image_layout(source, tag="v1", layers=1, size=1024, seed=fresh_seed())
    target = f"docker://{server.host}/team/secret:v1"
    attempts = {
        "anonymous": ["--dest-no-creds"],
        "wrong secret": ["--dest-creds", f"{ACCESS_KEY_ID}:not-the-secret"],
        "unknown key": ["--dest-creds", "AKIAUNKNOWNKEY000000:whatever"],
    }
    before = request_counts(server)
    for name, credentials in attempts.items():
        result = skopeo("copy", "--dest-tls-verify=false", *credentials, f"oci:{source}:v1", target)
        assert result.returncode != 0, f"{name} push succeeded:\n{describe(result)}"
        assert "unauthorized" in result.stderr.lower(), f"{name}:\n{describe(result)}"
    during = requests_between(before, request_counts(server))

    answered = {status for (_route, _method, status) in during}
    assert answered == {"401"}, f"every request should have been refused with 401: {during}"
    unauthenticated = httpx.get(f"{server.url}/v2/team/secret/tags/list", timeout=10)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"].startswith("Basic ")
    with server.client() as http:
        assert http.get("/v2/team/secret/tags/list").status_code == 404, "nothing may have been created"
        assert http.get("/v2/_catalog").json() == {"repositories": []}


def test_refused_requests_are_counted_under_the_route_they_asked_for(server: ServerProcess) -> None:
    """The route label names the handler of the path whatever the credentials (here: bad ones)."""
    blob = f"/v2/team/app/blobs/sha256:{'a' * 64}"
    before = request_counts(server)
    anonymous = httpx.head(f"{server.url}{blob}", timeout=10)
    wrong = httpx.head(f"{server.url}{blob}", auth=(ACCESS_KEY_ID, "not-the-secret"), timeout=10)
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    during = requests_between(before, request_counts(server))
    assert during == {("get_blob", "HEAD", "401"): 2}, during
