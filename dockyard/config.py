"""One Settings object: built from CLI flags, handed to worker processes through the environment."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

SETTINGS_ENV: Final = "DOCKYARD_SETTINGS"
ROOT_KEY_ID_ENV: Final = "DOCKYARD_ROOT_ACCESS_KEY_ID"
ROOT_SECRET_ENV: Final = "DOCKYARD_ROOT_SECRET_ACCESS_KEY"  # noqa: S105 (a variable name, not a secret)
MASTER_KEY_ENV: Final = "DOCKYARD_MASTER_KEY"
REGIONS_ENV: Final = "DOCKYARD_REGIONS"
DATA_DIR_ENV: Final = "DOCKYARD_DATA_DIR"
DEFAULT_DATA_DIR: Final = Path("dockyard-data")  # relative to where a command runs: name it with DATA_DIR_ENV
DEFAULT_CONFIG: Final = Path("/etc/dockyard/dockyard.toml")  # serve's option defaults, when the file exists
METADATA_FILE: Final = "metadata.db"  # the SQLite metadata store, when no database URL is given
ROOT_CREDENTIALS_FILE: Final = "root-credentials.json"  # only when Dockyard generated the root credentials
ACCOUNT_FILE: Final = "default-account"  # the default account's id, whoever made its credentials


def remembered_account(data_dir: Path) -> str | None:
    """The default account a data directory was first served with, if it was."""
    account_file = data_dir / ACCOUNT_FILE
    if account_file.exists():
        return account_file.read_text().strip()
    credentials = data_dir / ROOT_CREDENTIALS_FILE  # a data directory older than the account file
    if credentials.exists():
        account: str = json.loads(credentials.read_text())["accountId"]
        return account
    return None


@cache
def aws_regions() -> tuple[str, ...]:
    """The regions of AWS's `aws` partition, from the endpoints data of the installed botocore (not a list
    kept by hand: a botocore upgrade brings new regions). Read when first needed: botocore and its endpoints
    file cost a command that never looks at regions (and the supervisor, which gets them in its settings).
    The file is read as it lies in the package: importing botocore's loader for it costs about 0.1 s."""
    spec = importlib.util.find_spec("botocore")  # finds the package without importing it
    locations = spec.submodule_search_locations if spec is not None else None
    path = Path(locations[0]) / "data" / "endpoints.json" if locations else None
    if path is not None and path.is_file():
        endpoints = json.loads(path.read_bytes())
    else:  # a botocore that keeps its data otherwise (compressed): its own loader knows
        from botocore.loaders import create_loader

        endpoints = create_loader().load_data("endpoints")
    partition = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
    return tuple(sorted(partition["regions"]))


def __getattr__(name: str) -> tuple[str, ...]:
    """`AWS_REGIONS`, computed on first use (see `aws_regions`)."""
    if name == "AWS_REGIONS":
        return aws_regions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    default_account: str
    default_region: str = "us-east-1"
    host: str = "127.0.0.1"
    port: int = 5000
    database_url: str | None = None
    create_on_push: bool = True
    workers: int = 1
    auth_challenge: str = "basic"  # "basic" (as ECR) or "bearer" (Docker's token flow)
    lifecycle_interval: float = 86_400.0  # seconds between lifecycle sweeps (ECR: daily)
    gc_interval: float = 3_600.0  # seconds between garbage collections
    gc_grace: float = 3_600.0  # content younger than this is never collected (uploads in flight)
    job_lease: float = 300.0  # seconds a background job's lease lasts; renewed every third while the job runs
    job_tick: float = 30.0  # seconds between the scheduler's looks for due jobs (jittered ±50 %)
    background_jobs: bool = True
    db_pool_size: int = 10  # connections per worker process
    blob_store: str | None = None  # s3://BUCKET[/PREFIX]; None: the data directory
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_redirect: bool = False  # blob GETs answer 307 to a presigned S3 URL
    kms_endpoint_url: str | None = None  # an external KMS for KMS repositories' keys; None: the built-in one
    encrypt_at_rest: bool = True  # envelope-encrypt AES256 repositories' content (KMS ones always are)
    access_log: str = "stderr"  # one JSON line per request: "stderr", "off", or a file path
    shutdown_grace: float = 30.0  # seconds requests in flight get to finish after SIGTERM/SIGINT
    # The regions served; requests scoped to another are refused.
    regions: tuple[str, ...] = field(default_factory=aws_regions)
    tls_cert: str | None = None  # PEM certificate chain: HTTPS when set (with tls_key)
    tls_key: str | None = None
    tls_min_version: str = "1.2"  # "1.2" or "1.3": the oldest TLS version a client may use

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / METADATA_FILE}"

    @property
    def blob_root(self) -> Path:
        return self.data_dir / "storage"

    @property
    def public_url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::") else self.host  # noqa: S104
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    def to_environment(self) -> str:
        values = asdict(self)
        values["data_dir"] = str(self.data_dir)
        return json.dumps(values)

    @classmethod
    def from_environment(cls) -> Settings:
        values = json.loads(os.environ[SETTINGS_ENV])
        values["data_dir"] = Path(values["data_dir"])
        values["regions"] = tuple(values["regions"])
        return cls(**values)
