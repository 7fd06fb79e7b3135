"""`scriptpool artifact ...` against the real stack: local files in and out, streamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.main import main
from tests.conftest import Stack


@pytest.fixture
def cli(stack: Stack, capsys: pytest.CaptureFixture[str]) -> object:
    def run(key: str, *args: str) -> tuple[int, str, str]:
        code = main(["artifact", "--coordinator", stack.address, "--api-key", key, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_put_get_ls_grant_revoke_audit_rm(
    cli: object, client: ScriptpoolClient, principal_and_key: tuple[str, str], stack: Stack, tmp_path: Path
) -> None:
    assert callable(cli)
    key = principal_and_key[1]
    friend, friend_key = stack.new_api_key()
    session_id = client.create_session("cli").id
    source = tmp_path / "data.bin"
    content = os.urandom(9 * 1024 * 1024 + 17)  # large enough for the progress indicator
    source.write_bytes(content)
    code, out, err = cli(key, "put", "--session", session_id, str(source), "--tag", "raw", "--type", "data")
    assert code == 0 and "sent" in err and "100%" in err
    artifact_id = out.strip()
    target = tmp_path / "copy.bin"
    code, _, err = cli(key, "get", "--session", session_id, artifact_id, "-o", str(target))
    assert code == 0 and target.read_bytes() == content and "received" in err
    small = tmp_path / "small.txt"
    small.write_text("second version")
    code, out, _ = cli(key, "put", "--session", session_id, str(small), "--name", "data.bin", "--json")
    assert json.loads(out)["version"] == 2 and json.loads(out)["id"] == artifact_id
    code, _, _ = cli(key, "get", "--session", session_id, artifact_id, "-o", str(target), "--version", "1")
    assert target.read_bytes() == content
    code, out, _ = cli(key, "ls", "--session", session_id)
    assert artifact_id in out and "data.bin" in out and "VER" in out
    code, out, _ = cli(key, "ls", "--session", session_id, "--json")
    assert json.loads(out)[0]["metadata"]["tags"] == [] and json.loads(out)[0]["version"] == 2
    code, _, err = cli(friend_key, "get", "--session", session_id, artifact_id, "-o", str(tmp_path / "no"))
    assert code == 2 and "NOT_FOUND" in err and not (tmp_path / "no").exists()  # a stranger learns nothing
    code, out, _ = cli(key, "grant", "--session", session_id, artifact_id, friend, "read")
    assert code == 0 and f"{friend}\tread" in out
    code, _, _ = cli(friend_key, "get", "--session", session_id, artifact_id, "-o", str(tmp_path / "yes"))
    assert code == 0 and (tmp_path / "yes").read_text() == "second version"
    code, _, err = cli(friend_key, "rm", "--session", session_id, artifact_id)
    assert code == 2 and "PERMISSION_DENIED" in err  # a reader may not delete: denied, and audited
    code, out, _ = cli(key, "revoke", "--session", session_id, artifact_id, friend, "read", "--json")
    assert friend not in json.loads(out)["grants"]
    code, out, _ = cli(key, "audit", "--session", session_id, artifact_id)
    assert "PERMISSION_DENIED" not in out and " NO " in out and "grant" in out
    code, out, _ = cli(key, "audit", "--session", session_id, artifact_id, "--json")
    assert [e["allowed"] for e in json.loads(out)].count(False) == 1
    code, out, _ = cli(key, "rm", "--session", session_id, artifact_id)
    assert out.strip() == f"deleted {artifact_id}"
    code, _, err = cli(key, "get", "--session", session_id, artifact_id, "-o", str(target))
    assert code == 2 and "NOT_FOUND" in err
    code, _, err = cli(key, "put", "--session", session_id, str(tmp_path / "missing"))
    assert code == 2 and "cannot read" in err
