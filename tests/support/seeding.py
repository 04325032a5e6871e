"""Seeds a data directory in process, through the domain's own Registry with an injected clock.

A real `dockyard serve` knows only the wall clock, and a client cannot choose when an image was pushed,
pulled, archived or restored. Tests that need such times (the lifecycle vectors: "pushed 120 days ago")
write them here, through the same code the server's doors call (uploads, manifest puts, storage classes,
pull records), each step with the clock set to the wanted moment; a server then serves the data directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.iam import bootstrap_root_credentials
from dockyard.domain.images import Registry
from dockyard.domain.manifests import parse_manifest
from dockyard.domain.names import Digest, RepositoryRef
from dockyard.domain.ports import RepositorySettings
from dockyard.server import Services, prepare
from tests.support.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, sha256, tar_layer
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

REGION = "us-east-1"


@dataclass
class ManualClock:
    """A clock the test sets; every seeding step reads it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


class Seeder:
    """Writes repositories and images into a data directory (the server may or may not be running)."""

    def __init__(self, data_dir: Path, account: str = ACCOUNT_ID, region: str = REGION) -> None:
        self.services: Services = prepare(Settings(data_dir, account, region, background_jobs=False))
        # The account and its root user, as `dockyard serve` makes them (it finds them there at its start).
        bootstrap_root_credentials(
            self.services.metadata, self.services.box, account, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        )
        self.clock = ManualClock(utc_now())
        self.registry = Registry(self.services.metadata, self.services.blobs, clock=self.clock)
        self.metadata = self.services.metadata
        self.account = account
        self.region = region

    def close(self) -> None:
        self.services.audit.close()
        self.services.events.close()
        self.services.engine.dispose()

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ repositories

    def ref(self, name: str) -> RepositoryRef:
        return RepositoryRef(self.account, self.region, name)

    def create_repository(self, name: str, at: datetime | None = None, scan_on_push: bool = False) -> RepositoryRef:
        self.clock.now = at or utc_now()
        ref = self.ref(name)
        self.registry.repositories.create(ref, RepositorySettings(scan_on_push=scan_on_push))
        return ref

    def set_lifecycle_policy(self, ref: RepositoryRef, policy: dict[str, Any] | str) -> str:
        text = policy if isinstance(policy, str) else json.dumps(policy, indent=2)
        self.registry.repositories.set_lifecycle_policy(ref, text)
        return text

    # ------------------------------------------------------------------------------------ content

    def upload(self, ref: RepositoryRef, data: bytes) -> str:
        """A blob through the registry's upload path (start, append, complete), linked at the clock's time."""
        upload_id = self.registry.start_upload(ref)
        appender = self.registry.begin_append(ref, upload_id, 0)
        appender.write(data)
        appender.finish()
        digest = sha256(data)
        self.registry.complete_upload(ref, upload_id, Digest.parse(digest))
        return digest

    def put_manifest(self, ref: RepositoryRef, document: dict[str, Any], tags: list[str], at: datetime) -> str:
        self.clock.now = at
        raw = json.dumps(document, indent=2).encode()
        manifest = parse_manifest(raw, document["mediaType"])
        self.registry.store_manifest(self.registry.repository(ref), manifest, raw, tags)
        return str(manifest.digest)

    def put_image(
        self,
        ref: RepositoryRef,
        label: str,
        tags: list[str],
        at: datetime,
        files: dict[str, bytes] | None = None,
        subject: dict[str, Any] | None = None,
    ) -> str:
        """A one-layer image whose config carries `label` (so every label gives a distinct digest)."""
        self.clock.now = at
        layer = tar_layer(files or {"etc/seeded": b"seeded\n"})
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": {"seed": label}}, "rootfs": {}},
            sort_keys=True,
        ).encode()
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.upload(ref, config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": self.upload(ref, layer), "size": len(layer)}],
        }
        if subject is not None:
            document["subject"] = subject
        return self.put_manifest(ref, document, tags, at)

    def put_index(self, ref: RepositoryRef, children: list[str], tags: list[str], at: datetime) -> str:
        """An OCI index listing `children` (manifests already in the repository)."""
        repository = self.registry.repository(ref)
        manifests = []
        for number, child in enumerate(children):
            record = self.metadata.get_manifest(repository.id, Digest.parse(child))
            assert record is not None, f"{child} is not in {ref.name}"
            manifests.append(
                {
                    "mediaType": record.media_type,
                    "digest": child,
                    "size": record.size,
                    "platform": {"architecture": f"arch{number}", "os": "linux"},
                }
            )
        return self.put_manifest(ref, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, tags, at)

    # ------------------------------------------------------------------------------------ image facts

    def _digest(self, ref: RepositoryRef, digest: str) -> tuple[int, Digest]:
        return self.registry.repository(ref).id, Digest.parse(digest)

    def record_pull(self, ref: RepositoryRef, digest: str, at: datetime) -> None:
        self.metadata.record_pull(*self._digest(ref, digest), at)

    def archive(self, ref: RepositoryRef, digest: str, at: datetime) -> None:
        self.metadata.set_storage_class(*self._digest(ref, digest), "ARCHIVE", at)

    def activate(self, ref: RepositoryRef, digest: str, at: datetime) -> None:
        """Stamp a restoration from the archive (lastActivatedAt) and put the image in the standard class."""
        self.metadata.set_storage_class(*self._digest(ref, digest), "STANDARD", at)
