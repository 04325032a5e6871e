"""Scale-out mode end to end: three `dockyard serve` nodes on one PostgreSQL database and one S3 bucket (Ceph
radosgw in CI), driven by real clients (skopeo, boto3, plain HTTP) through different nodes.

What the deployment guide promises and these tests hold it to: content pushed through one node is served by
every node, byte for byte; a chunked upload may start, continue and finish on different nodes (a node
without the running hash recomputes it); concurrent pushes store each blob once; a tag moved concurrently
ends up the same everywhere; tokens, IAM users and creation templates made through one node hold on every
node; background jobs run once per interval on one node, and a dead node's lease lets another node take its
job; nodes may start together on a fresh database.

Races are made to happen, not waited for: where two nodes must meet at one moment, the test holds a table
lock in the shared database while they arrive, then lets them go together. Everything else polls with a
deadline. Job runs are read from a history that a trigger keeps in the test's own throwaway database.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text

from tests.api.ecr.helpers import ecr_client, put_api_image
from tests.support.clients import boto_client, ecr_password
from tests.support.cluster import (
    Cluster,
    cluster,
    install_job_history,
    job_history,
    job_runs,
    json_log_lines,
    lease_overlaps,
    lock_waiters,
    migrate,
    runs_closer_than,
    server_errors,
    wait_for,
)
from tests.support.iam import Keys, basic_auth, policy, statement
from tests.support.images import OCI_MANIFEST, Layout, random_layers, sha256, tar_layer
from tests.support.registry_http import push_blob
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, fresh_seed, layout_blobs, layout_manifest_digest
from tests.support.uploads import MiB, blob_of, patch_chunk, received

BIG_LAYER = 9 * MiB  # more than one S3 part (8 MiB): published with a server-side multipart copy


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes started together on a fresh database and a fresh bucket, shared by the read-mostly tests
    (each uses repositories of its own)."""
    with cluster(tmp_path_factory.mktemp("scale-out"), nodes=3) as group:
        yield group


def assert_no_server_errors(group: Cluster) -> None:
    for number, node in enumerate(group.nodes, 1):
        assert not server_errors(node), f"node {number}:\n" + "\n".join(server_errors(node))


