"""HTTPS for `dockyard serve`: checking a given certificate, or a private CA made in the data directory.

`--tls self-signed` keeps, in `<data-dir>/tls/`, a CA (`ca.crt`, its key in `private/ca.key`) and a server
certificate it signed (`private/server.crt`, `private/server.key`). Clients trust `ca.crt` once; the server
certificate is re-issued by the same CA whenever the names it must cover change or it nears its end, so that
trust survives restarts and renewals.
Keys are ECDSA P-256 (every TLS stack a registry client uses: Go's, OpenSSL, rustls, Java's).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dockyard.storage.private import private_directory, write_new_private_file

TLS_DIRECTORY: Final = "tls"
CA_LIFETIME: Final = datetime.timedelta(days=3650)
# 397 days: what public CAs may issue, well under the 825 days Apple's TLS stack accepts even from a private CA.
SERVER_LIFETIME: Final = datetime.timedelta(days=397)
RENEW_BEFORE: Final = datetime.timedelta(days=30)  # a server certificate this close to its end is re-issued
CLOCK_SKEW: Final = datetime.timedelta(hours=1)  # valid from a little before now: clients with a slow clock
ALWAYS_NAMES: Final = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (addresses compared, not bound)

DNS_LABEL: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

SubjectName = x509.DNSName | x509.IPAddress


class TlsError(ValueError):
    """A certificate, key or name Dockyard cannot serve HTTPS with (the message says which and why)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # the CA to trust, when Dockyard made it


def check_files(cert: Path, key: Path) -> TlsFiles:
    """The given certificate chain and key, checked to load and to match (before any worker tries)."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise TlsError(f"{flag} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {error.reason or error}") from None
    except OSError as error:
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {error.strerror or error}") from None
    return TlsFiles(cert.resolve(), key.resolve())


def subject_names(host: str, extra: list[str], hostname: str | None = None) -> list[str]:
    """The names the server certificate covers: loopback, the listen address unless it is a wildcard (then
    the machine's host name), and `--tls-san` names; each checked to be an IP address or a DNS name."""
    wanted = [*ALWAYS_NAMES]
    if host in WILDCARD_HOSTS:
        wanted.append(hostname if hostname is not None else socket.gethostname())
    else:
        wanted.append(host)
    wanted.extend(extra)
    names: list[str] = []
    for name in wanted:
        canonical = _canonical_name(name)
        if canonical not in names:
            names.append(canonical)
    return names


def _canonical_name(name: str) -> str:
    stripped = name.strip()
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(stripped.strip("[]")))
    label = stripped.lower().rstrip(".")
    parts = label.split(".")
    # RFC 1123 labels; a wildcard only as the whole leftmost label, and not directly over a top-level domain.
    wildcard = parts[0] == "*" and len(parts) > 2
    labels = parts[1:] if wildcard else parts
    if len(label) > 253 or not all(DNS_LABEL.fullmatch(part) for part in labels):
        raise TlsError(f"--tls-san {name!r}: neither an IP address nor a DNS name")
    return label


def _general_names(names: list[str]) -> list[SubjectName]:
    result: list[SubjectName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def self_signed(data_dir: Path, names: list[str], now: datetime.datetime) -> TlsFiles:
    """The CA and a server certificate for `names` in `<data_dir>/tls`: made at first, reused after, the
    server certificate re-issued when its names differ, it nears its end, or the CA is not its issuer."""
    directory = data_dir / TLS_DIRECTORY
    private = directory / "private"
    private_directory(private)
    # ca.crt alone at the top: the directory itself can be given as a containers `--cert-dir`, which takes
    # every *.crt as a CA and refuses a *.key without its client *.cert.
    ca_path, ca_key_path = directory / "ca.crt", private / "ca.key"
    key_path, cert_path = private / "server.key", private / "server.crt"
    ca = _load_ca(ca_key_path, ca_path, now)
    if ca is None:
        ca = _new_ca(now)
        _write(ca_key_path, _key_bytes(ca[0]))
        _write(ca_path, ca[1].public_bytes(serialization.Encoding.PEM))
    if not _server_cert_fits(key_path, cert_path, ca[1], names, now):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _new_server_cert(key, ca, names, now)
        _write(key_path, _key_bytes(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, ca_path)


CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _load_ca(key_path: Path, cert_path: Path, now: datetime.datetime) -> CA | None:
    """The CA kept in the data directory, if both halves are there, match, and it is not near its end."""
    if not (key_path.exists() and cert_path.exists()):
        return None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as error:
        raise TlsError(f"{cert_path} / {key_path}: the kept CA does not load ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsError(f"{key_path} does not match {cert_path}; remove both to make a new CA")
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return None  # a new CA: clients must trust it anew, but an expired one would fail them anyway
    return key, cert


def _server_cert_fits(
    key_path: Path, cert_path: Path, ca: x509.Certificate, names: list[str], now: datetime.datetime
) -> bool:
    if not (key_path.exists() and cert_path.exists()):
        return False
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False  # damaged, or issued by a CA since replaced: re-issue
    return (
        isinstance(key, ec.EllipticCurvePrivateKey)
        and key.public_key() == cert.public_key()
        and set(covered) == set(_general_names(names))
        and cert.not_valid_after_utc - RENEW_BEFORE > now
    )


def _new_ca(now: datetime.datetime) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    # A name unique to this CA: two data directories' CAs trusted side by side must not be confused.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dockyard"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Dockyard local CA {secrets.token_hex(4)}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_server_cert(
    key: ec.EllipticCurvePrivateKey, ca: CA, names: list[str], now: datetime.datetime
) -> x509.Certificate:
    ca_key, ca_cert = ca
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, content: bytes) -> None:
    """Replace `path` whole (a reader never sees half a file): written 0600 beside it, then renamed over it.
    Certificates too are the owner's only, like everything in the data directory: clients get a copy."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        write_new_private_file(temporary, content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
