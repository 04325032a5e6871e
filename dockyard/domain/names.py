"""Names the registry speaks: repository names, tags, digests, accounts, regions, ARNs and hosts.

Every value that can end up in a storage key or an SQL row passes through one of the parsers here first,
so nothing downstream ever handles an unchecked string.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from dockyard.domain.errors import DigestInvalid, DigestUnsupported, NameInvalid, TagInvalid

# OCI distribution-spec, section "Pulling manifests": the repository name grammar.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME_RE: Final = re.compile(rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*")
# ECR caps repository names at 2-256 characters.
REPOSITORY_NAME_MIN, REPOSITORY_NAME_MAX = 2, 256

TAG_RE: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# image-spec digest grammar; only the algorithms below are accepted for content.
DIGEST_RE: Final = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
_LOWER_HEX_RE: Final = re.compile(r"[0-9a-f]+")

ACCOUNT_RE: Final = re.compile(r"[0-9]{12}")
REGION_RE: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest whose algorithm Dockyard supports and whose hex part is well formed."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = DIGEST_RE.fullmatch(text)
        if match is None:
            raise DigestInvalid(f"invalid digest {text!r}", detail={"digest": text})
        algorithm, encoded = match.groups()
        expected_length = _HEX_LENGTH.get(algorithm)
        if expected_length is None:
            raise DigestUnsupported(f"digest algorithm {algorithm!r} is not supported", detail={"digest": text})
        if len(encoded) != expected_length or not _LOWER_HEX_RE.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {text!r}", detail={"digest": text})
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def new_hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


# The largest count, size or offset anything here stores (a signed 64-bit column in SQLite and PostgreSQL).
MAX_INT64: Final = 2**63 - 1
_DECIMAL_RE: Final = re.compile(r"[0-9]+")


def parse_decimal(text: str) -> int | None:
    """A non-negative decimal integer of ASCII digits up to MAX_INT64, else None.

    The length is bounded before `int()`: Python refuses (ValueError) to convert more than 4300 digits, and a
    5,000-digit `n` or `Content-Range` must be a 4xx like any other bad number, not an unexpected error.
    """
    if _DECIMAL_RE.fullmatch(text) is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_INT64)):
        return None
    value = int(digits)
    return value if value <= MAX_INT64 else None


def is_digest_reference(reference: str) -> bool:
    """A manifest reference is a digest when it contains a colon, a tag otherwise (spec section 1)."""
    return ":" in reference


def check_repository_name(name: str) -> str:
    if not REPOSITORY_NAME_MIN <= len(name) <= REPOSITORY_NAME_MAX or not REPOSITORY_NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name!r}", detail={"name": name})
    return name


def check_private_repository_name(name: str) -> str:
    """A private repository may not sit under `public/`: that path prefix addresses ECR Public registries."""
    check_repository_name(name)
    if name.startswith(PUBLIC_PATH_PREFIX):
        raise NameInvalid(
            f"repository names starting with {PUBLIC_PATH_PREFIX!r} are reserved for public registries",
            detail={"name": name},
        )
    return name


def is_tag(text: str) -> bool:
    return TAG_RE.fullmatch(text) is not None


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise TagInvalid(f"invalid tag {tag!r}", detail={"tag": tag})
    return tag


def check_account(account_id: str) -> str:
    if not ACCOUNT_RE.fullmatch(account_id):
        raise ValueError(f"an account id is 12 digits, not {account_id!r}")
    return account_id


def check_region(region: str) -> str:
    if not REGION_RE.fullmatch(region):
        raise ValueError(f"not a region name: {region!r}")
    return region


# ECR Public repositories live in their own registry per account; they are keyed with this pseudo-region.
PUBLIC_REGION: Final = "public"
# On the registry door they are reached as <host>/public/<registry alias>/<repository>.
PUBLIC_PATH_PREFIX: Final = "public/"
ALIAS_RE: Final = re.compile(r"[a-z][a-z0-9]+(?:[._-][a-z0-9]+)*")


@dataclass(frozen=True, order=True)
class RegistryId:
    """One registry: an account's private registry in a region, or its public registry (region `public`)."""

    account_id: str
    region: str

    @property
    def is_public(self) -> bool:
        return self.region == PUBLIC_REGION

    def __str__(self) -> str:
        return f"the public registry of {self.account_id}" if self.is_public else f"{self.account_id} in {self.region}"


@dataclass(frozen=True)
class RepositoryRef:
    """Where a repository lives: every repository is keyed by account, region and name."""

    account_id: str
    region: str
    name: str

    @property
    def is_public(self) -> bool:
        return self.region == PUBLIC_REGION

    @property
    def registry(self) -> RegistryId:
        return RegistryId(self.account_id, self.region)

    @property
    def arn(self) -> str:
        if self.is_public:
            return f"arn:aws:ecr-public::{self.account_id}:repository/{self.name}"
        return f"arn:aws:ecr:{self.region}:{self.account_id}:repository/{self.name}"


# A registry host names its account and region: <account>.dkr.ecr.<region>.<domain>[:port]
_REGISTRY_HOST_RE: Final = re.compile(r"([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.[A-Za-z0-9.-]+(?::[0-9]+)?")


def registry_from_host(host: str) -> tuple[str, str] | None:
    """The (account, region) a registry host name designates, if it follows ECR's host scheme."""
    match = _REGISTRY_HOST_RE.fullmatch(host)
    if match is None or not REGION_RE.fullmatch(match.group(2)):
        return None
    return match.group(1), match.group(2)
