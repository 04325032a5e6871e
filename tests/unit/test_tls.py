"""The self-signed CA kept in the data directory: made once, reused, the server certificate re-issued when needed;
given certificates checked before any worker starts; every bad flag a clear error."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.tls import TlsError, TlsFiles, check_files, self_signed, subject_names

NOW = datetime.datetime(2026, 12, 8, tzinfo=datetime.UTC)
NAMES = ["localhost", "127.0.0.1", "::1"]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> set[str]:
    names = load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(value) for value in names.get_values_for_type(x509.DNSName)} | {
        str(value) for value in names.get_values_for_type(x509.IPAddress)
    }


def test_first_start_makes_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    files = self_signed(tmp_path, [*NAMES, "registry.example"], NOW)
    assert files.ca == tmp_path / "tls" / "ca.crt"
    ca, server = load(files.ca), load(files.cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert sans(files.cert) == {"localhost", "127.0.0.1", "::1", "registry.example"}
    assert server.not_valid_after_utc - NOW <= datetime.timedelta(days=397)
    # Only ca.crt at the top: the directory works as skopeo's --cert-dir (a lone *.key there is an error).
    assert sorted(path.name for path in (tmp_path / "tls").iterdir()) == ["ca.crt", "private"]
    for path in (files.ca, files.cert, files.key, tmp_path / "tls" / "private" / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "tls" / "private").stat().st_mode) == 0o700


def test_later_starts_reuse_both(tmp_path: Path) -> None:
    first = self_signed(tmp_path, NAMES, NOW)
    kept = {path: path.read_bytes() for path in (first.ca, first.cert, first.key)}
    again = self_signed(tmp_path, NAMES, NOW + datetime.timedelta(days=100))
    assert again == first
    assert {path: path.read_bytes() for path in kept} == kept


def test_new_names_reissue_the_server_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = self_signed(tmp_path, NAMES, NOW)
    assert first.ca is not None
    ca, key = first.ca.read_bytes(), first.key.read_bytes()
    again = self_signed(tmp_path, [*NAMES, "10.0.0.7"], NOW)
    assert again.ca is not None
    assert again.ca.read_bytes() == ca  # clients that trust it keep trusting
    assert again.key.read_bytes() != key
    assert sans(again.cert) == {"localhost", "127.0.0.1", "::1", "10.0.0.7"}
    load(again.cert).verify_directly_issued_by(load(again.ca))


def test_a_server_certificate_near_its_end_is_reissued(tmp_path: Path) -> None:
    first = self_signed(tmp_path, NAMES, NOW)
    before = load(first.cert)
    later = before.not_valid_after_utc - datetime.timedelta(days=29)
    renewed = load(self_signed(tmp_path, NAMES, later).cert)
    assert renewed.serial_number != before.serial_number
    assert renewed.not_valid_after_utc > later + datetime.timedelta(days=300)


def test_a_damaged_server_certificate_or_one_from_another_ca_is_reissued(tmp_path: Path) -> None:
    first = self_signed(tmp_path, NAMES, NOW)
    first.cert.write_text("not a certificate")
    repaired = self_signed(tmp_path, NAMES, NOW)
    assert repaired.ca is not None
    load(repaired.cert).verify_directly_issued_by(load(repaired.ca))
    other = self_signed(tmp_path / "other", NAMES, NOW)
    other.cert.replace(repaired.cert)
    other.key.replace(repaired.key)
    again = self_signed(tmp_path, NAMES, NOW)
    assert again.ca is not None
    load(again.cert).verify_directly_issued_by(load(again.ca))


def test_a_ca_whose_key_does_not_match_is_refused(tmp_path: Path) -> None:
    self_signed(tmp_path, NAMES, NOW)
    self_signed(tmp_path / "other", NAMES, NOW)
    (tmp_path / "other" / "tls" / "private" / "ca.key").replace(tmp_path / "tls" / "private" / "ca.key")
    with pytest.raises(TlsError, match="does not match"):
        self_signed(tmp_path, NAMES, NOW)


def test_subject_names_cover_loopback_the_host_and_extra_names() -> None:
    assert subject_names("127.0.0.1", []) == NAMES
    assert subject_names("Registry.Example.", ["10.1.2.3", "[fe80::1]", "registry.example"]) == [
        *NAMES,
        "registry.example",
        "10.1.2.3",
        "fe80::1",
    ]
    assert subject_names("0.0.0.0", [], hostname="builder") == [*NAMES, "builder"]
    assert subject_names("::", ["*.registry.example"], hostname="builder") == [*NAMES, "builder", "*.registry.example"]


@pytest.mark.parametrize("name", ["", "bad name", "under_score.example", "-lead.example", "a..b", "*.com", "x" * 64])
def test_a_name_that_is_neither_an_address_nor_a_dns_name_is_refused(name: str) -> None:
    with pytest.raises(TlsError, match="--tls-san"):
        subject_names("127.0.0.1", [name])


@given(st.ip_addresses())
def test_any_ip_address_is_certified_as_an_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    names = subject_names("127.0.0.1", [str(address)])
    assert str(address) in names
    assert len(names) == len(set(names))


def test_given_files_are_checked_to_load_and_match(tmp_path: Path) -> None:
    mine = self_signed(tmp_path / "a", NAMES, NOW)
    theirs = self_signed(tmp_path / "b", NAMES, NOW)
    assert check_files(mine.cert, mine.key) == TlsFiles(mine.cert, mine.key)
    with pytest.raises(TlsError, match=r"--tls-key .*: no such file"):
        check_files(mine.cert, tmp_path / "missing.key")
    with pytest.raises(TlsError, match="KEY_VALUES_MISMATCH"):
        check_files(mine.cert, theirs.key)
    with pytest.raises(TlsError, match="--tls-cert"):
        check_files(mine.key, mine.key)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "x.crt"], "give both --tls-cert and --tls-key"),
        (["--tls", "self-signed", "--tls-cert", "x.crt", "--tls-key", "x.key"], "not both"),
        (["--tls-san", "registry.example"], "only with --tls self-signed"),
        (["--tls", "self-signed", "--tls-san", "bad name"], "neither an IP address nor a DNS name"),
        (["--tls-cert", "x.crt", "--tls-key", "x.key"], "x.crt: no such file"),
        (["--tls", "sometimes"], "sometimes"),
        (["--tls-min-version", "1.1"], "1.1"),
    ],
)
def test_serve_refuses_bad_tls_flags_before_starting(tmp_path: Path, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data"), *flags])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "data" / "metadata.db").exists()
