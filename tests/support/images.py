"""Builds OCI image layouts on disk for tests: real gzipped tar layers, configs, manifests, indexes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of `files`, byte-for-byte reproducible (fixed mtimes, no gzip timestamp)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Layout:
    """An OCI image layout directory being written."""

    root: Path
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    def descriptor(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": self.add_blob(data), "size": len(data), **extra}

    def add_image(
        self, layers: list[bytes], architecture: str = "amd64", os_name: str = "linux", label: str = ""
    ) -> dict[str, Any]:
        """Add an image manifest; returns its descriptor (not yet listed in index.json)."""
        diff_ids = [sha256(gzip.decompress(layer)) for layer in layers]
        config = {
            "architecture": architecture,
            "os": os_name,
            "config": {"Labels": {"test": label}} if label else {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.descriptor(OCI_CONFIG, json.dumps(config, sort_keys=True).encode()),
            "layers": [self.descriptor(OCI_LAYER_GZIP, layer) for layer in layers],
        }
        data = json.dumps(manifest, indent=2).encode()
        return self.descriptor(OCI_MANIFEST, data, platform={"architecture": architecture, "os": os_name})

    def add_index(self, children: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        return self.descriptor(OCI_INDEX, json.dumps(index, indent=2).encode())

    def tag(self, descriptor: dict[str, Any], ref_name: str) -> None:
        entry = {key: value for key, value in descriptor.items() if key != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
        self.manifests.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests}
        (self.root / "index.json").write_text(json.dumps(index, indent=2))


def random_layers(count: int, size: int, seed: int) -> list[bytes]:
    """`count` distinct layers of roughly `size` incompressible bytes each, deterministic per seed."""
    layers = []
    for number in range(count):
        content = hashlib.shake_256(f"{seed}-{number}".encode()).digest(size)
        layers.append(tar_layer({f"data/file-{seed}-{number}.bin": content}))
    return layers


def single_image_layout(root: Path, tag: str = "latest", layers: int = 3, size: int = 256 * 1024, seed: int = 1) -> str:
    """An OCI layout with one multi-layer image under `tag`; returns the manifest digest."""
    layout = Layout(root)
    descriptor = layout.add_image(random_layers(layers, size, seed), label=str(seed))
    layout.tag(descriptor, tag)
    digest: str = descriptor["digest"]
    return digest
