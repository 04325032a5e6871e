"""HTTPS end to end: a real `dockyard serve --tls self-signed` (and one with `--tls-cert/--tls-key`) reached by
skopeo, boto3, httpx and containerd that verify its certificate against the CA, never with verification off.

One self-signed server per module; every test works with repositories of its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.clients import AwsCli, boto_client
from tests.support.iam import Keys, policy, statement
from tests.support.images import single_image_layout
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ServerProcess
from tests.support.tools import (
    Skopeo,
    describe,
    fresh_seed,
    layout_blobs,
    layout_manifest_digest,
    require_tool,
    run,
)

ROOT = Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("tls-server") / "data"
    process = ServerProcess(
        data_dir, extra_args=["--tls", "self-signed", "--tls-san", "registry.test"], cert_dir=data_dir / "tls"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def push_and_pull(server: ServerProcess, skopeo: Skopeo, tmp_path: Path, repository: str) -> str:
    """skopeo copies a fresh image in and back out, verifying the server's certificate both ways."""
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, size=16 * 1024, seed=fresh_seed())
    skopeo.push(server, f"oci:{source}:v1", f"{repository}:v1")  # --dest-cert-dir, no --dest-tls-verify
    pulled = tmp_path / "pulled"
    skopeo.pull(server, f"{repository}:v1", f"oci:{pulled}:v1")
    assert layout_manifest_digest(pulled, "v1") == digest
    assert layout_blobs(pulled) == layout_blobs(source)
    return digest


def test_skopeo_copies_in_and_out_verifying_the_ca(tls_server: ServerProcess, skopeo: Skopeo, tmp_path: Path) -> None:
    push_and_pull(tls_server, skopeo, tmp_path, unique("team/tls"))
    served = tls_server.log()
    assert f"Listening at: https://127.0.0.1:{tls_server.port}" in served
    assert f"Dockyard listening on https://localhost:{tls_server.port}" in served
    assert f"/etc/containers/certs.d/localhost:{tls_server.port}/ca.crt" in served  # how to trust it
    assert "--tls-verify=false" not in served


