"""Who may do what: every /v2 route, the main ECR operations and the IAM operations, for five kinds of caller.

Callers: anonymous; the root user of another account that holds no grant; a user of the registry's account whose
identity policy allows everything but also carries an explicit Deny; a user allowed by its identity policy; the
account's root user. The /v2 routes are also crossed with three registries of the account (private us-east-1,
private eu-west-1, public) and, besides those callers, the root user's login tokens for each of them: a token
acts on its own registry only. Each cell asserts its outcome (2xx / 401 / 403 DENIED / AccessDeniedException),
that it is never a 5xx, and, for every caller that is turned away, that the answer is the same for an existing
repository (or user) and for one that does not exist: a refusal must not reveal what the account holds.

Everything runs against the in-process app (one per module); ECR and IAM calls are SigV4-signed by botocore.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.domain.names import RepositoryRef
from dockyard.domain.registries import Registries
from dockyard.http import aws_json
from dockyard.server import Dockyard, Services, prepare
from tests.api.helpers import image_manifest, put_manifest
from tests.support.iam import (
    PULL_ACTIONS,
    Keys,
    add_root_key,
    add_user,
    audit_matching,
    aws_error_type,
    basic_auth,
    json_call,
    policy,
    query_call,
    repository_grant,
    statement,
)
from tests.support.images import OCI_MANIFEST, sha256
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

BASE = "http://testserver"
OTHER_ACCOUNT = "210987654321"
UNRELATED_ACCOUNT = "333333333333"
# How another account names this registry on the /v2 door: ECR's registry host scheme.
REGISTRY_HOST = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.localhost"
LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "expire untagged images after two weeks",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 14,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)

ANONYMOUS, OTHER, DENIED, ALLOWED, ROOT = "anonymous", "other-account", "deny-user", "allowed-user", "root"
CALLERS = (ANONYMOUS, OTHER, DENIED, ALLOWED, ROOT)
PERMITTED = (ALLOWED, ROOT)
# The account's registries, and the root user's login tokens for each (GetAuthorizationToken of ECR signed for the
# region, and of ECR Public).
US, EU, PUBLIC = "us-east-1", "eu-west-1", "public"
REGISTRIES = (US, EU, PUBLIC)
TOKEN_US, TOKEN_EU, TOKEN_PUBLIC = "token-us-east-1", "token-eu-west-1", "token-public"
TOKENS = (TOKEN_US, TOKEN_EU, TOKEN_PUBLIC)
TOKEN_REGISTRY = {TOKEN_US: US, TOKEN_EU: EU, TOKEN_PUBLIC: PUBLIC}


def registry_host(region: str) -> str:
    return f"{ACCOUNT_ID}.dkr.ecr.{region}.localhost"


@dataclass
class Caller:
    name: str
    keys: Keys | None
    account: str | None

    @property
    def registry_headers(self) -> dict[str, str]:
        """Headers for the /v2 door: credentials, and for another account the host naming this registry."""
        headers = self.keys.basic if self.keys else {}
        if self.account != ACCOUNT_ID and self.keys is not None:
            headers = {**headers, "Host": REGISTRY_HOST}
        return headers


@dataclass
class World:
    services: Services
    http: TestClient
    root: TestClient
    data_dir: Path
    callers: dict[str, Caller] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # what refused callers look at: they change nothing
    regional: dict[str, TestClient] = field(default_factory=dict)  # root, addressing a region by its host
    tokens: dict[str, str] = field(default_factory=dict)  # login token caller -> password
    alias: str = ""  # the account's public registry alias

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("matrix") / "data"
    services = prepare(Settings(data_dir, ACCOUNT_ID, background_jobs=False))
    bootstrap_root_credentials(
        services.metadata, services.box, ACCOUNT_ID, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    accounts = services.accounts
    everything = statement("Allow", ["ecr:*", "iam:*"])
    callers = {
        ANONYMOUS: Caller(ANONYMOUS, None, None),
        OTHER: Caller(OTHER, add_root_key(accounts, OTHER_ACCOUNT), OTHER_ACCOUNT),
        DENIED: Caller(
            DENIED,
            add_user(accounts, ACCOUNT_ID, "matrix-denied", policy(everything, statement("Deny", ["ecr:*", "iam:*"]))),
            ACCOUNT_ID,
        ),
        ALLOWED: Caller(ALLOWED, add_user(accounts, ACCOUNT_ID, "matrix-allowed", policy(everything)), ACCOUNT_ID),
        ROOT: Caller(ROOT, Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY), ACCOUNT_ID),
    }
    app = Dockyard(services)
    root_auth = basic_auth(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    with (
        TestClient(app) as http,
        TestClient(app, headers=root_auth) as root,
        TestClient(app, headers={**root_auth, "Host": registry_host(US)}) as in_us,
        TestClient(app, headers={**root_auth, "Host": registry_host(EU)}) as in_eu,
    ):
        world = World(services, http, root, data_dir, callers, regional={US: in_us, EU: in_eu})
        world.alias = Registries(services.metadata).public_alias(ACCOUNT_ID)
        root_keys = callers[ROOT].keys
        for caller, service, region in ((TOKEN_US, "ecr", US), (TOKEN_EU, "ecr", EU), (TOKEN_PUBLIC, "ecr-public", US)):
            answer = json_call(http, BASE, "GetAuthorizationToken", {}, root_keys, service, region)
            assert answer.status_code == 200, answer.text
            data = answer.json()["authorizationData"]
            encoded = (data if isinstance(data, dict) else data[0])["authorizationToken"]
            user, _, world.tokens[caller] = base64.b64decode(encoded).decode().partition(":")
            assert user == "AWS"
        yield world


def fresh_name(prefix: str) -> str:
    return f"matrix/{prefix}-{uuid.uuid4().hex[:12]}"


def random_digest() -> str:
    return "sha256:" + secrets.token_hex(32)


# ================================================================================================ /v2 routes


@dataclass(frozen=True)
class Target:
    """One repository a cell acts on: real (pushed by root) or a name nothing exists under."""

    repo: str
    blob: str  # a blob of the repository (a layer of `v1`)
    manifest_digest: str  # the manifest tagged v1
    next_manifest: bytes  # a manifest whose blobs are uploaded but which is not pushed yet
    upload: str  # the Location of an open upload session
    mount_source: str  # a repository root can read holding `mount_blob`
    mount_blob: str


MOUNT_SOURCE = "matrix/mount-source"


def existing_target(world: World, label: str, registry: str | None = None) -> Target:
    """A repository pushed by root: in us-east-1 addressed without a registry host (None), or in `registry`
    (a private one addressed by its host, the public one by its `public/<alias>/` path)."""
    root = world.root if registry in (None, PUBLIC) else world.regional[registry]
    prefix = f"public/{world.alias}/" if registry == PUBLIC else ""
    repo = prefix + fresh_name(label)
    layer = f"layer {uuid.uuid4()}".encode()
    raw = image_manifest(repo, root, layers=(layer,))
    pushed = put_manifest(root, repo, "v1", raw)
    assert pushed.status_code == 201, pushed.text
    next_manifest = image_manifest(repo, root, layers=(f"next {uuid.uuid4()}".encode(),))
    started = root.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    mount_blob = f"mountable {uuid.uuid4()}".encode()
    image_manifest(prefix + MOUNT_SOURCE, root, layers=(mount_blob,))
    return Target(
        repo,
        sha256(layer),
        pushed.headers["docker-content-digest"],
        next_manifest,
        started.headers["location"],
        prefix + MOUNT_SOURCE,
        sha256(mount_blob),
    )


def ghost_target(label: str, like: Target, prefix: str = "") -> Target:
    repo = prefix + fresh_name(f"ghost-{label}")
    return Target(
        repo,
        random_digest(),
        random_digest(),
        like.next_manifest,
        f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}",
        like.mount_source,
        like.mount_blob,
    )


CHUNK = b"a chunk of layer data"
# route -> (method, path, body, content type) for a target; and the status a permitted caller gets.
RouteRequest = tuple[str, str, bytes | None, str | None]
ROUTES: dict[str, tuple[Callable[[Target], RouteRequest], int]] = {
    "blob GET": (lambda t: ("GET", f"/v2/{t.repo}/blobs/{t.blob}", None, None), 200),
    "blob HEAD": (lambda t: ("HEAD", f"/v2/{t.repo}/blobs/{t.blob}", None, None), 200),
    "blob DELETE": (lambda t: ("DELETE", f"/v2/{t.repo}/blobs/{t.blob}", None, None), 202),
    "upload POST": (lambda t: ("POST", f"/v2/{t.repo}/blobs/uploads/", None, None), 202),
    "upload PATCH": (lambda t: ("PATCH", t.upload, CHUNK, "application/octet-stream"), 202),
    "upload PUT": (lambda t: ("PUT", f"{t.upload}?digest={sha256(CHUNK)}", CHUNK, "application/octet-stream"), 201),
    "upload GET": (lambda t: ("GET", t.upload, None, None), 204),
    "upload DELETE": (lambda t: ("DELETE", t.upload, None, None), 204),
    "mount": (
        lambda t: ("POST", f"/v2/{t.repo}/blobs/uploads/?mount={t.mount_blob}&from={t.mount_source}", None, None),
        201,
    ),
    # Without `from`: any repository of the registry holding the blob that the caller may read.
    "anonymous mount": (lambda t: ("POST", f"/v2/{t.repo}/blobs/uploads/?mount={t.mount_blob}", None, None), 201),
    "manifest GET": (lambda t: ("GET", f"/v2/{t.repo}/manifests/v1", None, None), 200),
    "manifest HEAD": (lambda t: ("HEAD", f"/v2/{t.repo}/manifests/v1", None, None), 200),
    "manifest PUT": (lambda t: ("PUT", f"/v2/{t.repo}/manifests/v2", t.next_manifest, OCI_MANIFEST), 201),
    "manifest DELETE": (lambda t: ("DELETE", f"/v2/{t.repo}/manifests/{t.manifest_digest}", None, None), 202),
    "tags list": (lambda t: ("GET", f"/v2/{t.repo}/tags/list", None, None), 200),
    "referrers": (lambda t: ("GET", f"/v2/{t.repo}/referrers/{t.manifest_digest}", None, None), 200),
}


def send(world: World, caller: Caller, request: RouteRequest) -> httpx.Response:
    method, path, body, content_type = request
    headers = dict(caller.registry_headers)
    if content_type:
        headers["Content-Type"] = content_type
    return world.http.request(method, path, content=body, headers=headers)


def registry_refusal(response: httpx.Response, caller: str, head: bool) -> None:
    """The refusal a caller that may not act gets on the /v2 door."""
    status, code = (401, "UNAUTHORIZED") if caller == ANONYMOUS else (403, "DENIED")
    assert response.status_code == status, (caller, response.status_code, response.text)
    if caller == ANONYMOUS:
        assert response.headers["www-authenticate"].startswith("Basic realm="), response.headers
    if not head:
        assert [e["code"] for e in response.json()["errors"]] == [code], response.text


def fingerprint(response: httpx.Response, names: tuple[str, ...]) -> tuple[Any, ...]:
    """What a caller learns from an answer, with the repository's name (which it sent itself) blanked out."""
    text = response.text
    for name in names:
        text = text.replace(name, "<repository>")
    return response.status_code, response.headers.get("www-authenticate"), response.headers.get("content-type"), text


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", list(ROUTES))
def test_registry_route(world: World, route: str, caller: str) -> None:
    build, permitted_status = ROUTES[route]
    who = world.callers[caller]
    label = route.replace(" ", "-").lower()
    if caller in PERMITTED:
        answer = send(world, who, build(existing_target(world, label)))
        assert answer.status_code == permitted_status, (answer.status_code, answer.text)
        return
    target: Target = world.once("target", lambda: existing_target(world, "refused"))
    method = build(target)[0]
    answer = send(world, who, build(target))
    assert answer.status_code < 500, answer.text
    registry_refusal(answer, caller, head=method == "HEAD")
    ghost = ghost_target(label, target)
    ghost_answer = send(world, who, build(ghost))
    names = (target.repo, ghost.repo)
    assert fingerprint(ghost_answer, names) == fingerprint(answer, names), "a refusal reveals the repository exists"


