"""The `dockyard` command."""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from dockyard import ops_cli
from dockyard.admin_cli import admin_app
from dockyard.config import (
    ACCOUNT_FILE,
    REGIONS_ENV,
    ROOT_CREDENTIALS_FILE,
    ROOT_KEY_ID_ENV,
    ROOT_SECRET_ENV,
    SETTINGS_ENV,
    Settings,
    aws_regions,
    remembered_account,
)
from dockyard.domain.clock import utc_now
from dockyard.domain.names import check_account, check_region
from dockyard.exclusive import Held, Refused, claimed
from dockyard.lifecycle_cli import lifecycle_app
from dockyard.storage.private import UMASK, private_directory

if TYPE_CHECKING:  # the commands import the server's stack themselves: `dockyard --help` stays light
    from dockyard.domain.iam import RootCredentials
    from dockyard.storage.startup import Prepared
    from dockyard.tls import TlsFiles

app = typer.Typer(help="Dockyard: a self-hosted container registry that does what AWS ECR does.")
console = Console(stderr=True)


app.add_typer(admin_app, name="admin")
app.add_typer(lifecycle_app, name="lifecycle")
app.command("gc")(ops_cli.gc)
app.command("scan")(ops_cli.scan)
app.add_typer(ops_cli.scan_db_app, name="scan-db")


class AuthChallenge(StrEnum):
    basic = "basic"
    bearer = "bearer"


class TlsMode(StrEnum):
    off = "off"
    self_signed = "self-signed"


class TlsVersion(StrEnum):
    v1_2 = "1.2"
    v1_3 = "1.3"


@app.callback()
def _group() -> None:
    """Dockyard: a self-hosted container registry that does what AWS ECR does."""