def oci_accept() -> dict[str, str]:
    return {"Accept": f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"}


# ------------------------------------------------------------------------------------------ 1. push / pull


def test_pushed_through_one_node_pulled_through_another(nodes: Cluster, skopeo: Skopeo, tmp_path: Path) -> None:
    """skopeo pushes a multi-layer image (one layer above the S3 part size) through node 1 and pulls it
    through node 2 with identical digests and bytes; node 3 describes it through the ECR API."""
    first, second, third = nodes.nodes
    seed = fresh_seed()
    source = tmp_path / "source"
    layout = Layout(source)
    layers = [*random_layers(3, 300 * 1024, seed), *random_layers(1, BIG_LAYER, seed + 1)]
    descriptor = layout.add_image(layers, label=str(seed))
    layout.tag(descriptor, "v1")
    digest = descriptor["digest"]

    skopeo.push(first, f"oci:{source}:v1", "scale/app:v1")
    pulled = tmp_path / "pulled"
    skopeo.pull(second, "scale/app:v1", f"oci:{pulled}:v1")

    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(source)
    raw = (source / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert skopeo.inspect_raw(third, f"scale/app@{digest}") == raw

    details = ecr_client(third).describe_images(repositoryName="scale/app")["imageDetails"]
    assert [(d["imageDigest"], d.get("imageTags")) for d in details] == [(digest, ["v1"])], details
    assert details[0]["imageSizeInBytes"] == sum(len(layer) for layer in layers), details
    assert_no_server_errors(nodes)


def test_no_object_in_the_bucket_holds_pushed_content_in_plain_text(
    nodes: Cluster, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Encryption at rest over S3: an AES256 and a KMS repository are pushed through two nodes (the KMS one
    through chunked uploads with a part left in progress), then every object in the bucket is read back and
    searched for 32-byte slices of every pushed blob and manifest."""
    first, second, _ = nodes.nodes
    source = tmp_path / "source"
    layout = Layout(source)
    seed = fresh_seed()
    descriptor = layout.add_image([*random_layers(2, 300 * 1024, seed), *random_layers(1, BIG_LAYER, seed + 1)])
    layout.tag(descriptor, "v1")
    kms = boto_client(second, "kms", Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    key = kms.create_key()["KeyMetadata"]["Arn"]
    ecr_client(second).create_repository(
        repositoryName="sealed/kms", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key}
    )
    skopeo.push(first, f"oci:{source}:v1", "sealed/aes:v1")
    skopeo.push(second, f"oci:{source}:v1", "sealed/kms:v1")
    pending, _ = blob_of(2 * MiB, seed + 2)
    with httpx.Client(base_url=first.url, headers=first.auth_header, timeout=60) as http:
        started = http.post("/v2/sealed/kms/blobs/uploads/")
        patch_chunk(http, started.headers["Location"], pending, 0)  # left in progress

    pushed = [*layout_blobs(source).values(), pending]
    needles = {blob[i : i + 32] for blob in pushed for i in range(0, max(len(blob) - 32, 1), max(len(blob) // 16, 1))}
    keys = nodes.object_keys("")
    assert any("/domains/kms-" in k for k in keys) and any("/uploads/" in k for k in keys), keys
    for object_key in keys:
        body = nodes.s3_client.get_object(Bucket=nodes.bucket, Key=object_key)["Body"].read()
        assert not any(needle in body for needle in needles), f"plain text in s3://{nodes.bucket}/{object_key}"
    assert_no_server_errors(nodes)


# ------------------------------------------------------------------------------------------ 2. chunked uploads

# Chunk sizes chosen against the S3 store's layout: a 3 MiB tail, a tail read back and grown into a first
# part, a part of its own, a 1 MiB tail, then a tail plus 6 MiB; the last tail is copied in as the final part
# at commit.
CHUNKS = [3 * MiB + 1, 2 * MiB, 5 * MiB + 3, 1 * MiB, 6 * MiB]


@pytest.mark.parametrize("last_chunk_in_put", [False, True], ids=["empty-put", "put-carries-last-chunk"])
def test_a_chunked_upload_spread_over_every_node(nodes: Cluster, last_chunk_in_put: bool) -> None:
    """POST on node 1, PATCHes alternating between nodes 2 and 3 (each at the Location the previous node
    answered, on its own base URL), PUT on node 1, which never saw a byte and so recomputes the hash; every
    node then serves the blob, and nothing of the upload stays behind in the bucket or the database."""
    first, second, third = nodes.nodes
    data, digest = blob_of(sum(CHUNKS), fresh_seed())
    name = f"scale/chunks-{'put' if last_chunk_in_put else 'patch'}"
    clients = {node.port: node.client() for node in nodes.nodes}
    try:
        started = clients[first.port].post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        assert location.startswith("/"), location  # a path: valid on every node's base URL
        upload_id = started.headers["docker-upload-uuid"]

        patched = CHUNKS[:-1] if last_chunk_in_put else CHUNKS
        offset = 0
        for number, size in enumerate(patched):
            node = (second, third)[number % 2]
            answer = patch_chunk(clients[node.port], location, data[offset : offset + size], offset)
            location = answer.headers["location"]
            offset += size

        status = clients[first.port].get(location)  # node 1 sees the progress the others made
        assert status.status_code == 204 and received(status) == offset, (status.status_code, status.headers)

        body = data[offset:]
        headers = {"Content-Type": "application/octet-stream"}
        if body:
            headers["Content-Range"] = f"{offset}-{len(data) - 1}"
        done = clients[first.port].put(location, params={"digest": digest}, content=body, headers=headers)
        assert done.status_code == 201, done.text
        assert done.headers["docker-content-digest"] == digest

        for node in nodes.nodes:
            served = clients[node.port].get(f"/v2/{name}/blobs/{digest}")
            assert served.status_code == 200, (node.url, served.status_code, served.text[:200])
            assert sha256(served.content) == digest and served.content == data, node.url
            head = clients[node.port].head(f"/v2/{name}/blobs/{digest}")
            assert head.headers["content-length"] == str(len(data)), (node.url, head.headers)
            gone = clients[node.port].get(location)
            assert gone.status_code == 404, (node.url, gone.status_code)
    finally:
        for client in clients.values():
            client.close()

    assert nodes.object_keys(f"uploads/{upload_id}/") == []
    assert nodes.stored_blob_digests().count(digest) == 1
    assert nodes.query("SELECT count(*) FROM uploads WHERE id = :id", id=upload_id) == [(0,)]
    assert nodes.query("SELECT size FROM blobs WHERE digest = :digest", digest=digest) == [(len(data),)]
    assert_no_server_errors(nodes)


def test_a_node_without_the_running_hash_still_refuses_a_wrong_digest(nodes: Cluster) -> None:
    """The hash a node recomputes comes from the stored bytes: a PUT naming the digest of other bytes of the
    same length, on a node that saw none of the upload, is refused (and the upload is gone everywhere)."""
    first, second, third = nodes.nodes
    data, _ = blob_of(2 * MiB + 5, fresh_seed())
    _, wrong = blob_of(len(data), fresh_seed())
    name = "scale/wrong-digest"
    with first.client() as one, second.client() as two, third.client() as three:
        location = one.post(f"/v2/{name}/blobs/uploads/").headers["location"]
        location = patch_chunk(two, location, data, 0).headers["location"]
        refused = three.put(location, params={"digest": wrong})
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["code"] == "DIGEST_INVALID", refused.text
        for client in (one, two, three):
            assert client.get(location).status_code == 404
            assert client.head(f"/v2/{name}/blobs/{wrong}").status_code == 404
    assert wrong not in nodes.stored_blob_digests()


# ------------------------------------------------------------------------------------------ 5. tags


def tag_digest_on(node: ServerProcess, repository: str, tag: str) -> str:
    with node.client() as client:
        answer = client.head(f"/v2/{repository}/manifests/{tag}", headers=oci_accept())
    assert answer.status_code == 200, (node.url, answer.status_code)
    digest: str = answer.headers["docker-content-digest"]
    return digest


def assert_one_winner(group: Cluster, repository: str, tag: str, candidates: set[str]) -> str:
    """Every node resolves `tag` to the same digest, one of `candidates`; the ECR API on every node agrees
    and shows the tag on exactly that image."""
    answers = {node.url: tag_digest_on(node, repository, tag) for node in group.nodes}
    assert len(set(answers.values())) == 1, answers
    winner = next(iter(answers.values()))
    assert winner in candidates, (winner, candidates)
    for node in group.nodes:
        details = ecr_client(node).describe_images(repositoryName=repository)["imageDetails"]
        tagged = [d["imageDigest"] for d in details if tag in d.get("imageTags", [])]
        assert tagged == [winner], (node.url, tagged)
    return winner


def test_concurrent_pushes_to_one_tag_leave_one_answer_everywhere(
    nodes: Cluster, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Six images pushed at once to `scale/race:latest` through the three nodes (skopeo), then the same again with
    the six manifest PUTs released together by a barrier: the tag ends on one of them, the same on every
    node, and every image stays stored."""
    repository = "scale/race"
    seed = fresh_seed()
    source = tmp_path / "source"
    layout = Layout(source)
    images = []
    for number in range(12):
        descriptor = layout.add_image([tar_layer({"id": f"{seed}-{number}".encode()})], label=f"{seed}-{number}")
        layout.tag(descriptor, f"c{number}")
        images.append(descriptor)
    first_round = {d["digest"] for d in images[:6]}

    def push(number: int, tag: str) -> None:
        skopeo.push(nodes.nodes[number % 3], f"oci:{source}:c{number}", f"{repository}:{tag}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(push, range(6), ["latest"] * 6))
    assert_one_winner(nodes, repository, "latest", first_round)

    # Second round: blobs and manifests go in under tags of their own first, then six PUTs of `latest` meet
    # at a barrier, two through each node.
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(push, range(6, 12), [f"c{n}" for n in range(6, 12)]))
    barrier = threading.Barrier(6)

    def put_tag(number: int) -> int:
        descriptor = images[number]
        raw = (source / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
        with nodes.nodes[number % 3].client() as client:
            barrier.wait(timeout=30)
            answer = client.put(
                f"/v2/{repository}/manifests/latest", content=raw, headers={"Content-Type": OCI_MANIFEST}
            )
        return answer.status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(put_tag, range(6, 12))) == [201] * 6
    assert_one_winner(nodes, repository, "latest", {d["digest"] for d in images[6:]})
    stored = {
        d["imageDigest"] for d in ecr_client(nodes.nodes[0]).describe_images(repositoryName=repository)["imageDetails"]
    }
    assert stored == {d["digest"] for d in images}
    assert_no_server_errors(nodes)


# ------------------------------------------------------------------------------------------ shared identity

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def test_an_authorization_token_from_one_node_opens_every_node(nodes: Cluster) -> None:
    """GetAuthorizationToken through node 1: the password (signed with the shared master key) logs in to the
    registry of every node."""
    password = ecr_password(boto_client(nodes.nodes[0], "ecr", ROOT))
    for node in nodes.nodes:
        answer = httpx.get(f"{node.url}/v2/", headers=basic_auth("AWS", password), timeout=30)
        assert answer.status_code == 200, (node.url, answer.status_code, answer.text)


def test_an_iam_user_made_through_one_node_is_honoured_by_every_node(nodes: Cluster) -> None:
    """CreateUser, PutUserPolicy and CreateAccessKey through node 1 (on PostgreSQL, as scale-out runs): the
    key (its secret sealed with the shared master key) is accepted by nodes 2 and 3, within its policy."""
    first, second, third = nodes.nodes
    iam = boto_client(first, "iam", ROOT)
    iam.create_user(UserName="scale-reader")
    iam.put_user_policy(
        UserName="scale-reader",
        PolicyName="describe",
        PolicyDocument=policy(statement("Allow", "ecr:DescribeRepositories")),
    )
    key = iam.create_access_key(UserName="scale-reader")["AccessKey"]
    reader = Keys(key["AccessKeyId"], key["SecretAccessKey"])
    for node in (second, third):
        assert "repositories" in boto_client(node, "ecr", reader).describe_repositories()
        with pytest.raises(ClientError) as refused:
            boto_client(node, "ecr", reader).create_repository(repositoryName="scale/not-allowed")
        assert refused.value.response["Error"]["Code"] == "AccessDeniedException"


def test_a_creation_template_made_through_one_node_governs_pushes_through_another(nodes: Cluster) -> None:
    """CreateRepositoryCreationTemplate through node 1 (IMMUTABLE tags for `scale-tpl/`); a push through node 2
    creates `scale-tpl/app` with it, as node 3 describes."""
    first, second, third = nodes.nodes
    boto_client(first, "ecr", ROOT).create_repository_creation_template(
        prefix="scale-tpl", appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE"
    )
    with second.client() as client:
        config = push_blob(client, "scale-tpl/app", b"{}")
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2}}
        ).encode()  # fmt: skip
        put = client.put("/v2/scale-tpl/app/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text
    described = boto_client(third, "ecr", ROOT).describe_repositories(repositoryNames=["scale-tpl/app"])
    assert described["repositories"][0]["imageTagMutability"] == "IMMUTABLE", described


# ------------------------------------------------------------------------------------------ 4. concurrency

PUSHES = 16
REPOSITORIES = 4


def fleet_layout(root: Path, seed: int) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """16 images in one OCI layout, tagged i0..i15: every image has the same 9 MiB base layer, half share a
    second layer, each has a layer of its own. Returns the image descriptors and every blob by digest."""
    layout = Layout(root)
    base = random_layers(1, BIG_LAYER, seed)[0]
    shared = [tar_layer({f"shared-{seed}-{half}": f"{seed}-{half}".encode() * 4096}) for half in range(2)]
    images = []
    for number in range(PUSHES):
        own = tar_layer({f"own-{seed}-{number}": f"{seed}-{number}".encode() * 512})
        descriptor = layout.add_image([base, shared[number % 2], own], label=f"{seed}-{number}")
        layout.tag(descriptor, f"i{number}")
        images.append(descriptor)
    return images, layout_blobs(root)


def test_parallel_pushes_sharing_layers_store_each_blob_once(tmp_path: Path, skopeo: Skopeo) -> None:
    """16 skopeo pushes at once, through all three nodes, to four repositories, of images sharing layers:
    every image then pulls back with its digests (through another node), the bucket holds one object per
    distinct digest and nothing of any upload, and PostgreSQL one row per blob and per link."""
    seed = fresh_seed()
    source = tmp_path / "source"
    images, blobs = fleet_layout(source, seed)
    with cluster(tmp_path / "fleet", nodes=3) as group:

        def target(number: int) -> str:
            return f"fleet/r{number % REPOSITORIES}:v{number}"

        def push(number: int) -> None:
            skopeo.push(group.nodes[number % 3], f"oci:{source}:i{number}", target(number))

        with ThreadPoolExecutor(PUSHES) as pool:
            list(pool.map(push, range(PUSHES)))

        def pull(number: int) -> None:
            pulled = tmp_path / f"pulled-{number}"
            skopeo.pull(group.nodes[(number + 1) % 3], target(number), f"oci:{pulled}:v{number}")
            assert layout_manifest_digest(pulled, f"v{number}") == images[number]["digest"]
            assert all(blobs[digest] == data for digest, data in layout_blobs(pulled).items()), number

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(pull, range(PUSHES)))

        manifests = {d["digest"] for d in images}
        content = set(blobs) - manifests  # configs and layers
        assert sorted(group.stored_blob_digests()) == sorted(blobs), "one object per distinct digest"
        assert group.object_keys("uploads/") == []
        assert group.s3_client.list_multipart_uploads(Bucket=group.bucket).get("Uploads", []) == []

        rows = group.query("SELECT digest, count(*) FROM blobs GROUP BY digest")
        assert Counter(dict(rows)) == Counter(dict.fromkeys(content, 1))
        assert group.query("SELECT count(*) FROM uploads") == [(0,)]
        links = group.query(
            "SELECT r.name, b.digest, count(*) FROM repository_blobs b JOIN repositories r ON r.id = b.repository_id "
            "GROUP BY r.name, b.digest"
        )
        expected_links: set[tuple[str, str]] = set()
        for number, descriptor in enumerate(images):
            manifest = json.loads(blobs[descriptor["digest"]])
            for entry in (manifest["config"], *manifest["layers"]):
                expected_links.add((f"fleet/r{number % REPOSITORIES}", entry["digest"]))
        assert all(count == 1 for *_, count in links), links
        assert {(name, digest) for name, digest, _ in links} == expected_links
        stored_manifests = group.query(
            "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id"
        )
        assert sorted(stored_manifests) == sorted(
            (f"fleet/r{number % REPOSITORIES}", d["digest"]) for number, d in enumerate(images)
        )
        assert_no_server_errors(group)


