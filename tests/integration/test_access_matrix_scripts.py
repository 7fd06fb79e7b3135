"""The access matrix of the script globals (issue 18 item 7), in Lua, JavaScript and Python: a job
of each kind of principal reaches the owner's objects (session, artifact in it, its State, the
owner's event subscription and hook) through every global that takes an id, and each call gets its
verdict: the owner's own job is served; a job of an unrelated principal gets NOT_FOUND for every one
(and Event.unsubscribe / Hook.unregister remove nothing); a job of a principal the session is
shared with is served what its level allows (ADR 0021) and refused the rest. The calls a job is
refused run in a job of their own, and the owner then reads every object back unchanged. One job
per language and cell, each against a fresh world (tests/integration/matrix_world.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from tests.conftest import Stack

from .helpers import result_of
from .matrix_world import (
    GRANTED,
    READER,
    Callers,
    Column,
    Shape,
    build_world,
    callers,
    fingerprint,
    finished_job,
)
from .probes import SCRIPT_CALLS, script_answers

LANGUAGES = [Language.LUA, Language.JAVASCRIPT, Language.PYTHON]
CALLS = [(name, args.replace("'someone'", repr(READER))) for name, args in SCRIPT_CALLS]
"""Every id-taking global (the grants name READER, a principal that exists: grants need one)."""

NEEDS = {
    **dict.fromkeys(
        ["Session.get", "Session.getMetadata", "Session.getTags", "Session.getTimeline", "Artifact.get",
         "Artifact.getContent", "Artifact.list", "Artifact.query", "Artifact.findByType", "Artifact.findByTag",
         "Artifact.search", "Artifact.getPermissions", "Artifact.checkAccess", "State.get", "State.list"],
        "read",
    ),
    **dict.fromkeys(
        ["Session.updateMetadata", "Session.setTags", "Artifact.store", "Artifact.update", "State.set",
         "State.delete", "State.increment", "State.compareAndSet"],
        "write",
    ),
    **dict.fromkeys(["Session.suspend", "Session.resume", "Session.complete", "Artifact.delete"], "admin"),
}  # fmt: skip
"""What a grantee's job needs on the shared session for each global (ADR 0021); every other global
on it is the owner's alone (delete, save, load, replay and its metadata, setCurrent, a child session,
an artifact's own grants and audit log), and the owner's subscription is never shared."""
LEVELS = ("read", "write", "admin")
ON_ARTIFACTS = {"read": "read", "write": "write", "admin": "delete"}
"""The level a session grant gives on its artifacts."""

LAST = ["Session.suspend", "Session.resume", "Artifact.delete", "Session.complete", "Session.delete"]
"""In an allowed batch these go last, in this order (each would stop the calls after it)."""


def _ordered(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(calls, key=lambda call: LAST.index(call[0]) + 1 if call[0] in LAST else 0)


def allowed(column: Column, name: str) -> bool:
    if column is Column.OWNER:
        return True
    if column in GRANTED:
        need = NEEDS.get(name)
        return need is not None and LEVELS.index(GRANTED[column]) >= LEVELS.index(need)
    return False


def refusal(column: Column, name: str) -> str:
    """The code a refused global gets: NOT_FOUND without a grant (ADR 0017) or for what grants do not
    share, PERMISSION_DENIED for a grant too low."""
    if column in GRANTED and not name.startswith("Event."):
        return "PERMISSION_DENIED"
    return "NOT_FOUND"


@pytest.fixture(scope="module")
def who(stack: Stack, redis_client: Redis) -> Iterator[Callers]:
    with callers(stack, redis_client) as found:
        yield found


@pytest.fixture(scope="module")
def done_job(stack: Stack, who: Callers) -> str:
    return finished_job(stack, who.tokens[Column.OWNER])


SCRIPT_COLUMNS = [Column.OWNER, Column.STRANGER, *GRANTED]


@pytest.mark.parametrize("column", SCRIPT_COLUMNS, ids=lambda column: column.name.lower())
@pytest.mark.parametrize("language", LANGUAGES, ids=lambda language: language.value)
def test_a_job_reaches_the_owners_objects_through_its_globals(
    stack: Stack, who: Callers, done_job: str, language: Language, column: Column
) -> None:
    owner_key = who.tokens[Column.OWNER]
    mine = [call for call in CALLS if allowed(column, call[0])]
    not_mine = [call for call in CALLS if not allowed(column, call[0])]
    with ScriptpoolClient(stack.address, who.tokens[column]) as client:
        if not_mine:
            world = build_world(stack, who, done_job)
            try:
                before = fingerprint(stack, owner_key, world)
                answers = script_answers(client, language, world.ids, not_mine, ending=True)
                wanted = [[name, refusal(column, name)] for name, _ in not_mine]
                assert [row[:2] for row in answers[:-2]] == wanted
                assert [row[:2] for row in answers[-2:]] == [
                    ["Event.unsubscribe", "false"],
                    ["Hook.unregister", "false"],
                ]
                for name, code, message in answers[:-2]:
                    if code == "PERMISSION_DENIED":
                        level = GRANTED[column]
                        held = ON_ARTIFACTS[level] if name.startswith("Artifact.") else level
                        assert f"has {held}" in message, (name, message)
                assert fingerprint(stack, owner_key, world) == before, "a refused global changed the owner's objects"
            finally:
                world.close()
        if mine:
            world = build_world(stack, who, done_job, Shape(ran=True))
            try:
                answers = script_answers(client, language, world.ids, _ordered(mine), ending=column is Column.OWNER)
                served = {name: code for name, code, _ in answers}
                codes = dict.fromkeys((name for name, _ in mine), "OK")
                if column is Column.OWNER:
                    # (a script's Hook.* reach the job's own hooks only: a client's registration,
                    # even its own principal's, is not among them)
                    codes.update({"Event.unsubscribe": "true", "Hook.unregister": "false"})
                assert served == codes, [row for row in answers if row[1] != codes.get(row[0])]
            finally:
                world.close()


SEARCHES = {
    Language.LUA: """return {Session.list{tags = {"t"}}, Artifact.query{tags = {"t"}}, Artifact.search("", "hello"),
                             Hook.list()}""",
    Language.JAVASCRIPT: """[Session.list({tags: ["t"]}), Artifact.query({tags: ["t"]}), Artifact.search("", "hello"),
                            Hook.list()]""",
    Language.PYTHON: """[Session.list(tags=["t"]), Artifact.query({"tags": ["t"]}), Artifact.search("", "hello"),
                        Hook.list()]""",
}
"""The globals that search across the caller's sessions (and its hooks), with no id to refuse."""


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda language: language.value)
def test_a_jobs_searches_find_its_principals_objects_and_no_one_elses(
    stack: Stack, who: Callers, done_job: str, language: Language
) -> None:
    world = build_world(stack, who, done_job)
    try:
        found = {}
        for column in (Column.OWNER, Column.STRANGER):
            with ScriptpoolClient(stack.address, who.tokens[column]) as client:
                job = client.run(language, SEARCHES[language], timeout=60)
                found[column] = str(result_of(job))
        mine = (world.ids["session"], world.ids["artifact"])
        assert all(object_id in found[Column.OWNER] for object_id in mine), found[Column.OWNER]
        assert not any(object_id in found[Column.STRANGER] for object_id in world.ids.values())
    finally:
        world.close()
