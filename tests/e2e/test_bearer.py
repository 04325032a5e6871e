"""Docker's token flow (`dockyard serve --auth-challenge bearer`): the challenge, the token endpoint in its GET and
OAuth2 POST forms, scopes intersected with IAM, skopeo through it, and tokens that must not work."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.domain.tokens import TokenSigner, derive_key
from tests.support.clients import boto_client, ecr_password
from tests.support.iam import PULL_ACTIONS, Keys, policy, statement
from tests.support.images import sha256, single_image_layout
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import Skopeo, describe, fresh_seed, layout_manifest_digest

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
ROOT_AUTH = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture(scope="module")
def bearer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("bearer-server") / "data"
    process = ServerProcess(data, extra_args=["--auth-challenge", "bearer"]).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(bearer_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bearer_server.url, timeout=30) as client:
        yield client


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo.create(tmp_path / "skopeo")


def unique(prefix: str) -> str:
    return f"bearer/{prefix}-{uuid.uuid4().hex[:8]}"


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge (fails on any other scheme)."""
    header = response.headers.get("www-authenticate", "")
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", (response.status_code, header)
    return dict(_PARAM_RE.findall(params))


def token_for(http: httpx.Client, auth: tuple[str, str] | None, *scopes: str) -> str:
    """A token from the GET form of the endpoint (as docker and skopeo ask)."""
    params = [("service", "dockyard"), *(("scope", s) for s in scopes)]
    answer = http.get("/token", params=params, auth=auth)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed_repository(http: httpx.Client, name: str) -> tuple[str, str]:
    """Push a one-layer image (tag v1) as root through the token flow; returns (manifest digest, layer digest)."""
    token = token_for(http, ROOT_AUTH, f"repository:{name}:pull,push")
    layer, config = f"layer {uuid.uuid4()}".encode(), b'{"architecture":"amd64","os":"linux"}'
    digests = []
    for blob in (config, layer):
        digest = sha256(blob)
        answer = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=blob, headers=bearer(token))
        assert answer.status_code == 201, answer.text
        digests.append(digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0], "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digests[1], "size": len(layer)}
        ],
    }
    put = http.put(
        f"/v2/{name}/manifests/v1",
        content=json.dumps(manifest).encode(),
        headers={**bearer(token), "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text
    return put.headers["docker-content-digest"], digests[1]


def add_user(server: ServerProcess, document: str) -> Keys:
    iam = boto_client(server, "iam", ROOT)
    name = f"bearer-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


# ------------------------------------------------------------------------------------------------ challenge


def test_challenge_names_realm_service_and_the_scope_the_request_needs(
    bearer_server: ServerProcess, http: httpx.Client
) -> None:
    name = unique("challenged")
    base = http.get("/v2/")
    assert base.status_code == 401
    params = challenge(base)
    assert params["realm"] == f"http://localhost:{bearer_server.port}/token"
    assert params["service"] == "dockyard"
    assert "scope" not in params

    expectations = [
        ("GET", f"/v2/{name}/manifests/v1", f"repository:{name}:pull"),
        ("HEAD", f"/v2/{name}/blobs/sha256:{'0' * 64}", f"repository:{name}:pull"),
        ("GET", f"/v2/{name}/tags/list", f"repository:{name}:pull"),
        ("POST", f"/v2/{name}/blobs/uploads/", f"repository:{name}:pull,push"),
        ("PUT", f"/v2/{name}/manifests/v1", f"repository:{name}:pull,push"),
        ("GET", "/v2/_catalog", "registry:catalog:*"),
    ]
    for method, path, scope in expectations:
        answer = http.request(method, path)
        assert answer.status_code == 401, (method, path, answer.status_code)
        assert challenge(answer) == {"realm": params["realm"], "service": "dockyard", "scope": scope}, path
    # The realm is reachable as given: a client follows it verbatim.
    realm = httpx.get(params["realm"], params={"service": "dockyard"}, auth=(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    assert realm.status_code == 200, realm.text


# ------------------------------------------------------------------------------------------------ token endpoint


def test_token_endpoint_get_form(http: httpx.Client) -> None:
    name = unique("get-form")
    manifest_digest, _ = seed_repository(http, name)
    before = datetime.now(UTC)
    answer = http.get(
        "/token",
        params={"service": "dockyard", "scope": f"repository:{name}:pull"},
        auth=(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token"] == body["access_token"] and body["token"]
    assert 0 < body["expires_in"] <= 300
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before - timedelta(seconds=5) <= issued <= datetime.now(UTC) + timedelta(seconds=5)
    pulled = http.get(f"/v2/{name}/manifests/v1", headers=bearer(body["token"]))
    assert pulled.status_code == 200 and pulled.headers["docker-content-digest"] == manifest_digest

    refused = http.get("/token", params={"service": "dockyard"}, auth=(ACCESS_KEY_ID, "not-the-secret"))
    assert refused.status_code == 401, refused.text


def test_token_endpoint_get_form_with_an_ecr_login_password(bearer_server: ServerProcess, http: httpx.Client) -> None:
    name = unique("login-get")
    seed_repository(http, name)
    password = ecr_password(boto_client(bearer_server, "ecr", ROOT))
    token = token_for(http, ("AWS", password), f"repository:{name}:pull")
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(token)).json()["tags"] == ["v1"]


def oauth2_post(http: httpx.Client, username: str, password: str, scope: str) -> httpx.Response:
    """The OAuth2 password grant containerd (and BuildKit, nerdctl) sends to the realm when it has credentials."""
    form = {
        "grant_type": "password",
        "username": username,
        "password": password,
        "service": "dockyard",
        "scope": scope,
        "client_id": "containerd-client",
        "access_type": "online",
    }
    return http.post("/token", data=form)


def test_token_endpoint_oauth2_post_form_with_an_access_key(http: httpx.Client) -> None:
    name = unique("post-form")
    seed_repository(http, name)
    answer = oauth2_post(http, ACCESS_KEY_ID, SECRET_ACCESS_KEY, f"repository:{name}:pull")
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert answer.json()["expires_in"] > 0
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(token)).status_code == 200
    wrong = oauth2_post(http, ACCESS_KEY_ID, "wrong-secret", f"repository:{name}:pull")
    assert wrong.status_code == 401, wrong.text


def test_token_endpoint_oauth2_post_form_with_an_ecr_login_password(
    bearer_server: ServerProcess, http: httpx.Client
) -> None:
    """`docker login -u AWS` credentials work on both forms of the endpoint, as they do on the GET form."""
    name = unique("post-login")
    seed_repository(http, name)
    password = ecr_password(boto_client(bearer_server, "ecr", ROOT))
    answer = oauth2_post(http, "AWS", password, f"repository:{name}:pull")
    assert answer.status_code == 200, answer.text
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(answer.json()["access_token"])).status_code == 200


# ------------------------------------------------------------------------------------------------ scopes


def test_a_pull_only_user_asking_pull_and_push_gets_pull_only(bearer_server: ServerProcess, http: httpx.Client) -> None:
    name, elsewhere = unique("intersect"), unique("elsewhere")
    _, layer = seed_repository(http, name)
    seed_repository(http, elsewhere)
    puller = add_user(bearer_server, policy(statement("Allow", [*PULL_ACTIONS, "ecr:ListImages"])))
    token = token_for(http, (puller.access_key_id, puller.secret), f"repository:{name}:pull,push")
    headers = bearer(token)

    assert http.get(f"/v2/{name}/manifests/v1", headers=headers).status_code == 200
    assert http.get(f"/v2/{name}/blobs/{layer}", headers=headers).status_code == 200
    push = http.post(f"/v2/{name}/blobs/uploads/", headers=headers)
    assert push.status_code == 401, push.text
    assert challenge(push) == {
        "realm": f"http://localhost:{bearer_server.port}/token",
        "service": "dockyard",
        "scope": f"repository:{name}:pull,push",
        "error": "insufficient_scope",
    }
    assert push.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # The token is for the repository it names only.
    other = http.get(f"/v2/{elsewhere}/manifests/v1", headers=headers)
    assert other.status_code == 401 and challenge(other)["error"] == "insufficient_scope"
    # Asking again cannot widen it: the endpoint grants what IAM allows, whatever is asked.
    again = token_for(http, (puller.access_key_id, puller.secret), f"repository:{name}:push")
    assert http.post(f"/v2/{name}/blobs/uploads/", headers=bearer(again)).status_code == 401


def test_an_anonymous_mount_needs_the_token_to_grant_pull_on_the_holder(http: httpx.Client) -> None:
    """`mount` without `from` reads only where the token reaches: IAM allowing root everywhere is not enough."""
    source, target = unique("holder"), unique("mount-target")
    _, layer = seed_repository(http, source)
    narrow = token_for(http, ROOT_AUTH, f"repository:{target}:pull,push")
    fallback = http.post(f"/v2/{target}/blobs/uploads/", params={"mount": layer}, headers=bearer(narrow))
    assert fallback.status_code == 202, fallback.text
    assert http.delete(fallback.headers["location"], headers=bearer(narrow)).status_code == 204
    wide = token_for(http, ROOT_AUTH, f"repository:{target}:pull,push", f"repository:{source}:pull")
    mounted = http.post(f"/v2/{target}/blobs/uploads/", params={"mount": layer}, headers=bearer(wide))
    assert mounted.status_code == 201, mounted.text
    assert http.get(f"/v2/{target}/blobs/{layer}", headers=bearer(narrow)).status_code == 200


def test_anonymous_tokens_grant_nothing_on_private_repositories(http: httpx.Client) -> None:
    name = unique("private")
    seed_repository(http, name)
    token = token_for(http, None, f"repository:{name}:pull,push")
    for method, path in (("GET", f"/v2/{name}/manifests/v1"), ("POST", f"/v2/{name}/blobs/uploads/")):
        answer = http.request(method, path, headers=bearer(token))
        assert answer.status_code == 401, (method, answer.text)
        assert challenge(answer).get("error") == "insufficient_scope"
    ghost = token_for(http, None, f"repository:{unique('ghost')}:pull")
    assert http.get(f"/v2/{name}/manifests/v1", headers=bearer(ghost)).status_code == 401


# ------------------------------------------------------------------------------------------------ skopeo


def test_skopeo_pushes_and_pulls_through_the_token_flow(
    bearer_server: ServerProcess, http: httpx.Client, skopeo: Skopeo, tmp_path: Path
) -> None:
    name = unique("skopeo")
    source, pulled = tmp_path / "source", tmp_path / "pulled"
    digest = single_image_layout(source, tag="v1", layers=2, size=16 * 1024, seed=fresh_seed())
    skopeo.push(bearer_server, f"oci:{source}:v1", f"{name}:v1")
    skopeo.pull(bearer_server, f"{name}:v1", f"oci:{pulled}:v1")
    assert layout_manifest_digest(pulled, "v1") == digest

    # With `docker login -u AWS` credentials too.
    password = ecr_password(boto_client(bearer_server, "ecr", ROOT))
    second = tmp_path / "second"
    single_image_layout(second, tag="v2", layers=1, size=4 * 1024, seed=fresh_seed())
    skopeo.ok(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"AWS:{password}",
        f"oci:{second}:v2", f"docker://{bearer_server.host}/{name}:v2",
    )  # fmt: skip
    tags = http.get(f"/v2/{name}/tags/list", headers=bearer(token_for(http, ROOT_AUTH, f"repository:{name}:pull")))
    assert sorted(tags.json()["tags"]) == ["v1", "v2"]

    # A pull-only user is turned away by the token flow.
    puller = add_user(bearer_server, policy(statement("Allow", [*PULL_ACTIONS, "ecr:GetAuthorizationToken"])))
    refused = skopeo(
        "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", puller.creds,
        f"oci:{second}:v2", f"docker://{bearer_server.host}/{name}:v3",
    )  # fmt: skip
    assert refused.returncode != 0, describe(refused)
    assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr, describe(refused)
    pulled_by_user = tmp_path / "by-user"
    skopeo.ok(
        "copy", "--quiet", "--src-tls-verify=false", "--src-creds", puller.creds,
        f"docker://{bearer_server.host}/{name}:v1", f"oci:{pulled_by_user}:v1",
    )  # fmt: skip
    assert layout_manifest_digest(pulled_by_user, "v1") == digest


def test_anonymous_skopeo_pulls_a_public_repository_through_the_token_flow(
    bearer_server: ServerProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    public = boto_client(bearer_server, "ecr-public", ROOT)
    alias = public.describe_registries()["registries"][0]["aliases"][0]["name"]
    name = f"open-{uuid.uuid4().hex[:8]}"
    public.create_repository(repositoryName=name)
    token = public.get_authorization_token()["authorizationData"]["authorizationToken"]
    password = base64.b64decode(token).decode().partition(":")[2]
    source, pulled = tmp_path / "source", tmp_path / "pulled"
    digest = single_image_layout(source, tag="v1", layers=1, size=4 * 1024, seed=fresh_seed())
    skopeo.ok(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"AWS:{password}",
        f"oci:{source}:v1", f"docker://{bearer_server.host}/public/{alias}/{name}:v1",
    )  # fmt: skip
    skopeo.ok(
        "copy", "--quiet", "--src-tls-verify=false", "--src-no-creds",
        f"docker://{bearer_server.host}/public/{alias}/{name}:v1", f"oci:{pulled}:v1",
    )  # fmt: skip
    assert layout_manifest_digest(pulled, "v1") == digest
    refused = skopeo(
        "copy", "--quiet", "--retry-times", "0", "--dest-tls-verify=false", "--dest-no-creds",
        f"oci:{source}:v1", f"docker://{bearer_server.host}/public/{alias}/{name}:anon",
    )  # fmt: skip
    assert refused.returncode != 0, describe(refused)


# ------------------------------------------------------------------------------------------------ bad tokens


def _payload(token: str) -> dict[str, Any]:
    part = token.partition(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _encode(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()


def test_expired_forged_and_foreign_tokens_are_refused(bearer_server: ServerProcess, http: httpx.Client) -> None:
    name = unique("guarded")
    seed_repository(http, name)
    good = token_for(http, ROOT_AUTH, f"repository:{name}:pull")
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(good)).status_code == 200

    # Signed with the server's own key (read from its data directory) but expired a minute ago.
    master = base64.b64decode((bearer_server.data_dir / "master.key").read_bytes().strip())
    signer = TokenSigner(derive_key(master, "registry-bearer-token"))
    claims = {key: value for key, value in _payload(good).items() if key != "exp"}
    expired = signer.issue(claims, datetime.now(UTC) - timedelta(minutes=1))
    still_valid = signer.issue(claims, datetime.now(UTC) + timedelta(minutes=1))
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(still_valid)).status_code == 200  # the key is right

    widened = {**_payload(good), "access": [{"type": "repository", "name": name, "actions": ["pull", "push"]}]}
    forged = f"{_encode(widened)}.{good.partition('.')[2]}"
    foreign = TokenSigner(secrets.token_bytes(32)).issue(claims, datetime.now(UTC) + timedelta(minutes=5))
    login_password = ecr_password(boto_client(bearer_server, "ecr", ROOT))  # another kind of token
    for label, token in (
        ("expired", expired),
        ("forged", forged),
        ("foreign key", foreign),
        ("login password", login_password),
        ("garbage", "not-a-token"),
        ("empty claims", f"{_encode({})}.{good.partition('.')[2]}"),
    ):
        for method, path in (("GET", f"/v2/{name}/tags/list"), ("POST", f"/v2/{name}/blobs/uploads/")):
            answer = http.request(method, path, headers=bearer(token))
            assert answer.status_code == 401, (label, method, answer.status_code, answer.text)
            assert challenge(answer)["realm"].endswith("/token"), label


def test_a_token_dies_with_its_access_key(bearer_server: ServerProcess, http: httpx.Client) -> None:
    name = unique("revoked")
    seed_repository(http, name)
    keys = add_user(bearer_server, policy(statement("Allow", "ecr:*")))
    token = token_for(http, (keys.access_key_id, keys.secret), f"repository:{name}:pull")
    assert http.get(f"/v2/{name}/tags/list", headers=bearer(token)).status_code == 200
    iam = boto_client(bearer_server, "iam", ROOT)
    user = boto_client(bearer_server, "sts", keys).get_caller_identity()["Arn"].rpartition("/")[2]
    iam.delete_access_key(UserName=user, AccessKeyId=keys.access_key_id)
    deadline = time.monotonic() + 15
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = http.get(f"/v2/{name}/tags/list", headers=bearer(token)).status_code
        time.sleep(0.25)  # the server re-checks keys after a few seconds of caching
    assert status == 401, "a bearer token outlived its access key"


# ------------------------------------------------------------------------------------------------ registries


def registry_host(server: ServerProcess, region: str) -> dict[str, str]:
    """The Host header naming this account's private registry in `region` (ECR's registry host scheme)."""
    return {"Host": f"{ACCOUNT_ID}.dkr.ecr.{region}.localhost:{server.port}"}


def test_a_token_acts_only_on_the_registry_it_was_issued_for(bearer_server: ServerProcess, http: httpx.Client) -> None:
    """A token from the endpoint is for the registry each scope resolved to when it was asked for: sent to
    another region's host, or asked for with a login password of another registry (ECR Public's included), it
    grants nothing there, the same whether or not the repository exists."""
    name, ghost = unique("bound"), unique("bound-ghost")
    seed_repository(http, name)  # in us-east-1, the server's default region
    in_us, in_eu = registry_host(bearer_server, "us-east-1"), registry_host(bearer_server, "eu-west-1")
    eu_password = ecr_password(boto_client(bearer_server, "ecr", ROOT, region="eu-west-1"))
    public = boto_client(bearer_server, "ecr-public", ROOT)
    public_password = ecr_password(public)
    alias = public.describe_registries()["registries"][0]["aliases"][0]["name"]
    scopes = [f"repository:{repo}:pull,push" for repo in (name, ghost)]

    def refused(token: str, headers: dict[str, str]) -> None:
        answers = []
        for repo in (name, ghost):
            for method, path in (("GET", f"/v2/{repo}/manifests/v1"), ("POST", f"/v2/{repo}/blobs/uploads/")):
                answer = http.request(method, path, headers={**bearer(token), **headers})
                assert answer.status_code == 401, (method, path, answer.text)
                assert challenge(answer)["error"] == "insufficient_scope"
                answers.append((answer.status_code, answer.json()["errors"][0]["code"]))
        assert answers[:2] == answers[2:], "the refusal reveals the repository exists"

    # An access key's token, asked for in us-east-1, works there and nowhere else.
    root_token = token_for(http, ROOT_AUTH, *scopes)
    assert http.get(f"/v2/{name}/tags/list", headers={**bearer(root_token), **in_us}).status_code == 200
    refused(root_token, in_eu)
    # An eu-west-1 login password: its token is for eu-west-1, wherever it is then sent.
    eu_token = token_for(http, ("AWS", eu_password), *scopes)
    refused(eu_token, in_us)
    hostless = http.get(f"/v2/{name}/manifests/v1", headers=bearer(eu_token))  # eu-west-1's, where it is not
    assert hostless.status_code == 404 and hostless.json()["errors"][0]["code"] == "NAME_UNKNOWN", hostless.text
    # Asked for at us-east-1's host, the eu-west-1 password is granted nothing.
    answer = http.get(
        "/token", params=[("service", "dockyard"), *(("scope", s) for s in scopes)], auth=("AWS", eu_password),
        headers=in_us,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    refused(answer.json()["token"], in_us)
    catalog = http.get(
        "/token",
        params={"service": "dockyard", "scope": "registry:catalog:*"},
        auth=("AWS", eu_password),
        headers=in_us,
    )
    listed = http.get("/v2/_catalog", headers={**bearer(catalog.json()["token"]), **in_us})
    assert listed.status_code == 401 and name not in listed.text, listed.text
    # ECR Public's password: no private repository, and a private password pushes no public one.
    refused(token_for(http, ("AWS", public_password), *scopes), {})
    public_name = f"public/{alias}/{unique('pub')}".replace("bearer/", "")
    us_password = ecr_password(boto_client(bearer_server, "ecr", ROOT))
    pusher = token_for(http, ("AWS", us_password), f"repository:{public_name}:push")
    assert http.post(f"/v2/{public_name}/blobs/uploads/", headers=bearer(pusher)).status_code == 401
    own = token_for(http, ("AWS", public_password), f"repository:{public_name}:push")
    assert http.post(f"/v2/{public_name}/blobs/uploads/", headers=bearer(own)).status_code == 202