# ------------------------------------------------------------------------------------------ 3. background jobs

JOB_INTERVAL = 4.0  # seconds: --lifecycle-interval and --gc-interval of the job tests
KEEP_NEWEST = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep the newest image",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"},
        }
    ]
}
GC_LINE = "garbage collection: GcReport"


def expiry_events(group: Cluster, repository: str, log: str = "events.log") -> list[str]:
    """Digests of the lifecycle EXPIRE events about `repository`, from every node's data directory."""
    return [
        line["detail"]["image-digest"]
        for node in group.nodes
        for line in json_log_lines(node.data_dir / log)
        if line.get("detail-type") == "ECR Image Action"
        and line["detail"]["repository-name"] == repository
        and line["detail"]["action-type"] == "EXPIRE"
    ]


def gc_log_lines(node: ServerProcess) -> int:
    return sum(GC_LINE in line for line in node.log().splitlines())


def lease_row(group: Cluster, name: str) -> tuple[str, datetime] | None:
    rows = group.query("SELECT owner, expires_at FROM leases WHERE name = :name", name=name)
    return (rows[0][0], rows[0][1]) if rows else None


def test_jobs_run_once_per_interval_and_a_dead_nodes_lease_is_taken_over(tmp_path: Path) -> None:
    """Three nodes with 4-second lifecycle and GC intervals. Node 1 starts alone, takes the GC lease and is
    killed mid-run (its GC waits on a lock this test holds); nodes 2 and 3 join. A repository gets four
    images and a keep-newest policy. Then: the policy is applied once (three EXPIRE events over all nodes,
    lastEvaluatedAt is the run's time), no job ever ran twice within its interval, no lease was taken
    while another node's was live, every GC run ran on one node, and once the dead node's lease expired a
    live node took the GC over."""
    interval = timedelta(seconds=JOB_INTERVAL)
    flags = ("--lifecycle-interval", str(JOB_INTERVAL), "--gc-interval", str(JOB_INTERVAL), "--job-lease", "6")
    with cluster(tmp_path, nodes=3, extra_args=flags, start=False) as group:
        migrate(group.database_url)
        install_job_history(group)
        first, second, third = group.nodes

        with group.engine.connect() as blocker:
            transaction = blocker.begin()
            blocker.execute(text("LOCK TABLE repository_blobs IN SHARE MODE"))  # GC's unlink step waits on it
            group.start([first])
            wait_for(lambda: lock_waiters(group, "%repository_blobs%"), 30, "node 1's GC run")
            held = lease_row(group, "job:garbage-collection")
            assert held is not None, job_history(group)
            dead_owner, expires = held
            for node in (second, third):  # one after the other: their first ticks do not collide
                group.start([node])
            first.kill()
            transaction.rollback()

        # Node 1 renewed its 6-second lease every 2 seconds while its GC waited; killed, it renews no more.
        renewed = lease_row(group, "job:garbage-collection")
        assert renewed is not None and renewed[0] == dead_owner and renewed[1] >= expires, (renewed, expires)
        dead_until = renewed[1]

        repository = "jobs/app"
        ecr = ecr_client(second)
        ecr.create_repository(repositoryName=repository)
        pushed = [put_api_image(ecr, repository, seed=fresh_seed(), tag=f"v{n}").digest for n in range(4)]
        ecr_client(third).put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText=json.dumps(KEEP_NEWEST))

        def gc_runs_after_expiry() -> list[datetime]:
            return [at for at in job_runs(job_history(group), "garbage-collection") if at > dead_until]

        wait_for(lambda: len(expiry_events(group, repository)) >= 3, 60, "the lifecycle policy's expiries")
        wait_for(gc_runs_after_expiry, 60, "a live node taking the GC over and running it")
        last_evaluated = ecr_client(third).get_lifecycle_policy(repositoryName=repository)["lastEvaluatedAt"]
        assert [d["imageDigest"] for d in ecr.describe_images(repositoryName=repository)["imageDetails"]] == [pushed[3]]
        second.stop()  # a run in progress finishes first; from here on the history is complete
        third.stop()

        # The policy was applied once: one EXPIRE per expired image over all nodes, in both logs.
        assert Counter(expiry_events(group, repository)) == Counter(dict.fromkeys(pushed[:3], 1))
        assert Counter(expiry_events(group, repository, "audit.log")) == Counter(dict.fromkeys(pushed[:3], 1))

        history = job_history(group)
        repository_id = group.query("SELECT id FROM repositories WHERE name = :name", name=repository)[0][0]
        evaluated = job_runs(history, f"lifecycle:{repository_id}")
        assert any(abs(last_evaluated - at) < timedelta(milliseconds=1) for at in evaluated), (
            last_evaluated,
            evaluated,
        )
        for job in ("lifecycle-sweep", "garbage-collection", f"lifecycle:{repository_id}"):
            assert not runs_closer_than(job_runs(history, job), interval), (job, job_runs(history, job))
        assert not lease_overlaps(history), lease_overlaps(history)

        # The dead node's lease held until it expired, then a live node took the job.
        gc_leases = [r for r in history if r.name == "job:garbage-collection" and r.operation != "DELETE"]
        held_since = gc_leases[0].recorded_at
        assert gc_leases[0].owner == dead_owner, gc_leases
        takeover = next(r for r in gc_leases if r.owner != dead_owner)
        assert takeover.recorded_at >= dead_until, (takeover, dead_until)
        gc_runs = job_runs(history, "garbage-collection")
        assert not [at for at in gc_runs if held_since < at < dead_until], (gc_runs, held_since, dead_until)

        # Each GC run ran on one node: one log line per recorded run, over all nodes (none on the dead one).
        assert gc_log_lines(first) == 0
        assert gc_log_lines(second) + gc_log_lines(third) == len(gc_runs), (len(gc_runs), group.logs())
        for node in (second, third):
            assert not server_errors(node), server_errors(node)


