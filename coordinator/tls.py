"""The coordinator's TLS: server credentials from `Settings.tls_cert/tls_key/tls_client_ca`, each
file checked first so that a bad one stops the start with one line naming it (exit 2), never a
gRPC log line or a server that binds and then fails every handshake (docs/adr/0018-tls.md)."""

from __future__ import annotations

import ssl

import grpc

from scriptpool.coordinator.settings import Settings
from scriptpool.errors import InvalidArgument
from scriptpool.tls import check_key_pair, is_plaintext_address, read_pem


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None without `tls_cert` (plaintext); else TLS credentials, requiring a client certificate
    signed by `tls_client_ca` when it is set."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    chain = read_pem(settings.tls_cert, "TLS certificate")
    key = read_pem(settings.tls_key, "TLS key")
    check_key_pair(settings.tls_cert, settings.tls_key)
    client_roots = None
    if settings.tls_client_ca is not None:
        client_roots = read_pem(settings.tls_client_ca, "TLS client CA")
        try:
            ssl.create_default_context(cadata=client_roots.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise InvalidArgument(f"TLS client CA {settings.tls_client_ca} holds no usable PEM certificate") from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_roots, require_client_auth=client_roots is not None
    )


def add_port(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `address`: TLS with `credentials` unless it is a Unix socket (served in plaintext to
    this host's workers). The bound port, or 0."""
    if credentials is None or is_plaintext_address(address):
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
