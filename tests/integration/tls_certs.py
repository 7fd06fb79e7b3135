"""Certificates the TLS tests make for themselves: a CA, server certificates (good, expired, signed
by another CA, for another host name) and client certificates, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1")
"""What a good server certificate is for: the tests dial 127.0.0.1."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    name: str
    cert: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def make_authority(directory: Path, name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    cert = directory / f"{name}.crt"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(name, cert, key, certificate)


def issue(
    authority: Authority,
    directory: Path,
    name: str,
    *,
    hosts: tuple[str, ...] = LOOPBACK_NAMES,
    client: bool = False,
    expired: bool = False,
) -> KeyPair:
    """A leaf certificate signed by `authority` for `hosts` (a server's) or for `name` (a client's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - datetime.timedelta(days=10 if expired else 1)
    end = _now() - datetime.timedelta(days=2) if expired else _now() + datetime.timedelta(days=30)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans or [x509.DNSName(name)]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    cert = directory / f"{name}.crt"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return KeyPair(cert, _write_key(key, directory / f"{name}.key"))


@dataclass(frozen=True)
class CertificateSet:
    """Everything the TLS tests use, made once per test module."""

    ca: Authority
    other_ca: Authority
    server: KeyPair
    expired: KeyPair
    other_ca_server: KeyPair
    wrong_host: KeyPair
    worker_client: KeyPair
    other_ca_client: KeyPair


def make_certificates(directory: Path) -> CertificateSet:
    ca = make_authority(directory, "scriptpool-test-ca")
    other = make_authority(directory, "another-ca")
    return CertificateSet(
        ca=ca,
        other_ca=other,
        server=issue(ca, directory, "server"),
        expired=issue(ca, directory, "expired-server", expired=True),
        other_ca_server=issue(other, directory, "other-ca-server"),
        wrong_host=issue(ca, directory, "wrong-host-server", hosts=("coordinator.example.com",)),
        worker_client=issue(ca, directory, "worker", hosts=(), client=True),
        other_ca_client=issue(other, directory, "other-ca-worker", hosts=(), client=True),
    )