def run_job_as_another_node(connection: Any, job: str) -> None:
    """The writes a fourth node makes running `job` from start to end: take the lease, record the run, let go."""
    lease = {"name": f"job:{job}"}
    taken = (
        "INSERT INTO leases (name, owner, expires_at) VALUES (:name, 'node-4', clock_timestamp() + interval '1 hour')"
    )
    connection.execute(text(taken), lease)
    connection.execute(text("INSERT INTO job_runs (name, last_run_at) VALUES (:job, clock_timestamp())"), {"job": job})
    connection.execute(text("DELETE FROM leases WHERE name = :name"), lease)


def test_nodes_ticking_at_the_same_moment_run_each_job_once(tmp_path: Path) -> None:
    """Three nodes (default intervals: lifecycle daily, GC hourly) reach their first tick together: each has
    found every job due and asks for the lease of the first while this test holds the lease table; meanwhile a
    fourth node runs the lifecycle sweep from start to end. Released together, the nodes must not run the
    sweep again within its interval, must run GC and the key rotation once, and every node's scheduler must
    survive losing the race (a failed scheduler shows only as an errored lifespan when the node stops)."""
    with cluster(tmp_path, nodes=3, start=False) as group:
        migrate(group.database_url)
        install_job_history(group)
        with group.engine.connect() as blocker:
            transaction = blocker.begin()
            blocker.execute(text("LOCK TABLE leases IN ACCESS EXCLUSIVE MODE"))
            group.start()
            wait_for(lambda: lock_waiters(group, "%leases%") >= 3, 30, "three nodes asking for a lease")
            run_job_as_another_node(blocker, "lifecycle-sweep")
            transaction.commit()
        wait_for(lambda: job_runs(job_history(group), "kms-key-rotation"), 30, "the first tick's last job")
        wait_for(lambda: not group.query("SELECT name FROM leases"), 10, "every lease released")
        for node in group.nodes:
            node.stop()  # a scheduler's failure surfaces here, as an errored lifespan

        history = job_history(group)
        problems = []
        sweeps = job_runs(history, "lifecycle-sweep")
        if len(sweeps) != 1:
            problems.append(f"lifecycle-sweep ran {len(sweeps) - 1} more time(s) within its interval: {sweeps}")
        for job in ("garbage-collection", "kms-key-rotation"):
            if len(job_runs(history, job)) != 1:
                problems.append(f"{job} ran {len(job_runs(history, job))} times")
        if sum(gc_log_lines(node) for node in group.nodes) != 1:
            problems.append(f"{sum(gc_log_lines(node) for node in group.nodes)} GC runs logged")
        for number, node in enumerate(group.nodes, 1):
            if errors := server_errors(node):
                problems.append(f"node {number}: " + " | ".join(errors))
        assert not problems, "\n".join(problems)


