"""Public repositories end to end: boto3 `ecr-public`, pushes with the ECR Public authorization token, anonymous
pulls by skopeo from `<host>/public/<alias>/<repository>`, and the walls around private repositories."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.support.clients import boto_client, ecr_password
from tests.support.iam import Keys, basic_auth, policy, statement
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, layout_blobs, layout_manifest_digest

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
NO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


@pytest.fixture(scope="module")
def public_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("public-server") / "data").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def public(public_server: ServerProcess) -> Any:
    return boto_client(public_server, "ecr-public", ROOT)


@pytest.fixture(scope="module")
def alias(public: Any) -> str:
    registries = public.describe_registries()["registries"]
    assert len(registries) == 1, registries
    name: str = registries[0]["aliases"][0]["name"]
    return name


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def public_password(public: Any) -> str:
    data = public.get_authorization_token()["authorizationData"]
    assert isinstance(data, dict) and "proxyEndpoint" not in data, data  # ECR Public: one object, no endpoint
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and password and ":" not in password
    return password


def push_public(skopeo: Skopeo, server: ServerProcess, public: Any, source: Path, tag: str, target: str) -> None:
    skopeo.ok(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"AWS:{public_password(public)}",
        f"oci:{source}:{tag}", f"docker://{server.host}/{target}:{tag}",
    )  # fmt: skip


def test_public_repository_round_trip(
    public_server: ServerProcess, public: Any, alias: str, skopeo: Skopeo, tmp_path: Path
) -> None:
    name = unique("demo")
    catalog = {
        "description": "A demo image",
        "architectures": ["x86-64"],
        "operatingSystems": ["Linux"],
        "aboutText": "# About",
        "usageText": "docker pull it",
    }
    created = public.create_repository(repositoryName=name, catalogData=catalog)
    repository = created["repository"]
    assert repository["repositoryArn"] == f"arn:aws:ecr-public::{ACCOUNT_ID}:repository/{name}"
    assert repository["repositoryUri"].endswith(f"/public/{alias}/{name}")
    assert {k: v for k, v in created["catalogData"].items() if k in catalog} == catalog

    registry = public.describe_registries()["registries"][0]
    assert registry["registryId"] == ACCOUNT_ID
    assert registry["registryUri"].endswith(f"/public/{alias}")
    assert registry["aliases"][0]["primaryRegistryAlias"] and registry["aliases"][0]["defaultRegistryAlias"]
    token = public.get_authorization_token()["authorizationData"]
    assert 11.9 * 3600 < token["expiresAt"].timestamp() - time.time() <= 12 * 3600 + 60

    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, size=16 * 1024, seed=fresh_seed())
    push_public(skopeo, public_server, public, source, "v1", f"public/{alias}/{name}")

    pulled = tmp_path / "pulled"
    skopeo.ok(
        "copy", "--quiet", "--src-tls-verify=false", "--src-no-creds",
        f"docker://{public_server.host}/public/{alias}/{name}:v1", f"oci:{pulled}:v1",
    )  # fmt: skip
    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(source)
    tags = httpx.get(f"{public_server.url}/v2/public/{alias}/{name}/tags/list", timeout=30)
    assert tags.status_code == 200 and tags.json() == {"name": f"public/{alias}/{name}", "tags": ["v1"]}, tags.text

    details = public.describe_image_tags(repositoryName=name)["imageTagDetails"]
    assert [(d["imageTag"], d["imageDetail"]["imageDigest"]) for d in details] == [("v1", digest)]
    images = public.describe_images(repositoryName=name)["imageDetails"]
    assert [(i["imageDigest"], i["imageTags"]) for i in images] == [(digest, ["v1"])]

    assert {k: v for k, v in public.get_repository_catalog_data(repositoryName=name)["catalogData"].items()
            if k in catalog} == catalog  # fmt: skip
    public.put_repository_catalog_data(repositoryName=name, catalogData={"description": "Updated"})
    assert public.get_repository_catalog_data(repositoryName=name)["catalogData"]["description"] == "Updated"
    public.put_registry_catalog_data(displayName="Dockyard tests")
    assert public.get_registry_catalog_data()["registryCatalogData"] == {"displayName": "Dockyard tests"}

    listed = [r["repositoryName"] for r in public.describe_repositories()["repositories"]]
    assert name in listed
    private = boto_client(public_server, "ecr", ROOT).describe_repositories()["repositories"]
    assert name not in [r["repositoryName"] for r in private], "a public repository shows up as a private one"


def test_anonymous_push_to_a_public_repository_is_refused(
    public_server: ServerProcess, public: Any, alias: str, skopeo: Skopeo, tmp_path: Path
) -> None:
    name = unique("guarded")
    public.create_repository(repositoryName=name)
    source = tmp_path / "source"
    single_image_layout(source, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())

    refused = skopeo(
        "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--dest-no-creds",
        f"oci:{source}:v1", f"docker://{public_server.host}/public/{alias}/{name}:v1",
    )  # fmt: skip
    assert refused.returncode != 0, describe(refused)
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower(), describe(refused)

    base = f"{public_server.url}/v2/public/{alias}/{name}"
    for method, path in (
        ("POST", "/blobs/uploads/"),
        ("PUT", "/manifests/v1"),
        ("DELETE", "/manifests/v1"),
        ("DELETE", f"/blobs/sha256:{'0' * 64}"),
    ):
        answer = httpx.request(method, base + path, content=b"{}" if method == "PUT" else None, timeout=30)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"].startswith("Basic "), answer.headers
        assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert public.describe_images(repositoryName=name)["imageDetails"] == []


def test_private_repositories_are_never_anonymously_readable(
    public_server: ServerProcess, public: Any, alias: str, skopeo: Skopeo, tmp_path: Path
) -> None:
    """A private and a public repository of the same name: anonymous callers only ever reach the public one."""
    name = unique("twin")
    boto_client(public_server, "ecr", ROOT).create_repository(repositoryName=name)
    public.create_repository(repositoryName=name)
    private_src, public_src = tmp_path / "private", tmp_path / "public"
    private_digest = single_image_layout(private_src, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())
    public_digest = single_image_layout(public_src, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())
    skopeo.push(public_server, f"oci:{private_src}:v1", f"{name}:v1")
    push_public(skopeo, public_server, public, public_src, "v1", f"public/{alias}/{name}")

    inspected = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{public_server.host}/{name}:v1"
    )
    assert inspected.returncode != 0, describe(inspected)
    private_layer = next(d for d in layout_blobs(private_src) if d != private_digest)
    for path in (f"/v2/{name}/manifests/v1", f"/v2/{name}/tags/list", f"/v2/{name}/blobs/{private_layer}"):
        for headers in ({}, basic_auth("", "")):  # no Authorization, and skopeo's empty pair
            answer = httpx.get(public_server.url + path, headers=headers, timeout=30)
            assert answer.status_code == 401, (path, answer.text)
    assert httpx.get(f"{public_server.url}/v2/_catalog", timeout=30).status_code == 401

    via_public = httpx.get(
        f"{public_server.url}/v2/public/{alias}/{name}/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert via_public.status_code == 200 and via_public.headers["docker-content-digest"] == public_digest
    hidden = httpx.get(f"{public_server.url}/v2/public/{alias}/{name}/blobs/{private_layer}", timeout=30)
    assert hidden.status_code == 404, "a private repository's blob is reachable through the public path"


def test_ecr_public_permissions_govern_public_repositories(
    public_server: ServerProcess, public: Any, alias: str, skopeo: Skopeo, tmp_path: Path
) -> None:
    """ECR Public is its own service: pushing to a public repository takes `ecr-public:` actions (its ARN is
    `arn:aws:ecr-public::…`), so a user allowed `ecr-public:*` pushes with its public token."""
    iam = boto_client(public_server, "iam", ROOT)
    user = unique("publisher")
    iam.create_user(UserName=user)
    document = policy(statement("Allow", ["ecr-public:*", "sts:GetServiceBearerToken"]))
    iam.put_user_policy(UserName=user, PolicyName="publish", PolicyDocument=document)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    publisher = boto_client(public_server, "ecr-public", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    name = unique("published")
    publisher.create_repository(repositoryName=name)

    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())
    pushed = skopeo(
        "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false",
        "--dest-creds", f"AWS:{public_password(publisher)}",
        f"oci:{source}:v1", f"docker://{public_server.host}/public/{alias}/{name}:v1",
    )  # fmt: skip
    assert pushed.returncode == 0, describe(pushed)
    assert [i["imageDigest"] for i in publisher.describe_images(repositoryName=name)["imageDetails"]] == [digest]


def test_private_ecr_permissions_do_not_reach_public_repositories(
    public_server: ServerProcess, public: Any, alias: str
) -> None:
    """A user allowed `ecr:*` on everything (private ECR) holds no `ecr-public:` permission: it cannot push to
    or delete from the account's public repositories."""
    iam = boto_client(public_server, "iam", ROOT)
    user = unique("private-admin")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="ecr", PolicyDocument=policy(statement("Allow", "ecr:*")))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys = Keys(key["AccessKeyId"], key["SecretAccessKey"])
    name = unique("off-limits")
    public.create_repository(repositoryName=name)

    password = ecr_password(boto_client(public_server, "ecr", keys))
    for headers in (keys.basic, basic_auth("AWS", password)):
        answer = httpx.post(f"{public_server.url}/v2/public/{alias}/{name}/blobs/uploads/", headers=headers, timeout=30)
        assert answer.status_code == 403, answer.text
        assert answer.json()["errors"][0]["code"] == "DENIED"
    with pytest.raises(ClientError) as raised:
        boto_client(public_server, "ecr-public", keys).delete_repository(repositoryName=name)
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