def _account_option(value: str | None) -> str | None:
    if value is not None:
        try:
            check_account(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _region_option(value: str) -> str:
    try:
        return check_region(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _regions_option(value: str | None, default_region: str) -> tuple[str, ...]:
    """The served regions `--regions` names (AWS's by default); the default region must be among them."""
    if value is None:
        served = aws_regions()
    else:
        try:
            served = tuple(sorted({check_region(name.strip()) for name in value.split(",") if name.strip()}))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--regions") from None
        if not served:
            raise typer.BadParameter("name at least one region", param_hint="--regions")
    if default_region not in served:
        raise typer.BadParameter(f"{default_region!r} is not among --regions", param_hint="--default-region")
    return served


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    data_dir: Annotated[Path, typer.Option(help="Where metadata (SQLite) and blobs live.")] = Path("dockyard-data"),
    default_account: Annotated[
        str | None,
        typer.Option(
            help="12-digit account that owns requests naming no account (generated at first start).",
            callback=_account_option,
        ),
    ] = None,
    default_region: Annotated[str, typer.Option(callback=_region_option)] = "us-east-1",
    database: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the metadata store (default: SQLite in --data-dir).")
    ] = None,
    create_on_push: Annotated[
        bool, typer.Option(help="Create a repository when an image is first pushed to it.")
    ] = True,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds that requests in flight (uploads) get to finish after SIGTERM/SIGINT; meanwhile new "
            "ones are answered 503 with Retry-After and /readyz says not ready.",
        ),
    ] = 30.0,
    auth_challenge: Annotated[
        AuthChallenge,
        typer.Option(help="How /v2 asks for credentials: basic (as ECR) or bearer (Docker's token flow at /token)."),
    ] = AuthChallenge.basic,
    lifecycle_interval: Annotated[float, typer.Option(help="Seconds between lifecycle sweeps.")] = 86_400.0,
    gc_interval: Annotated[float, typer.Option(help="Seconds between garbage collections.")] = 3_600.0,
    gc_grace: Annotated[float, typer.Option(help="Seconds during which new content is never collected.")] = 3_600.0,
    job_lease: Annotated[
        float, typer.Option(min=1.0, help="Seconds a background job's lease lasts (renewed while it runs).")
    ] = 300.0,
    job_tick: Annotated[float, typer.Option(min=0.1, help="Seconds between looks for due background jobs.")] = 30.0,
    db_pool_size: Annotated[int, typer.Option(min=1, help="Metadata connections per worker process.")] = 10,
    blob_store: Annotated[
        str | None, typer.Option(help="s3://BUCKET\\[/PREFIX] to keep blobs in S3 (default: the data directory).")
    ] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint (any S3-compatible store).")] = None,
    s3_region: Annotated[str | None, typer.Option(help="S3 region.")] = None,
    s3_redirect: Annotated[bool, typer.Option(help="Redirect blob GETs to presigned S3 URLs.")] = False,
    kms_endpoint_url: Annotated[
        str | None,
        typer.Option(
            help="An external KMS (e.g. https://kms.us-east-1.amazonaws.com) for KMS repositories' keys, reached "
            "with the standard AWS credential chain (default: the built-in key service)."
        ),
    ] = None,
    encrypt_at_rest: Annotated[
        bool,
        typer.Option(
            help="Envelope-encrypt blobs and manifests of AES256 repositories (AES-256-GCM, data keys wrapped by "
            "the registry's storage key). KMS repositories are always encrypted under their own key."
        ),
    ] = True,
    access_log: Annotated[
        str,
        typer.Option(help="One JSON line per request to 'stderr' (default), a FILE (appended, mode 0600), or 'off'."),
    ] = "stderr",
    regions: Annotated[
        str | None,
        typer.Option(
            envvar=REGIONS_ENV,
            help="Comma-separated regions served (requests signed for, or host names naming, another region are "
            "refused). Default: the regions of AWS's aws partition, from the installed botocore.",
        ),
    ] = None,
    tls: Annotated[
        TlsMode,
        typer.Option(
            help="self-signed: serve HTTPS with a certificate from a CA made in DATA_DIR/tls (trust its ca.crt)."
        ),
    ] = TlsMode.off,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The PEM private key of --tls-cert.")] = None,
    tls_san: Annotated[
        list[str] | None,
        typer.Option(help="With --tls self-signed: one more DNS name or IP address to certify (repeatable)."),
    ] = None,
    tls_min_version: Annotated[TlsVersion, typer.Option(help="The oldest TLS version clients may use.")] = (
        TlsVersion.v1_2
    ),
) -> None:
    """Run the registry (`/v2`) on one port."""
    served = _regions_option(regions, default_region)
    data_dir = data_dir.resolve()
    private_directory(data_dir)
    _claim(ctx, data_dir, host, port)  # before anything is generated or printed
    account = default_account or remembered_account(data_dir) or _new_account_id()
    settings = Settings(
        data_dir,
        account,
        default_region,
        host,
        port,
        database,
        create_on_push,
        workers,
        auth_challenge.value,
        lifecycle_interval,
        gc_interval,
        gc_grace,
        job_lease=job_lease,
        job_tick=job_tick,
        db_pool_size=db_pool_size,
        blob_store=blob_store,
        s3_endpoint_url=s3_endpoint_url,
        s3_region=s3_region,
        s3_redirect=s3_redirect,
        encrypt_at_rest=encrypt_at_rest,
        kms_endpoint_url=kms_endpoint_url,
        access_log=_access_log_destination(access_log),
        shutdown_grace=shutdown_grace,
        regions=served,
    )
    settings, tls_files = _tls_settings(settings, tls, tls_cert, tls_key, tls_san or [], tls_min_version)
    from dockyard.domain.keys import WrongMasterKey
    from dockyard.storage.startup import prepare_metadata

    services = prepare_metadata(settings)  # the stores only: the workers build the whole graph
    try:
        credentials = _bootstrap_credentials(services, settings)
    except (WrongMasterKey, ValueError) as error:
        console.print(f"[red]Cannot start:[/] {error}")
        raise typer.Exit(1) from None
    _announce(settings, credentials)
    _announce_tls(tls_files, settings)
    os.environ[SETTINGS_ENV] = settings.to_environment()
    _run_server(settings)