@pytest.mark.parametrize("caller", CALLERS)
def test_registry_base(world: World, caller: str) -> None:
    """`/v2/` checks authentication only: any valid credentials get 200, none get the challenge."""
    answer = world.http.get("/v2/", headers=world.callers[caller].registry_headers)
    if caller == ANONYMOUS:
        registry_refusal(answer, caller, head=False)
    else:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {}


@pytest.mark.parametrize("caller", CALLERS)
def test_registry_catalog(world: World, caller: str) -> None:
    repo = existing_target(world, "catalog").repo
    answer = world.http.get("/v2/_catalog", params={"n": 1000}, headers=world.callers[caller].registry_headers)
    assert answer.status_code < 500, answer.text
    if caller in PERMITTED:
        assert answer.status_code == 200, answer.text
        assert repo in answer.json()["repositories"]
    else:
        registry_refusal(answer, caller, head=False)
        assert repo not in answer.text


def test_mount_from_an_unreadable_repository_uploads_instead(world: World) -> None:
    """A caller allowed on the target but not on the `from` repository gets a plain upload (202), never the
    blob, and the same answer whether or not the source holds it."""
    scoped = add_user(
        world.services.accounts,
        ACCOUNT_ID,
        "matrix-mounter",
        policy(statement("Allow", "ecr:*", f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/matrix/mine-*")),
    )
    target = fresh_name("mine")
    secret_blob = f"secret {uuid.uuid4()}".encode()
    image_manifest("matrix/secret-source", world.root, layers=(secret_blob,))
    answers = []
    for source, digest in (("matrix/secret-source", sha256(secret_blob)), ("matrix/no-such-source", random_digest())):
        answer = world.http.post(
            f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source}, headers=scoped.basic
        )
        assert answer.status_code == 202, answer.text
        answers.append((answer.status_code, answer.headers["range"], answer.text))
    assert answers[0] == answers[1]
    probe = world.http.head(f"/v2/{target}/blobs/{sha256(secret_blob)}", headers=scoped.basic)
    assert probe.status_code == 404


def test_anonymous_mount_passes_over_unreadable_repositories(world: World) -> None:
    """`mount` without `from` mounts only from repositories the caller may read: a blob held only where it may not
    look gets the answer a blob held nowhere gets (no existence oracle), and never reaches the target."""
    scoped = add_user(
        world.services.accounts,
        ACCOUNT_ID,
        "matrix-anonymous-mounter",
        policy(statement("Allow", "ecr:*", f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/matrix/mine-*")),
    )
    target = fresh_name("mine")
    secret_blob = f"secret {uuid.uuid4()}".encode()
    image_manifest(fresh_name("secret"), world.root, layers=(secret_blob,))
    answers = []
    for digest in (sha256(secret_blob), random_digest()):
        answer = world.http.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest}, headers=scoped.basic)
        assert answer.status_code == 202, answer.text
        assert answer.headers["location"].startswith(f"/v2/{target}/blobs/uploads/")
        headers = {
            k: v for k, v in answer.headers.items() if k not in ("location", "docker-upload-uuid", "x-request-id")
        }
        answers.append((answer.status_code, headers, answer.text))
    assert answers[0] == answers[1]
    assert world.http.head(f"/v2/{target}/blobs/{sha256(secret_blob)}", headers=scoped.basic).status_code == 404

    # Once a repository it may read holds the blob too, the same request mounts it from there.
    readable_source = fresh_name("mine-source")
    image_manifest(readable_source, world.root, layers=(secret_blob,))
    mounted = world.http.post(
        f"/v2/{target}/blobs/uploads/", params={"mount": sha256(secret_blob)}, headers=scoped.basic
    )
    assert mounted.status_code == 201, mounted.text
    assert mounted.headers["docker-content-digest"] == sha256(secret_blob)
    assert world.http.get(f"/v2/{target}/blobs/{sha256(secret_blob)}", headers=scoped.basic).content == secret_blob


# ================================================================================================ registries x tokens

# Routes that change nothing: a permitted caller may run them on a shared repository.
READ_ROUTES = frozenset({"blob GET", "blob HEAD", "manifest GET", "manifest HEAD", "tags list", "referrers"})
READ_ONLY = READ_ROUTES | {"upload GET"}


def cross_headers(world: World, caller: str, registry: str | None) -> dict[str, str]:
    """A caller's credentials (a login token's password as user `AWS`) and, for a private registry, its host;
    None sends no host naming a registry (the caller's own registry, or the server's default)."""
    if caller in TOKENS:
        headers = basic_auth("AWS", world.tokens[caller])
    else:
        keys = world.callers[caller].keys
        headers = dict(keys.basic) if keys else {}
    if registry not in (None, PUBLIC):
        headers["Host"] = registry_host(registry)
    return headers


def cross_permitted(caller: str, registry: str, route: str) -> bool:
    if registry == PUBLIC and route in READ_ROUTES:
        return True  # anyone may read a public repository, whatever credentials it sends
    if caller in TOKEN_REGISTRY:
        return TOKEN_REGISTRY[caller] == registry  # root's token, on its own registry only
    if caller == ALLOWED:
        return registry != PUBLIC  # `ecr:*` allows no `ecr-public:` action
    return caller == ROOT


def cross_send(world: World, caller: str, registry: str, request: RouteRequest) -> httpx.Response:
    method, path, body, content_type = request
    headers = cross_headers(world, caller, registry)
    if content_type:
        headers["Content-Type"] = content_type
    return world.http.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize("caller", CALLERS + TOKENS)
@pytest.mark.parametrize("registry", REGISTRIES)
@pytest.mark.parametrize("route", list(ROUTES))
def test_registry_route_across_registries(world: World, route: str, registry: str, caller: str) -> None:
    """Every route on each registry of the account: a login token only ever acts on the registry it was issued
    for; elsewhere it is refused like a caller without permission (403 DENIED), the same whether or not the
    repository exists. Public reads stay open to everyone."""
    build, permitted_status = ROUTES[route]
    label = f"{registry}-{route.replace(' ', '-').lower()}"
    if cross_permitted(caller, registry, route):
        fresh = route not in READ_ONLY
        target = (
            existing_target(world, label, registry)
            if fresh
            else world.once(f"read-{registry}", lambda: existing_target(world, "read", registry))
        )
        answer = cross_send(world, caller, registry, build(target))
        assert answer.status_code == permitted_status, (answer.status_code, answer.text)
        return
    target = world.once(f"refused-{registry}", lambda: existing_target(world, "refused", registry))
    prefix = f"public/{world.alias}/" if registry == PUBLIC else ""
    ghost = ghost_target(label, target, prefix)
    method = build(target)[0]
    answer = cross_send(world, caller, registry, build(target))
    assert answer.status_code < 500, answer.text
    registry_refusal(answer, caller, head=method == "HEAD")
    ghost_answer = cross_send(world, caller, registry, build(ghost))
    # Longest first: a public repository's ARN names it without its `public/<alias>/` path.
    names = (target.repo, ghost.repo, target.repo.removeprefix(prefix), ghost.repo.removeprefix(prefix))
    assert fingerprint(ghost_answer, names) == fingerprint(answer, names), "a refusal reveals the repository exists"


@pytest.mark.parametrize("caller", TOKENS)
@pytest.mark.parametrize("host", (None, US, EU))
def test_registry_base_with_a_login_token(world: World, host: str | None, caller: str) -> None:
    """`/v2/` with a login token: good without a registry host and on the token's own registry host."""
    answer = world.http.get("/v2/", headers=cross_headers(world, caller, host))
    if host is None or TOKEN_REGISTRY[caller] == host:
        assert answer.status_code == 200, answer.text
    else:
        registry_refusal(answer, caller, head=False)


@pytest.mark.parametrize("caller", (ROOT, *TOKENS))
@pytest.mark.parametrize("host", (None, US, EU))
def test_catalog_lists_only_the_callers_registry(world: World, host: str | None, caller: str) -> None:
    """`/v2/_catalog` lists one private registry: the host's, else the login token's (root's access key: the
    default region's). A token for another registry, ECR Public's included, is refused."""
    listed = world.once("listed", lambda: {r: existing_target(world, "listed", r).repo for r in REGISTRIES})
    if caller == ROOT:
        expected: str | None = host or US
    else:
        own = TOKEN_REGISTRY[caller]
        expected = own if own != PUBLIC and host in (None, own) else None
    answer = world.http.get(
        "/v2/_catalog", params={"n": 1000, "last": "matrix/listed-"}, headers=cross_headers(world, caller, host)
    )
    assert answer.status_code < 500, answer.text
    names = [name.removeprefix(f"public/{world.alias}/") for name in listed.values()]
    if expected is None:
        registry_refusal(answer, caller, head=False)
        assert not any(name in answer.text for name in names), answer.text
        return
    assert answer.status_code == 200, answer.text
    repositories = answer.json()["repositories"]
    assert listed[expected] in repositories
    assert [n for n in names if n in repositories] == [listed[expected]], "another registry's repository is listed"


def test_a_login_token_without_a_registry_host_acts_on_its_own_registry(world: World) -> None:
    """No registry host: a private token's own region is where names point (pull, and a push creates the
    repository there); an ECR Public token has no private registry to point at and is refused there."""
    for caller, region in ((TOKEN_US, US), (TOKEN_EU, EU)):
        headers = cross_headers(world, caller, None)
        target = existing_target(world, "hostless", region)
        assert pull(world, headers, target) == (200, 200, 200)
        fresh = fresh_name("hostless-push")
        started = world.http.post(f"/v2/{fresh}/blobs/uploads/", headers=headers)
        assert started.status_code == 202, started.text
        for where in REGISTRIES:
            found = world.services.metadata.get_repository(RepositoryRef(ACCOUNT_ID, where, fresh))
            assert (found is not None) == (where == region), (caller, where)
    public = cross_headers(world, TOKEN_PUBLIC, None)
    target = existing_target(world, "hostless-public")
    ghost = ghost_target("hostless-public", target)
    for route in ("manifest GET", "upload POST", "manifest DELETE"):
        build = ROUTES[route][0]
        method, path, body, _ = build(target)
        answer = world.http.request(method, path, content=body, headers=public)
        registry_refusal(answer, TOKEN_PUBLIC, head=False)
        method, path, body, _ = build(ghost)
        ghost_answer = world.http.request(method, path, content=body, headers=public)
        names = (target.repo, ghost.repo)
        assert fingerprint(ghost_answer, names) == fingerprint(answer, names), route
    assert pull(world, {**world.callers[ROOT].registry_headers}, target) == (200, 200, 200)  # left as it was


# ================================================================================================ ECR operations


@dataclass(frozen=True)
class Repo:
    name: str
    layer: str
    next_manifest: str

    @property
    def arn(self) -> str:
        return f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/{self.name}"


def ecr(world: World, caller: Caller, operation: str, body: dict[str, Any]) -> httpx.Response:
    if caller.account not in (None, ACCOUNT_ID) and "registryId" in _members(operation):
        body = {"registryId": ACCOUNT_ID, **body}
    return json_call(world.http, BASE, operation, body, caller.keys)


def _members(operation: str) -> set[str]:
    shape = aws_json.service_model("ecr").operation_model(operation).input_shape
    return set(shape.members) if shape is not None else set()


def existing_repo(world: World, label: str) -> Repo:
    """A repository with an image (v1), a repository policy, a lifecycle policy and a resource tag."""
    target = existing_target(world, label)
    root = world.callers[ROOT]
    unrelated = repository_grant([f"arn:aws:iam::{UNRELATED_ACCOUNT}:root"], PULL_ACTIONS)
    for operation, body in (
        ("SetRepositoryPolicy", {"policyText": unrelated}),
        ("PutLifecyclePolicy", {"lifecyclePolicyText": LIFECYCLE}),
    ):
        answer = ecr(world, root, operation, {"repositoryName": target.repo, **body})
        assert answer.status_code == 200, answer.text
    repo = Repo(target.repo, target.blob, target.next_manifest.decode())
    tagged = ecr(world, root, "TagResource", {"resourceArn": repo.arn, "tags": [{"Key": "team", "Value": "a"}]})
    assert tagged.status_code == 200, tagged.text
    return repo


def ghost_repo(label: str, like: Repo) -> Repo:
    return Repo(fresh_name(f"ghost-{label}"), like.layer, like.next_manifest)


# operation -> (body for a repository, whether a permitted caller acts on a repository that does not exist yet)
ECR_OPERATIONS: dict[str, tuple[Callable[[Repo], dict[str, Any]], bool]] = {
    "CreateRepository": (lambda r: {"repositoryName": r.name}, True),
    "DescribeRepositories": (lambda r: {"repositoryNames": [r.name]}, False),
    "DeleteRepository": (lambda r: {"repositoryName": r.name, "force": True}, False),
    "ListImages": (lambda r: {"repositoryName": r.name}, False),
    "DescribeImages": (lambda r: {"repositoryName": r.name}, False),
    "BatchGetImage": (lambda r: {"repositoryName": r.name, "imageIds": [{"imageTag": "v1"}]}, False),
    "BatchDeleteImage": (lambda r: {"repositoryName": r.name, "imageIds": [{"imageTag": "v1"}]}, False),
    "PutImage": (lambda r: {"repositoryName": r.name, "imageManifest": r.next_manifest, "imageTag": "v2"}, False),
    "BatchCheckLayerAvailability": (lambda r: {"repositoryName": r.name, "layerDigests": [r.layer]}, False),
    "GetDownloadUrlForLayer": (lambda r: {"repositoryName": r.name, "layerDigest": r.layer}, False),
    "InitiateLayerUpload": (lambda r: {"repositoryName": r.name}, False),
    "SetRepositoryPolicy": (
        lambda r: {
            "repositoryName": r.name,
            "policyText": repository_grant([f"arn:aws:iam::{UNRELATED_ACCOUNT}:root"], ["ecr:BatchGetImage"]),
        },
        False,
    ),
    "GetRepositoryPolicy": (lambda r: {"repositoryName": r.name}, False),
    "DeleteRepositoryPolicy": (lambda r: {"repositoryName": r.name}, False),
    "PutLifecyclePolicy": (lambda r: {"repositoryName": r.name, "lifecyclePolicyText": LIFECYCLE}, False),
    "GetLifecyclePolicy": (lambda r: {"repositoryName": r.name}, False),
    "PutImageTagMutability": (lambda r: {"repositoryName": r.name, "imageTagMutability": "IMMUTABLE"}, False),
    "TagResource": (lambda r: {"resourceArn": r.arn, "tags": [{"Key": "cost", "Value": "b"}]}, False),
    "UntagResource": (lambda r: {"resourceArn": r.arn, "tagKeys": ["team"]}, False),
    "ListTagsForResource": (lambda r: {"resourceArn": r.arn}, False),
}


def ecr_refusal(answer: httpx.Response, caller: str) -> None:
    if caller == ANONYMOUS:  # AWS answers an unsigned call 403, like a denied one
        assert answer.status_code == 403, answer.text
        assert aws_error_type(answer) == "MissingAuthenticationTokenException", answer.text
    else:
        assert answer.status_code == 403, answer.text
        assert aws_error_type(answer) == "AccessDeniedException", answer.text


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("operation", list(ECR_OPERATIONS))
def test_ecr_operation(world: World, operation: str, caller: str) -> None:
    body_of, on_new_repository = ECR_OPERATIONS[operation]
    who = world.callers[caller]
    if caller in PERMITTED:
        repo = existing_repo(world, operation.lower())
        answer = ecr(world, who, operation, body_of(ghost_repo(operation.lower(), repo) if on_new_repository else repo))
        assert answer.status_code == 200, answer.text
        return
    repo = world.once("repo", lambda: existing_repo(world, "refused"))
    ghost = ghost_repo(operation.lower(), repo)
    answer = ecr(world, who, operation, body_of(repo))
    ecr_refusal(answer, caller)
    ghost_answer = ecr(world, who, operation, body_of(ghost))
    names = (repo.name, ghost.name)
    shown, ghost_shown = fingerprint(answer, names), fingerprint(ghost_answer, names)
    assert (ghost_shown[0], ghost_shown[3]) == (shown[0], shown[3]), "the refusal reveals the repository exists"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("operation", ["GetAuthorizationToken", "DescribeRegistry", "DescribeRepositories"])
def test_ecr_registry_operation(world: World, operation: str, caller: str) -> None:
    """Registry-level actions (`Resource: *`). Another account's own registry is its own business, except
    when it names this registry (DescribeRepositories with registryId)."""
    answer = ecr(world, world.callers[caller], operation, {})
    assert answer.status_code < 500, answer.text
    permitted = caller in PERMITTED or (caller == OTHER and operation != "DescribeRepositories")
    if permitted:
        assert answer.status_code == 200, answer.text
    else:
        ecr_refusal(answer, caller)


# ================================================================================================ IAM operations


@dataclass(frozen=True)
class IamTarget:
    user: str
    key_id: str


def existing_user(world: World) -> IamTarget:
    """A user of the registry's account with an inline policy and an access key."""
    name = f"target-{uuid.uuid4().hex[:10]}"
    keys = add_user(world.services.accounts, ACCOUNT_ID, name, policy(statement("Allow", "ecr:ListImages")))
    return IamTarget(name, keys.access_key_id)


def bare_user(world: World) -> IamTarget:
    name = f"bare-{uuid.uuid4().hex[:10]}"
    world.services.accounts.create_user(ACCOUNT_ID, name)
    return IamTarget(name, "AKIA" + secrets.token_hex(8).upper())


DOCUMENT = policy(statement("Allow", "ecr:DescribeImages"))
# action -> (params for a target user, how a permitted caller's target is made: existing | bare | fresh)
IAM_OPERATIONS: dict[str, tuple[Callable[[IamTarget], dict[str, str]], str]] = {
    "CreateUser": (lambda t: {"UserName": t.user}, "fresh"),
    "GetUser": (lambda t: {"UserName": t.user}, "existing"),
    "DeleteUser": (lambda t: {"UserName": t.user}, "bare"),
    "PutUserPolicy": (lambda t: {"UserName": t.user, "PolicyName": "extra", "PolicyDocument": DOCUMENT}, "existing"),
    "GetUserPolicy": (lambda t: {"UserName": t.user, "PolicyName": "inline"}, "existing"),
    "ListUserPolicies": (lambda t: {"UserName": t.user}, "existing"),
    "DeleteUserPolicy": (lambda t: {"UserName": t.user, "PolicyName": "inline"}, "existing"),
    "CreateAccessKey": (lambda t: {"UserName": t.user}, "bare"),
    "ListAccessKeys": (lambda t: {"UserName": t.user}, "existing"),
    "DeleteAccessKey": (lambda t: {"UserName": t.user, "AccessKeyId": t.key_id}, "existing"),
}


def iam_state(world: World, target: IamTarget) -> tuple[Any, ...]:
    accounts = world.services.accounts
    users = {u.user_name for u in accounts.list_users(ACCOUNT_ID)}
    if target.user not in users:
        return ("absent",)
    keys = sorted(k.access_key_id for k in accounts.list_access_keys(ACCOUNT_ID, target.user))
    return (tuple(accounts.list_user_policies(ACCOUNT_ID, target.user)), tuple(keys))


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("action", list(IAM_OPERATIONS))
def test_iam_operation(world: World, action: str, caller: str) -> None:
    params_of, kind = IAM_OPERATIONS[action]
    who = world.callers[caller]
    if caller in PERMITTED:
        made = {"existing": existing_user, "bare": bare_user}.get(kind)
        target = made(world) if made else IamTarget(f"fresh-{uuid.uuid4().hex[:10]}", "")
        answer = query_call(world.http, BASE, action, params_of(target), who.keys)
        assert answer.status_code == 200, answer.text
        return
    target = existing_user(world)
    before = iam_state(world, target)
    ghost = IamTarget(f"ghost-{uuid.uuid4().hex[:10]}", "AKIA" + secrets.token_hex(8).upper())
    answer = query_call(world.http, BASE, action, params_of(target), who.keys)
    ghost_answer = query_call(world.http, BASE, action, params_of(ghost), who.keys)
    assert answer.status_code < 500 and ghost_answer.status_code < 500, (answer.text, ghost_answer.text)
    if caller == ANONYMOUS:
        assert (answer.status_code, aws_error_type(answer)) == (403, "MissingAuthenticationToken"), answer.text
    elif caller == DENIED:
        assert answer.status_code == 403, answer.text
        assert aws_error_type(answer) == "AccessDenied", answer.text
    # Another account's IAM calls act on its own account: this account's users are simply not there.
    assert iam_state(world, target) == before, "a refused caller changed the user"
    names = (target.user, ghost.user, target.key_id, ghost.key_id)
    assert (answer.status_code, aws_error_type(answer)) == (ghost_answer.status_code, aws_error_type(ghost_answer))
    assert _without_request_id(fingerprint(answer, names)) == _without_request_id(fingerprint(ghost_answer, names))


_PER_RESPONSE = re.compile(r"<(RequestId|UserId|CreateDate)>[^<]*</\1>")


def _without_request_id(shown: tuple[Any, ...]) -> tuple[Any, ...]:
    """An IAM answer without what differs between any two answers (request ids, new users' ids and dates)."""
    return (*shown[:3], _PER_RESPONSE.sub("", str(shown[3])))


@pytest.mark.parametrize("caller", CALLERS)
def test_iam_list_users(world: World, caller: str) -> None:
    existing = existing_user(world)
    answer = query_call(world.http, BASE, "ListUsers", {}, world.callers[caller].keys)
    assert answer.status_code < 500, answer.text
    if caller in PERMITTED:
        assert answer.status_code == 200 and f"<UserName>{existing.user}</UserName>" in answer.text, answer.text
    elif caller == OTHER:
        assert answer.status_code == 200, answer.text
        assert existing.user not in answer.text, "another account lists this account's users"
    elif caller == DENIED:
        assert (answer.status_code, aws_error_type(answer)) == (403, "AccessDenied"), answer.text
    else:
        assert (answer.status_code, aws_error_type(answer)) == (403, "MissingAuthenticationToken"), answer.text


@pytest.mark.parametrize("caller", CALLERS)
def test_sts_get_caller_identity(world: World, caller: str) -> None:
    """Needs no permission (AWS: an explicit Deny cannot stop it); anonymous callers are not answered."""
    who = world.callers[caller]
    answer = query_call(world.http, BASE, "GetCallerIdentity", {}, who.keys, service="sts")
    if caller == ANONYMOUS:
        assert (answer.status_code, aws_error_type(answer)) == (403, "MissingAuthenticationToken"), answer.text
        return
    assert answer.status_code == 200, answer.text
    expected = {
        OTHER: f"arn:aws:iam::{OTHER_ACCOUNT}:root",
        DENIED: f"arn:aws:iam::{ACCOUNT_ID}:user/matrix-denied",
        ALLOWED: f"arn:aws:iam::{ACCOUNT_ID}:user/matrix-allowed",
        ROOT: f"arn:aws:iam::{ACCOUNT_ID}:root",
    }[caller]
    assert f"<Arn>{expected}</Arn>" in answer.text, answer.text
    assert f"<Account>{who.account}</Account>" in answer.text


# ================================================================================================ cross-account


def pull(world: World, headers: dict[str, str], target: Target) -> tuple[int, int, int]:
    """Statuses of a pull: manifest GET, blob HEAD, blob GET."""
    return (
        world.http.get(f"/v2/{target.repo}/manifests/v1", headers=headers).status_code,
        world.http.head(f"/v2/{target.repo}/blobs/{target.blob}", headers=headers).status_code,
        world.http.get(f"/v2/{target.repo}/blobs/{target.blob}", headers=headers).status_code,
    )


def set_policy(world: World, repo: str, text: str | None) -> None:
    root = world.callers[ROOT]
    if text is None:
        answer = ecr(world, root, "DeleteRepositoryPolicy", {"repositoryName": repo})
    else:
        answer = ecr(world, root, "SetRepositoryPolicy", {"repositoryName": repo, "policyText": text})
    assert answer.status_code == 200, answer.text


def test_cross_account_pull_exactly_when_a_repository_policy_grants_it(world: World) -> None:
    accounts = world.services.accounts
    other_root = world.callers[OTHER]
    other_puller = add_user(accounts, OTHER_ACCOUNT, "puller", policy(statement("Allow", "ecr:*")))
    other_bare = add_user(accounts, OTHER_ACCOUNT, "no-policy", None)
    granted, neighbour = existing_target(world, "shared"), existing_target(world, "neighbour")
    via_host = {"Host": REGISTRY_HOST}
    everyone = {
        "root": other_root.registry_headers,
        "puller": {**other_puller.basic, **via_host},
        "bare": {**other_bare.basic, **via_host},
    }

    for headers in everyone.values():
        assert pull(world, headers, granted) == (403, 403, 403)

    set_policy(world, granted.repo, repository_grant([f"arn:aws:iam::{OTHER_ACCOUNT}:root"], PULL_ACTIONS))
    assert pull(world, everyone["root"], granted) == (200, 200, 200)
    assert pull(world, everyone["puller"], granted) == (200, 200, 200)
    # The other account's own IAM must let its user go too: a user without an identity policy stays out.
    assert pull(world, everyone["bare"], granted) == (403, 403, 403)
    # The grant is for pulls of that repository only.
    assert pull(world, everyone["root"], neighbour) == (403, 403, 403)
    push = world.http.post(f"/v2/{granted.repo}/blobs/uploads/", headers=everyone["root"])
    assert push.status_code == 403, push.text
    delete = world.http.delete(f"/v2/{granted.repo}/manifests/{granted.manifest_digest}", headers=everyone["root"])
    assert delete.status_code == 403, delete.text
    # The same grant through the ECR API.
    got = ecr(world, other_root, "BatchGetImage", {"repositoryName": granted.repo, "imageIds": [{"imageTag": "v1"}]})
    assert got.status_code == 200 and got.json()["images"][0]["imageId"]["imageTag"] == "v1", got.text
    listed = ecr(world, other_root, "ListImages", {"repositoryName": granted.repo})
    assert aws_error_type(listed) == "AccessDeniedException", listed.text

    set_policy(world, granted.repo, None)
    for headers in everyone.values():
        assert pull(world, headers, granted) == (403, 403, 403)


def test_repository_policy_naming_one_user_lets_only_that_user_in(world: World) -> None:
    accounts = world.services.accounts
    chosen = add_user(accounts, OTHER_ACCOUNT, "chosen", policy(statement("Allow", "ecr:*")))
    sibling = add_user(accounts, OTHER_ACCOUNT, "sibling", policy(statement("Allow", "ecr:*")))
    target = existing_target(world, "one-user")
    set_policy(world, target.repo, repository_grant([f"arn:aws:iam::{OTHER_ACCOUNT}:user/chosen"], PULL_ACTIONS))
    assert pull(world, {**chosen.basic, "Host": REGISTRY_HOST}, target) == (200, 200, 200)
    assert pull(world, {**sibling.basic, "Host": REGISTRY_HOST}, target) == (403, 403, 403)
    assert pull(world, world.callers[OTHER].registry_headers, target) == (403, 403, 403)


def test_cross_account_pull_with_a_login_token_for_the_other_registry(world: World) -> None:
    """`get-authorization-token --registry-ids <owner>` as the other account: the token names the owner's
    registry, so a plain host reaches the owner's repositories, and the repository policy decides."""
    other = world.callers[OTHER]
    answer = json_call(world.http, BASE, "GetAuthorizationToken", {"registryIds": [ACCOUNT_ID]}, other.keys)
    assert answer.status_code == 200, answer.text
    token = answer.json()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS"
    headers = basic_auth("AWS", password)
    target = existing_target(world, "token-pull")
    assert pull(world, headers, target) == (403, 403, 403)
    set_policy(world, target.repo, repository_grant([OTHER_ACCOUNT], PULL_ACTIONS))
    assert pull(world, headers, target) == (200, 200, 200)


# ================================================================================================ scoped policies


def test_describe_repositories_by_name_honours_a_repository_scoped_policy(world: World) -> None:
    """ECR authorises DescribeRepositories against the repositories it names (resource type `repository`):
    a user allowed `ecr:*` on `repository/matrix/scoped-*` may describe `matrix/scoped-app` by name."""
    scoped = add_user(
        world.services.accounts,
        ACCOUNT_ID,
        "matrix-scoped",
        policy(statement("Allow", "ecr:*", f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/matrix/scoped-*")),
    )
    who = Caller("scoped", scoped, ACCOUNT_ID)
    repo = existing_target(world, "scoped").repo
    images = ecr(world, who, "DescribeImages", {"repositoryName": repo})
    assert images.status_code == 200, images.text
    described = ecr(world, who, "DescribeRepositories", {"repositoryNames": [repo]})
    assert described.status_code == 200, described.text
    assert [r["repositoryName"] for r in described.json()["repositories"]] == [repo]
    outside = existing_target(world, "outside").repo
    refused = ecr(world, who, "DescribeRepositories", {"repositoryNames": [outside]})
    assert aws_error_type(refused) == "AccessDeniedException", refused.text


# ================================================================================================ audit


def test_decisions_are_audited_with_principal_action_resource_decision_and_source(world: World) -> None:
    target = existing_target(world, "audited")
    denied, allowed = world.callers[DENIED], world.callers[ALLOWED]
    assert send(world, denied, ("GET", f"/v2/{target.repo}/manifests/v1", None, None)).status_code == 403
    assert send(world, allowed, ("GET", f"/v2/{target.repo}/manifests/v1", None, None)).status_code == 200
    assert send(world, world.callers[ANONYMOUS], ("GET", f"/v2/{target.repo}/tags/list", None, None)).status_code == 401
    arn = f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/{target.repo}"

    def one(event: str, principal: str | None) -> dict[str, Any]:
        found = audit_matching(world.data_dir, event, principal, f"repository/{target.repo}")
        assert len(found) == 1, found
        return found[0]

    refused = one("BatchGetImage", f"arn:aws:iam::{ACCOUNT_ID}:user/matrix-denied")
    assert refused["decision"] == "EXPLICIT_DENY"
    assert refused["resources"] == [{"ARN": arn}]
    assert refused["sourceIPAddress"] == "testclient"  # Starlette's TestClient peer address
    assert refused["userIdentity"]["type"] == "IAMUser"
    assert denied.keys is not None and refused["userIdentity"]["accessKeyId"] == denied.keys.access_key_id
    assert refused["eventSource"] == "ecr.amazonaws.com"
    assert one("BatchGetImage", f"arn:aws:iam::{ACCOUNT_ID}:user/matrix-allowed")["decision"] == "ALLOW"
    anonymous = one("ListImages", None)
    assert anonymous["decision"] == "Unauthenticated" and anonymous["userIdentity"]["type"] == "Anonymous"