def test_nodes_started_together_on_a_fresh_database_all_come_up(tmp_path: Path) -> None:
    """docs/deploy.md: "starting all nodes at once is safe". Three nodes given the same root credentials meet
    at their credential bootstrap (this test holds the credentials table until all three wait on it): every
    one must start and serve."""
    with cluster(tmp_path, nodes=3, start=False) as group:
        migrate(group.database_url)
        failures: dict[int, str] = {}

        def start(number: int) -> None:
            try:
                group.nodes[number].start()
            except RuntimeError as error:  # the node exited: keep the line naming the exception
                lines = [line for line in str(error).splitlines() if "Error:" in line or "Exception:" in line]
                failures[number + 1] = lines[-1] if lines else str(error)[-500:]

        with group.engine.connect() as blocker:
            transaction = blocker.begin()
            blocker.execute(text("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE"))
            threads = [threading.Thread(target=start, args=(number,)) for number in range(3)]
            for thread in threads:
                thread.start()
            wait_for(lambda: lock_waiters(group, "%credentials%") >= 3, 60, "three nodes bootstrapping")
            transaction.rollback()
        for thread in threads:
            thread.join(timeout=180)  # beyond the harness's own start timeout: a start fails, it does not hang
        assert not failures, failures
        for node in group.nodes:
            with node.client() as client:
                assert client.get("/v2/").status_code == 200
