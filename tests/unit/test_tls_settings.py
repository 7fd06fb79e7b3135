"""TLS settings are read from the environment at the edge and checked together (docs/adr/0018-tls.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scriptpool.coordinator.settings import Settings
from scriptpool.errors import InvalidArgument, TlsFailed, Unavailable
from scriptpool.grpc_errors import from_rpc_error
from scriptpool.tls import ClientTls, tls_failure_reason


def test_the_coordinator_reads_its_tls_files_and_the_clients_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in {
        "SCRIPTPOOL_TLS_CERT": "/etc/sp/server.crt", "SCRIPTPOOL_TLS_KEY": "/etc/sp/server.key",
        "SCRIPTPOOL_TLS_CLIENT_CA": "/etc/sp/clients.crt", "SCRIPTPOOL_TLS_CA": "/etc/sp/ca.crt",
        "SCRIPTPOOL_TLS_CLIENT_CERT": "/etc/sp/me.crt", "SCRIPTPOOL_TLS_CLIENT_KEY": "/etc/sp/me.key",
    }.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    settings = Settings.from_env()
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (
        Path("/etc/sp/server.crt"), Path("/etc/sp/server.key"), Path("/etc/sp/clients.crt"),
    )  # fmt: skip
    assert settings.client_tls == ClientTls(
        ca=Path("/etc/sp/ca.crt"), client_cert=Path("/etc/sp/me.crt"), client_key=Path("/etc/sp/me.key")
    )
    assert settings.tls_variables()["SCRIPTPOOL_TLS_CLIENT_CA"] == "/etc/sp/clients.crt"


def test_plaintext_is_the_default_and_tls_files_come_in_pairs() -> None:
    assert Settings().tls_cert is None and not Settings().client_tls.enabled
    with pytest.raises(InvalidArgument, match="both a certificate and its key"):
        Settings(tls_cert=Path("server.crt"))
    with pytest.raises(InvalidArgument, match="needs TLS"):
        Settings(tls_client_ca=Path("clients.crt"))
    with pytest.raises(InvalidArgument, match="needs TLS"):
        ClientTls(client_cert=Path("me.crt"), client_key=Path("me.key"))
    with pytest.raises(InvalidArgument, match="SCRIPTPOOL_TLS must be 1 or 0"):
        ClientTls.from_env({"SCRIPTPOOL_TLS": "maybe"})
    assert ClientTls.from_env({"SCRIPTPOOL_TLS": "1"}).system_roots


class _Failed:
    """What a failed call offers `from_rpc_error`: a code and details."""

    def __init__(self, details: str) -> None:
        self._details = details

    def code(self) -> object:
        import grpc

        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
         "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has expired: OK", "has expired"),
        ("Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
         "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate", "not signed by a CA the client trusts"),
        ("Custom verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed.",
         "not for the host name"),
    ],
)  # fmt: skip
def test_a_failed_handshake_maps_to_tls_failed_in_one_place(details: str, reason: str) -> None:
    assert reason in (tls_failure_reason(details) or "")
    error = from_rpc_error(_Failed(f"failed to connect to all addresses; last error: UNKNOWN: {details}"))  # type: ignore[arg-type]
    assert isinstance(error, TlsFailed) and isinstance(error, Unavailable) and reason in error.message


def test_an_ordinary_outage_is_not_a_tls_failure() -> None:
    error = from_rpc_error(_Failed("failed to connect to all addresses; last error: UNAVAILABLE: Connection refused"))  # type: ignore[arg-type]
    assert type(error) is Unavailable
