"""The `dockyard` command."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tomllib
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from dockyard import ops_cli
from dockyard.admin_cli import admin_app
from dockyard.cli_common import DataDir, account_option, reported
from dockyard.config import (
    ACCOUNT_FILE,
    DEFAULT_CONFIG,
    DEFAULT_DATA_DIR,
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
from dockyard.domain.names import check_region
from dockyard.exclusive import Held, Refused, claimed
from dockyard.lifecycle_cli import lifecycle_app
from dockyard.storage.private import UMASK, private_directory, write_new_private_file

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


def _config_defaults(context: typer.Context, value: Path | None) -> Path | None:
    """Make the config file's keys the defaults of serve's options (click's default_map)."""
    path = value if value is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is None:
        return None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint="--config") from None
    options = {param.name for param in context.command.params if param.name and param.name != "config"}
    defaults: dict[str, object] = {}
    for key, setting in document.items():
        name = key.replace("-", "_")
        if name not in options:
            known = ", ".join(sorted(option.replace("_", "-") for option in options))
            raise typer.BadParameter(f"{path}: {key!r} is not an option of serve ({known})", param_hint="--config")
        defaults[name] = setting
    context.default_map = {**(context.default_map or {}), **defaults}
    return path


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    default_account: Annotated[
        str | None,
        typer.Option(
            help="12-digit account that owns requests naming no account (generated at first start).",
            callback=account_option,
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
    config: Annotated[
        Path | None,
        typer.Option(
            is_eager=True,  # read before the other options, whose defaults it sets
            callback=_config_defaults,
            help=f'A TOML file whose keys are these options (port = 5000, data-dir = "/var/lib/dockyard"); '
            f"options given on the command line or in the environment win. Default: {DEFAULT_CONFIG} if it exists.",
        ),
    ] = None,
) -> None:
    """Run the registry (`/v2`) on one port."""
    served = _regions_option(regions, default_region)
    data_dir = data_dir.resolve()
    private_directory(data_dir)
    _claim(ctx, data_dir, host, port)  # before anything is generated or printed
    # Proposed only: the database keeps the registry's default account, made by the first node (see below).
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
    settings = _agreed_account(services, settings, default_account)
    try:
        started = _bootstrap_credentials(services, settings)
    except (WrongMasterKey, ValueError) as error:
        console.print(f"[red]Cannot start:[/] {error}")
        raise typer.Exit(1) from None
    _announce(settings, started)
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


def _agreed_account(services: Prepared, settings: Settings, given: str | None) -> Settings:
    """The settings with the registry's default account: the one its database keeps (every node sharing it
    agrees), stored by the first node to start; a `--default-account` that differs is refused."""
    from dockyard.domain.iam import DefaultAccountConflict, settle_default_account

    try:
        account = settle_default_account(services.metadata, given, settings.default_account)
    except DefaultAccountConflict as conflict:
        console.print(
            f"[red]Cannot start:[/] --default-account {conflict.given}, but this registry's default account is "
            f"{conflict.stored} (kept in its database since its first start): give {conflict.stored} or omit "
            "--default-account",
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    return replace(settings, default_account=account)


def _new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def _given_root_credentials() -> tuple[str, str] | None:
    """The root access key pair the environment gives, if it gives both halves."""
    given_id, given_secret = os.environ.get(ROOT_KEY_ID_ENV), os.environ.get(ROOT_SECRET_ENV)
    return (given_id, given_secret) if given_id and given_secret else None


@dataclass(frozen=True)
class Bootstrap:
    """What the start did about the default account's root credentials, for the banner to tell truly."""

    credentials: RootCredentials | None  # None: the account had root credentials and none were given
    saved_to: Path | None  # where a generated secret was written (only a generated one is)
    on_disk: Path | None  # a file in this data directory that holds the account's root credentials


def _bootstrap_credentials(services: Prepared, settings: Settings) -> Bootstrap:
    from sqlalchemy.exc import IntegrityError

    from dockyard.domain.iam import bootstrap_root_credentials

    given = _given_root_credentials()
    try:
        credentials = bootstrap_root_credentials(
            services.metadata, services.box, settings.default_account, utc_now(), given
        )
    except IntegrityError:  # another node, starting at the same moment, registered them first: check them
        credentials = bootstrap_root_credentials(
            services.metadata, services.box, settings.default_account, utc_now(), given
        )
    account_file = settings.data_dir / ACCOUNT_FILE  # the database's account, for tools that read the file
    if not account_file.exists() or remembered_account(settings.data_dir) != settings.default_account:
        _replace_private_file(account_file, f"{settings.default_account}\n".encode())
    path = _credentials_file(settings.data_dir, settings.default_account)
    # Only a generated secret is saved (it is shown once, and only on a terminal): one given by the environment
    # has its own keeper.
    if credentials is not None and credentials.created and given is None:
        record = {
            "accountId": settings.default_account,
            "accessKeyId": credentials.access_key_id,
            "secretAccessKey": credentials.secret_access_key,
        }
        _replace_private_file(path, (json.dumps(record, indent=2) + "\n").encode())
        return Bootstrap(credentials, path, path)
    return Bootstrap(credentials, None, path if path.exists() else None)


def _credentials_file(data_dir: Path, account: str) -> Path:
    """The file for the account's generated root credentials: root-credentials.json, unless that holds another
    account's (a data directory once served with another default account or database): then one of its own."""
    path = data_dir / ROOT_CREDENTIALS_FILE
    if not path.exists():
        return path
    try:
        holder = json.loads(path.read_text()).get("accountId")
    except (OSError, ValueError, AttributeError):
        holder = None
    return path if holder == account else data_dir / f"root-credentials-{account}.json"


def _replace_private_file(path: Path, content: bytes) -> None:
    """Write `path` (0600) whole or not at all: a stale file (the account's root keys were deleted since)
    is replaced only by a complete one."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    write_new_private_file(partial, content)
    os.replace(partial, path)


def _announce(settings: Settings, started: Bootstrap) -> None:
    """The start banner on stderr: one line per item, never wrapped (a log keeps each whole); the root secret
    only on a terminal (a pipe, a journal or a log file keeps what it is given)."""
    banner = Console(stderr=True, soft_wrap=True, highlight=False)
    banner.print(f"Dockyard listening on [bold]{settings.public_url}[/] (data in {settings.data_dir})")
    banner.print(f"Default registry: account {settings.default_account}, region {settings.default_region}")
    given = _given_root_credentials()
    credentials = started.credentials
    if credentials is not None and credentials.created and given is None:
        banner.print(f"Root credentials were generated: access key id {credentials.access_key_id}")
        if banner.is_terminal:
            banner.print(f"  secret access key: {credentials.secret_access_key} (shown once)")
        banner.print(f"  saved with mode 0600 in {started.saved_to}")
    elif given is not None:
        banner.print(f"Root credentials: access key id {given[0]} (from {ROOT_KEY_ID_ENV})")
    elif started.on_disk is not None:
        banner.print(f"Root credentials: in {started.on_disk}")
    else:
        banner.print(
            f"Root credentials: account {settings.default_account} has them already (made by another node or "
            f"with {ROOT_KEY_ID_ENV}); none are in this data directory"
        )
    host = settings.public_url.split("://", 1)[1]
    verify = "" if settings.tls_cert else "--tls-verify=false "
    banner.print(f"Log in: skopeo login {verify}--username <access key id> {host}")


def main() -> None:
    # Everything written under the data directory is the owner's only (files also get explicit modes).
    os.umask(UMASK)
    # Not standalone: usage errors reach `reported` too, which prints them on one line (click would print a
    # usage block and Typer a box wrapped at 80 columns).
    with reported():  # a refused command is one line, never a stack trace
        status = app(standalone_mode=False)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