def test_clients_without_the_ca_are_refused(tls_server: ServerProcess, skopeo: Skopeo) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.url}/healthz", timeout=10)  # the system's CAs only
    refused = skopeo("inspect", "--raw", "--creds", tls_server.creds, f"docker://{tls_server.host}/team/none:v1")
    assert refused.returncode != 0
    assert "certificate signed by unknown authority" in refused.stderr, describe(refused)
    ecr = boto3.client(
        "ecr",
        endpoint_url=tls_server.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        ecr.describe_repositories()
    with pytest.raises(httpx.TransportError):  # plain HTTP is not served beside HTTPS
        httpx.get(f"http://127.0.0.1:{tls_server.port}/healthz", timeout=10)


def test_boto3_ecr_verifies_the_ca(tls_server: ServerProcess, skopeo: Skopeo, tmp_path: Path) -> None:
    ecr = boto_client(tls_server, "ecr", ROOT)  # verify=<ca.crt>
    repository = unique("team/boto")
    created = ecr.create_repository(repositoryName=repository)["repository"]
    assert created["repositoryUri"].endswith(f"/{repository}")
    digest = push_and_pull(tls_server, skopeo, tmp_path, repository)
    images = ecr.describe_images(repositoryName=repository)["imageDetails"]
    assert [(image["imageDigest"], image["imageTags"]) for image in images] == [(digest, ["v1"])]
    token = ecr.get_authorization_token()["authorizationData"][0]
    assert token["proxyEndpoint"] == f"https://127.0.0.1:{tls_server.port}"  # the scheme the request came in on


def test_aws_cli_trusts_the_ca_from_aws_ca_bundle(tls_server: ServerProcess, tmp_path: Path) -> None:
    aws = AwsCli(tls_server, tmp_path / "aws", ROOT)
    repository = unique("team/cli")
    refused = aws("ecr", "create-repository", "--repository-name", repository)
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, describe(refused)
    aws.env["AWS_CA_BUNDLE"] = str(tls_server.ca)
    created = aws.json("ecr", "create-repository", "--repository-name", repository)
    assert created["repository"]["repositoryName"] == repository


def test_tls_1_2_and_1_3_clients_are_served_and_the_names_are_certified(tls_server: ServerProcess) -> None:
    """TLS 1.2 stays open (Granian's default minimum is 1.3): older Java, .NET and proxy stacks stop at 1.2."""
    assert tls_server.ca is not None
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=tls_server.ca)
        context.minimum_version = context.maximum_version = version
        with httpx.Client(verify=context, timeout=10) as client, client.stream("GET", f"{tls_server.url}/v2/") as got:
            negotiated = got.extensions["network_stream"].get_extra_info("ssl_object").version()
            assert got.status_code == 401
            # The challenge names the https URL, so a client following it stays on TLS.
            challenge = f'Basic realm="https://localhost:{tls_server.port}",service="dockyard"'
            assert got.headers["www-authenticate"] == challenge
        assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    with tls_server.client() as client:  # the CA's certificate verifies for 127.0.0.1 as well as localhost
        assert client.get("/v2/").status_code == 200
    pem = ssl.get_server_certificate(("127.0.0.1", tls_server.port))
    names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(names.value.get_values_for_type(x509.DNSName)) == {"localhost", "registry.test"}
    assert set(names.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_requests_over_tls_carry_aws_secure_transport_true(tls_server: ServerProcess) -> None:
    """A user allowed ECR only when `aws:SecureTransport` is true can call it over TLS."""
    iam = boto_client(tls_server, "iam", ROOT)
    user = unique("tls-user")
    iam.create_user(UserName=user)
    secure_only = statement("Allow", "ecr:*", Condition={"Bool": {"aws:SecureTransport": "true"}})
    iam.put_user_policy(UserName=user, PolicyName="secure-only", PolicyDocument=policy(secure_only))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    ecr = boto_client(tls_server, "ecr", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    assert "repositories" in ecr.describe_repositories()


# ---------------------------------------------------------------------------------------- --tls-cert/--tls-key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """An RSA CA (DIR/trust/ca.crt) and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("dockyard test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "trust").mkdir(parents=True)
    ca_path, cert_path, key_path = directory / "trust" / "ca.crt", directory / "server.crt", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def test_serves_a_given_certificate_with_a_tls_1_3_minimum(skopeo: Skopeo, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "pki")
    flags = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-min-version", "1.3"]
    server = ServerProcess(tmp_path / "data", extra_args=flags, cert_dir=ca.parent).start()
    try:
        push_and_pull(server, skopeo, tmp_path, "team/given")
        with server.client() as client:
            assert client.get("/v2/team/given/tags/list").json() == {"name": "team/given", "tags": ["v1"]}
        old = ssl.create_default_context(cafile=ca)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):  # refused below the minimum asked for
            httpx.get(f"{server.url}/healthz", verify=old, timeout=10)
        assert not (server.data_dir / "tls").exists()  # nothing self-signed was made
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------- containerd


class Containerd:
    """A throwaway containerd daemon (own root, state and socket), driven with `ctr`."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_tool("containerd")
        self.ctr = require_tool("ctr")
        self.directory = directory
        self.socket = directory / "containerd.sock"
        config = directory / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{directory / "root"}"\n'
            f'state = "{directory / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
        )
        self.log = (directory / "containerd.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"containerd exited early:\n{(self.directory / 'containerd.log').read_text()}")
            if self.socket.exists() and self("version").returncode == 0:
                return
            time.sleep(0.1)  # polling for readiness, not dodging a race
        pytest.fail(f"containerd did not become ready:\n{(self.directory / 'containerd.log').read_text()}")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([self.ctr, "--address", str(self.socket), *args])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def hosts_dir(directory: Path, server: ServerProcess, ca: Path | None) -> Path:
    """containerd's per-registry configuration: DIR/<host:port>/hosts.toml, trusting `ca` when given."""
    registry = directory / server.host
    registry.mkdir(parents=True)
    trust = f'  ca = "{ca}"\n' if ca else ""
    registry.joinpath("hosts.toml").write_text(
        f'server = "{server.url}"\n[host."{server.url}"]\n  capabilities = ["pull", "resolve"]\n{trust}'
    )
    return directory


def test_containerd_pulls_verifying_the_ca(tls_server: ServerProcess, skopeo: Skopeo, tmp_path: Path) -> None:
    repository = unique("team/containerd")
    source = tmp_path / "source"
    digest = single_image_layout(source, tag="v1", layers=2, size=16 * 1024, seed=fresh_seed())
    skopeo.push(tls_server, f"oci:{source}:v1", f"{repository}:v1")
    reference = f"{tls_server.host}/{repository}:v1"
    # A unix socket path is limited to 108 bytes: the daemon's directory is short, not under tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="dy-ctd-", dir="/tmp"))
    daemon = Containerd(directory)
    try:
        daemon.wait_ready()
        pull: list[str] = ["images", "pull", "--snapshotter", "native", "--user", tls_server.creds]
        untrusted_hosts = hosts_dir(tmp_path / "untrusted", tls_server, None)
        trusted_hosts = hosts_dir(tmp_path / "trusted", tls_server, tls_server.ca)
        untrusted = daemon(*pull, "--hosts-dir", str(untrusted_hosts), reference)
        assert untrusted.returncode != 0
        assert "certificate signed by unknown authority" in untrusted.stderr, describe(untrusted)
        trusted = daemon(*pull, "--hosts-dir", str(trusted_hosts), reference)
        assert trusted.returncode == 0, describe(trusted)
        listed = daemon("images", "list", "--quiet")
        assert reference in listed.stdout.split(), describe(listed)
        checked = daemon("images", "check")
        assert any(reference in line and "complete" in line for line in checked.stdout.splitlines()), describe(checked)
        info = daemon("images", "list")
        assert digest in info.stdout, describe(info)
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