def test_ecr_public_authorization_token_also_needs_sts_get_service_bearer_token(public_server: ServerProcess) -> None:
    """AWS: `ecr-public:GetAuthorizationToken` *and* `sts:GetServiceBearerToken` are both required."""
    iam = boto_client(public_server, "iam", ROOT)
    user = unique("half-allowed")
    iam.create_user(UserName=user)
    only_public = policy(statement("Allow", "ecr-public:GetAuthorizationToken"))
    iam.put_user_policy(UserName=user, PolicyName="token", PolicyDocument=only_public)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    client = boto_client(public_server, "ecr-public", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    with pytest.raises(ClientError) as raised:
        client.get_authorization_token()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    both = policy(statement("Allow", ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"]))
    iam.put_user_policy(UserName=user, PolicyName="token", PolicyDocument=both)
    assert client.get_authorization_token()["authorizationData"]["authorizationToken"]


def test_login_tokens_act_only_on_their_own_registry(
    public_server: ServerProcess, public: Any, alias: str, skopeo: Skopeo, tmp_path: Path
) -> None:
    """The root user's three login passwords (ECR in us-east-1, ECR in eu-west-1, ECR Public) against a
    repository in each of those registries: each pushes and pulls its own registry only, and is refused
    (403 DENIED, as for a repository that does not exist) everywhere else; public pulls stay open."""
    name = unique("bound")
    source = tmp_path / "source"
    single_image_layout(source, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())
    passwords = {
        "us-east-1": ecr_password(boto_client(public_server, "ecr", ROOT)),
        "eu-west-1": ecr_password(boto_client(public_server, "ecr", ROOT, region="eu-west-1")),
        "public": public_password(public),
    }

    def where(registry: str, repository: str) -> tuple[str, dict[str, str]]:
        """The /v2 path of a repository of `registry`, and the Host header naming a private registry."""
        if registry == "public":
            return f"public/{alias}/{repository}", {}
        return repository, {"Host": f"{ACCOUNT_ID}.dkr.ecr.{registry}.localhost:{public_server.port}"}

    public.create_repository(repositoryName=name)
    for registry, password in passwords.items():  # each token pushes `name:v1` to its own registry, no host needed
        path, _ = where(registry, name)
        copied = skopeo(
            "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", f"AWS:{password}",
            f"oci:{source}:v1", f"docker://{public_server.host}/{path}:v1",
        )  # fmt: skip
        assert copied.returncode == 0, (registry, describe(copied))

    for token_registry, password in passwords.items():
        for registry in passwords:
            answers = []
            for repository in (name, unique("ghost")):
                path, host = where(registry, repository)
                headers = {**basic_auth("AWS", password), **host}
                pulled = httpx.get(f"{public_server.url}/v2/{path}/tags/list", headers=headers, timeout=30)
                pushed = httpx.post(f"{public_server.url}/v2/{path}/blobs/uploads/", headers=headers, timeout=30)
                answers.append((pushed.status_code, pushed.text.replace(repository, "<repository>")))
                if registry == token_registry or registry == "public":  # anyone reads a public repository
                    assert pulled.status_code == (200 if repository == name else 404), (registry, pulled.text)
                if registry == token_registry:
                    assert pushed.status_code == 202, (token_registry, registry, pushed.text)
                    continue
                assert (pushed.status_code, pushed.json()["errors"][0]["code"]) == (403, "DENIED"), pushed.text
                if registry != "public":
                    assert (pulled.status_code, pulled.json()["errors"][0]["code"]) == (403, "DENIED"), pulled.text
            if registry != token_registry:
                assert answers[0] == answers[1], "a refusal reveals the repository exists"
