"""TLS to the coordinator, for every side that dials it: the SDK, the CLI and the workers.

`ClientTls` says how to dial: plaintext (the default, for `scriptpool up`'s local stack), TLS
verified against a CA file (`ca`), or TLS verified against the system roots (`system_roots`),
optionally presenting a client certificate (mutual TLS, when the coordinator runs with
`--tls-client-ca`). The server certificate is always verified, host name included: there is no
"insecure" mode. A `unix:` address is always dialled in plaintext: the coordinator serves its Unix
sockets without TLS (docs/adr/0018-tls.md; the socket's file permissions guard it).

The files are read and checked here, once, with the standard library's `ssl` (a missing file, a
certificate that is not PEM, a key that does not match its certificate): an `InvalidArgument`
naming the file, never a gRPC log line at the first call.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from scriptpool.errors import InvalidArgument

__all__ = ["ClientTls", "is_plaintext_address", "open_channel", "read_pem", "tls_failure_reason"]

CA_VARIABLE = "SCRIPTPOOL_TLS_CA"
SYSTEM_ROOTS_VARIABLE = "SCRIPTPOOL_TLS"
CLIENT_CERT_VARIABLE = "SCRIPTPOOL_TLS_CLIENT_CERT"
CLIENT_KEY_VARIABLE = "SCRIPTPOOL_TLS_CLIENT_KEY"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientTls:
    ca: Path | None = None
    """PEM file of the CA(s) the coordinator's certificate must chain to (SCRIPTPOOL_TLS_CA, --tls-ca)."""
    system_roots: bool = False
    """TLS verified against the system's roots instead of `ca` (SCRIPTPOOL_TLS=1, --tls)."""
    client_cert: Path | None = None
    """PEM certificate presented to a coordinator that requires client certificates
    (SCRIPTPOOL_TLS_CLIENT_CERT); needs `client_key`."""
    client_key: Path | None = None
    """PEM private key of `client_cert` (SCRIPTPOOL_TLS_CLIENT_KEY)."""

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise InvalidArgument(
                f"a TLS client certificate needs both {CLIENT_CERT_VARIABLE} and {CLIENT_KEY_VARIABLE}"
            )
        if self.client_cert is not None and not self.enabled:
            raise InvalidArgument(
                f"a TLS client certificate needs TLS: set {CA_VARIABLE} (or {SYSTEM_ROOTS_VARIABLE}=1 for system roots)"
            )

    @property
    def enabled(self) -> bool:
        return self.ca is not None or self.system_roots

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientTls:
        """From SCRIPTPOOL_TLS_CA, SCRIPTPOOL_TLS, SCRIPTPOOL_TLS_CLIENT_CERT and SCRIPTPOOL_TLS_CLIENT_KEY."""
        system = env.get(SYSTEM_ROOTS_VARIABLE, "").strip().lower()
        if system not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise InvalidArgument(f"{SYSTEM_ROOTS_VARIABLE} must be 1 or 0 (got {system!r})")
        return cls(
            ca=_path(env.get(CA_VARIABLE)),
            system_roots=system in ("1", "true", "yes", "on"),
            client_cert=_path(env.get(CLIENT_CERT_VARIABLE)),
            client_key=_path(env.get(CLIENT_KEY_VARIABLE)),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials, after checking every file (InvalidArgument naming the bad one)."""
        roots = None
        if self.ca is not None:
            roots = read_pem(self.ca, "TLS CA")
            try:
                ssl.create_default_context(cadata=roots.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise InvalidArgument(f"TLS CA {self.ca} holds no usable PEM certificate ({_reason(exc)})") from None
        cert = key = None
        if self.client_cert is not None and self.client_key is not None:
            cert = read_pem(self.client_cert, "TLS client certificate")
            key = read_pem(self.client_key, "TLS client key")
            check_key_pair(self.client_cert, self.client_key)
        return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)


def _path(raw: str | None) -> Path | None:
    return Path(raw) if raw and raw.strip() else None


def read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"{what} {path} is not a PEM file")
    return data


def check_key_pair(cert: Path, key: Path) -> None:
    """InvalidArgument unless `key` is the private key of the PEM certificate `cert`."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise InvalidArgument(f"TLS key {key} does not match the certificate {cert}") from None
        raise InvalidArgument(f"TLS certificate {cert} or key {key} is not usable ({_reason(exc)})") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read TLS certificate {cert} or key {key}: {exc.strerror}") from None


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).strip() or type(exc).__name__


def is_plaintext_address(address: str) -> bool:
    """A Unix socket: served, and so dialled, without TLS."""
    return address.startswith(("unix:", "unix-abstract:"))


def open_channel(address: str, tls: ClientTls | None, options: Sequence[tuple[str, int | str]] = ()) -> grpc.Channel:
    """A channel to the coordinator at `address`: TLS when `tls` is enabled and the address is not
    a Unix socket, plaintext otherwise."""
    if tls is None or not tls.enabled or is_plaintext_address(address):
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=list(options))


# What gRPC's details say when a TLS handshake failed (from the C core; stable across 1.5x-1.8x).
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)")
_HANDSHAKE = re.compile(
    r"(?:Tls|Ssl) handshake failed[^:]*: (?:SSL_ERROR_SSL: )?(?:error:[0-9a-f]+:[^:]*:[^:]*:)?([^:]+)"
)
_EXPLAINED = {
    "certificate has expired": "the coordinator's certificate has expired",
    "certificate is not yet valid": "the coordinator's certificate is not valid yet",
    "unable to get local issuer certificate": "the coordinator's certificate is not signed by a CA the client trusts",
    "self signed certificate": "the coordinator's certificate is self-signed and not trusted by the client",
    "self-signed certificate": "the coordinator's certificate is self-signed and not trusted by the client",
}


def tls_failure_reason(details: str) -> str | None:
    """Why the TLS handshake failed, in a person's words, if `details` (a failed call's) says it did."""
    if "Hostname Verification Check failed" in details or "Peer name" in details:
        return "the coordinator's certificate is not for the host name dialled (check its subjectAltName)"
    verify = _VERIFY_FAILED.search(details)
    if verify:
        reason = verify.group(1).strip()
        return _EXPLAINED.get(reason, f"the coordinator's certificate was refused: {reason}")
    handshake = _HANDSHAKE.search(details)
    if handshake:
        return f"TLS handshake failed: {handshake.group(1).strip()}"
    return None
