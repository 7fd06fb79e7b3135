"""Every Artifact operation from JavaScript and Python (Lua: tests/integration/test_artifacts.py),
through the real stack; both scripts return the same summary, so one expected value checks both."""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from tests.conftest import Stack

from .helpers import result_of

JS = """
const id = Artifact.store("", {content: "hello world", type: "text",
                               metadata: {name: "greeting.txt", description: "a greeting", tags: ["t1"]}});
const positional = Artifact.store("", "data", "pos.bin", new Uint8Array([0, 255, 7]), {tags: ["t2"]});
const a = Artifact.get("", id);
const bin = Artifact.getContent("", positional);
const upd = Artifact.update("", id, "hello again");
const v1 = Artifact.get("", id, 1);
const big = Artifact.store("", {content: "x".repeat(200000), type: "text", metadata: {name: "big.txt"}});
const lazy = Artifact.get("", big);
const lazyBefore = "value" in Object.getOwnPropertyDescriptor(lazy, "content");  // a getter until read
Artifact.grantPermission("", id, "bob", "read");
const perms = Artifact.getPermissions("", id);
const canRead = Artifact.checkAccess("", id, "bob", "read");
Artifact.revokePermission("", id, "bob", "read");
const canAfter = Artifact.checkAccess("", id, "bob", "read");
const audit = Artifact.getAuditLog("", id);
const summary = {
  stored_is_str: typeof id === "string" && typeof positional === "string",
  name: a.metadata.name, type: a.type, size: a.size, version: a.version, content: a.content,
  hash_len: a.content_hash.length, has_times: a.created_at_unix > 0 && a.updated_at_unix >= a.created_at_unix
    && a.created_at.endsWith("+00:00"),
  session_ok: a.session_id.length === 36,
  binary: Array.from(bin), updated_version: Artifact.get("", upd).version, v1_content: v1.content,
  listed: Artifact.list("").length, query: Artifact.query({type: "text"}).length,
  by_type: Artifact.findByType("", "data").length, by_tag: Artifact.findByTag("", "t1").length,
  search: Artifact.search("", "greeting").length, granted: perms.grants.bob || null,
  check: canRead, check_after_revoke: canAfter, audit_nonempty: audit.length > 0,
  lazy_before: lazyBefore, lazy_size: lazy.content.length,
};
Artifact.delete("", positional);
try { Artifact.get("", positional); summary.deleted = null; } catch (e) { summary.deleted = e.code; }
summary
"""

PY = """
aid = Artifact.store("", {"content": "hello world", "type": "text",
                          "metadata": {"name": "greeting.txt", "description": "a greeting", "tags": ["t1"]}})
positional = Artifact.store("", "data", "pos.bin", bytes([0, 255, 7]), {"tags": ["t2"]})
a = Artifact.get("", aid)
binary = Artifact.get_content("", positional)
upd = Artifact.update("", aid, "hello again")
v1 = Artifact.get("", aid, 1)
big = Artifact.store("", {"content": "x" * 200000, "type": "text", "metadata": {"name": "big.txt"}})
lazy = Artifact.get("", big)
lazy_before = "content" in lazy
Artifact.grant_permission("", aid, "bob", "read")
perms = Artifact.getPermissions("", aid)
can_read = Artifact.checkAccess("", aid, "bob", "read")
Artifact.revokePermission("", aid, "bob", "read")
can_after = Artifact.check_access("", aid, "bob", "read")
audit = Artifact.getAuditLog("", aid)
summary = {
    "stored_is_str": isinstance(aid, str) and isinstance(positional, str),
    "name": a.metadata["name"], "type": a.type, "size": a.size, "version": a.version, "content": a.content,
    "hash_len": len(a.content_hash), "has_times": a.created_at_unix > 0 and a.updated_at_unix >= a.created_at_unix
    and a.created_at.endswith("+00:00"),
    "session_ok": len(a.session_id) == 36,
    "binary": list(binary), "updated_version": Artifact.get("", upd).version, "v1_content": v1["content"],
    "listed": len(Artifact.list("")), "query": len(Artifact.query({"type": "text"})),
    "by_type": len(Artifact.find_by_type("", "data")), "by_tag": len(Artifact.findByTag("", "t1")),
    "search": len(Artifact.search("", "greeting")), "granted": perms["grants"].get("bob"),
    "check": can_read, "check_after_revoke": can_after, "audit_nonempty": len(audit) > 0,
    "lazy_before": lazy_before, "lazy_size": len(lazy.content),
}
Artifact.delete("", positional)
try:
    Artifact.get("", positional)
    summary["deleted"] = None
except ScriptpoolError as e:
    summary["deleted"] = e.code
summary
"""

EXPECTED = {
    "stored_is_str": True,
    "name": "greeting.txt",
    "type": "text",
    "size": 11,
    "version": 1,
    "content": "hello world",
    "hash_len": 64,
    "has_times": True,
    "session_ok": True,
    "binary": [0, 255, 7],
    "updated_version": 2,
    "v1_content": "hello world",
    "listed": 3,
    "query": 2,
    "by_type": 1,
    "by_tag": 1,
    "search": 1,
    "granted": "read",
    "check": True,
    "check_after_revoke": False,
    "audit_nonempty": True,
    "lazy_before": False,
    "lazy_size": 200000,
    "deleted": "NOT_FOUND",
}


@pytest.mark.parametrize(("language", "source"), [(Language.JAVASCRIPT, JS), (Language.PYTHON, PY)])
def test_every_artifact_operation(client: ScriptpoolClient, language: Language, source: str, stack: Stack) -> None:
    stack.new_api_key("bob")  # a grant names a principal that exists
    assert result_of(client.run(language, source, timeout=60)) == EXPECTED


def test_lua_reads_large_content_lazily(client: ScriptpoolClient) -> None:
    source = """
    local id = Artifact.store('', {content = string.rep('y', 100000), type = 'text', metadata = {name = 'l'}})
    local a = Artifact.get('', id)
    local before = rawget(a, 'content') == nil
    return {before, #a.content, a.size}
    """
    assert result_of(client.run(Language.LUA, source, timeout=60)) == [True, 100000, 100000]
