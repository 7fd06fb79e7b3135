"""`scriptpool session ...` against the real stack."""

from __future__ import annotations

import json

import pytest

from scriptpool.coordinator.cli.main import main
from tests.conftest import Stack


@pytest.fixture
def cli(stack: Stack, principal_and_key: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> object:
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["session", "--coordinator", stack.address, "--api-key", principal_and_key[1], *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_session_commands_mirror_the_api(cli: object) -> None:
    assert callable(cli)
    code, out, _ = cli("create", "--name", "cli", "--tag", "a", "--metadata", '{"k": 1}')
    assert code == 0
    session_id = out.strip()
    code, out, _ = cli("get", session_id, "--json")
    assert json.loads(out)["metadata"] == {"k": 1}
    code, out, _ = cli("suspend", session_id)
    assert "suspended" in out
    code, out, err = cli("suspend", session_id)
    assert code == 2 and "FAILED_PRECONDITION" in err and "needs active" in err
    assert cli("resume", session_id)[0] == 0
    code, out, _ = cli("save", session_id)
    assert out.strip() == "saved snapshot 1"
    code, out, _ = cli("complete", session_id, "--json")
    assert json.loads(out)["state"] == "completed"
    code, out, _ = cli("load", session_id)
    assert "active" in out
    code, out, _ = cli("list", "--tag", "a")
    assert session_id in out and "STATE" in out
    code, out, _ = cli("list", "--state", "completed", "--json")
    assert json.loads(out) == []
    code, out, _ = cli("timeline", session_id)
    assert "session.state_changed" in out and "session.saved" in out
    code, out, _ = cli("timeline", session_id, "--json", "--limit", "2")
    page = json.loads(out)
    assert len(page["entries"]) == 2 and page["next_after"]
    code, out, err = cli("replay", session_id)
    assert code == 2 and "no finished jobs" in err
    code, out, _ = cli("delete", session_id)
    assert out.strip() == f"deleted {session_id}"
    code, _, err = cli("get", session_id)
    assert code == 2 and "NOT_FOUND" in err


def test_session_list_says_when_more_remain_and_goes_on_from_the_cursor(cli: object) -> None:
    assert callable(cli)
    tag = "cli-page-" + str(id(cli))
    ids = {cli("create", "--name", f"p{i}", "--tag", tag)[1].strip() for i in range(3)}
    code, out, err = cli("list", "--tag", tag, "--limit", "2", "--json")
    first = json.loads(out)
    assert code == 0 and len(first) == 2 and "more sessions remain: pass --cursor " in err
    # --json shows the script shape: status/custom_metadata and ISO-8601 times with *_unix seconds
    assert first[0]["status"] == first[0]["state"] == "active"
    assert first[0]["created_at"].endswith("+00:00") and isinstance(first[0]["created_at_unix"], float)
    cursor = err.rsplit(" ", 1)[1].strip()
    code, out, err = cli("list", "--tag", tag, "--limit", "2", "--json", "--cursor", cursor)
    rest = json.loads(out)
    assert code == 0 and len(rest) == 1 and err == ""
    assert {s["id"] for s in first + rest} == ids