def _tls_settings(
    settings: Settings, mode: TlsMode, cert: Path | None, key: Path | None, sans: list[str], minimum: TlsVersion
) -> tuple[Settings, TlsFiles | None]:
    """The settings with the certificate and key to serve HTTPS with (checked, or made), if TLS is asked for."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key", param_hint="--tls-cert/--tls-key")
    if cert is not None and mode is TlsMode.self_signed:
        raise typer.BadParameter("either --tls self-signed or --tls-cert/--tls-key, not both", param_hint="--tls")
    if sans and mode is not TlsMode.self_signed:
        raise typer.BadParameter("names are certified only with --tls self-signed", param_hint="--tls-san")
    if cert is None and mode is not TlsMode.self_signed:
        return settings, None
    from dockyard.tls import TlsError, check_files, self_signed, subject_names  # here: HTTP needs no cryptography.x509

    try:
        if cert is not None and key is not None:
            files = check_files(cert, key)
        elif mode is TlsMode.self_signed:
            names = subject_names(settings.host, sans)
            files = self_signed(settings.data_dir, names, utc_now())
        else:
            return settings, None
    except TlsError as error:
        console.print(f"[red]Cannot start:[/] {error}")
        raise typer.Exit(2) from None
    served = replace(settings, tls_cert=str(files.cert), tls_key=str(files.key), tls_min_version=minimum.value)
    return served, files


def _announce_tls(files: TlsFiles | None, settings: Settings) -> None:
    """How clients trust the CA Dockyard made (a certificate given by --tls-cert is trusted as its issuer is)."""
    if files is None or files.ca is None:
        return
    where = settings.public_url.split("://", 1)[1]
    lines = [
        f"TLS: certificates signed by the CA {files.ca} (copy it to clients and trust it):",
        f"  skopeo/podman: --cert-dir DIR holding ca.crt, or /etc/containers/certs.d/{where}/ca.crt",
        f"  docker:        /etc/docker/certs.d/{where}/ca.crt",
        f'  containerd:    /etc/containerd/certs.d/{where}/hosts.toml: [host."https://{where}"] ca = "/path/ca.crt"',
        "  aws CLI/boto3: --ca-bundle /path/ca.crt or AWS_CA_BUNDLE; boto3.client(..., verify='/path/ca.crt')",
    ]
    for line in lines:  # unwrapped and unstyled: each is copied as it stands
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _claim(ctx: typer.Context, data_dir: Path, host: str, port: int) -> Held:
    """The data directory and the address held for the server's life (handed over to the supervisor), or one
    line and exit 3 (cannot listen) or 4 (the data directory is another server's)."""
    try:
        held = ctx.with_resource(claimed(data_dir, host, port))  # released if the start fails before the exec
    except Refused as refused:
        typer.echo(f"dockyard: {refused}", err=True)
        raise typer.Exit(refused.exit_code) from None
    held.hand_over()
    return held


def _access_log_destination(value: str) -> str:
    """`off` and `stderr` as they are; a file path made absolute (the workers may run from elsewhere)."""
    if value in ("off", "stderr"):
        return value
    path = Path(value).expanduser().resolve()
    if not path.parent.is_dir():
        console.print(f"[red]Cannot start:[/] --access-log {value}: the directory {path.parent} does not exist")
        raise typer.Exit(2)
    return str(path)


def _run_server(settings: Settings) -> None:
    """Replace this process with the lean supervisor (same PID, so signals reach it as before)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "dockyard.launcher"])  # noqa: S606 (our own module)


def _new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def _given_root_credentials() -> tuple[str, str] | None:
    """The root access key pair the environment gives, if it gives both halves."""
    given_id, given_secret = os.environ.get(ROOT_KEY_ID_ENV), os.environ.get(ROOT_SECRET_ENV)
    return (given_id, given_secret) if given_id and given_secret else None


def _bootstrap_credentials(services: Prepared, settings: Settings) -> RootCredentials | None:
    from sqlalchemy.exc import IntegrityError

    from dockyard.domain.iam import bootstrap_root_credentials
    from dockyard.storage.startup import write_private_file

    given = _given_root_credentials()
    try:
        credentials = bootstrap_root_credentials(
            services.metadata, services.box, settings.default_account, utc_now(), given
        )
    except IntegrityError:  # another node, starting at the same moment, registered them first: check them
        credentials = bootstrap_root_credentials(
            services.metadata, services.box, settings.default_account, utc_now(), given
        )
    if not (settings.data_dir / ACCOUNT_FILE).exists():
        write_private_file(settings.data_dir / ACCOUNT_FILE, f"{settings.default_account}\n".encode())
    path = settings.data_dir / ROOT_CREDENTIALS_FILE
    # Only a generated secret is saved (it is shown once): one given by the environment has its own keeper.
    if credentials is not None and credentials.created and given is None and not path.exists():
        record = {
            "accountId": settings.default_account,
            "accessKeyId": credentials.access_key_id,
            "secretAccessKey": credentials.secret_access_key,
        }
        write_private_file(path, (json.dumps(record, indent=2) + "\n").encode())
    return credentials


def _announce(settings: Settings, credentials: RootCredentials | None) -> None:
    console.print(f"Dockyard listening on [bold]{settings.public_url}[/] (data in {settings.data_dir})")
    console.print(f"Default registry: account {settings.default_account}, region {settings.default_region}")
    given = _given_root_credentials()
    if credentials is not None and credentials.created and given is None:
        console.print(
            "Root credentials were generated (shown once; also saved with mode 0600 in "
            f"{settings.data_dir / ROOT_CREDENTIALS_FILE}):"
        )
        console.print(f"  access key id:     {credentials.access_key_id}")
        console.print(f"  secret access key: {credentials.secret_access_key}")
    elif given is not None:
        console.print(f"Root credentials: access key id {given[0]} (from {ROOT_KEY_ID_ENV})")
    else:
        console.print(f"Root credentials: in {settings.data_dir / ROOT_CREDENTIALS_FILE}")
    host = settings.public_url.split("://", 1)[1]
    verify = "" if settings.tls_cert else "--tls-verify=false "
    console.print(f"Log in: skopeo login {verify}--username <access key id> {host}")


def main() -> None:
    # Everything written under the data directory is the owner's only (files also get explicit modes).
    os.umask(UMASK)
    app()


if __name__ == "__main__":
    main()
