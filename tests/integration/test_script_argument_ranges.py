"""Every integer a script passes to a global operation is range-checked into INVALID_ARGUMENT.

A `uint32` field given 2^32 made protobuf raise ValueError in the worker while it built the request,
and the job ended `internal_error`. Now each out-of-range, negative, fractional, NaN or infinite
number is refused with a message naming the argument and its range (the job goes on), and no host
exception text reaches the script.
"""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.values import PlainValue

from .helpers import outcome, result_of, run_lua

# Each case: a Lua call (inside pcall) that must be refused with INVALID_ARGUMENT.
LUA_REFUSED = {
    "list limit 2^32": "Session.list, {limit = 4294967296}",
    "list limit maxinteger": "Session.list, {limit = math.maxinteger}",
    "list limit -1": "Session.list, {limit = -1}",
    "list limit 1.5": "Session.list, {limit = 1.5}",
    "list limit nan": "Session.list, {limit = 0/0}",
    "list limit inf": "Session.list, {limit = 1/0}",
    "timeline limit 2^32": "Session.getTimeline, nil, {limit = 4294967296}",
    "timeline limit -inf": "Session.getTimeline, nil, {limit = -1/0}",
    "restoreRecent 2^32": "Session.restoreRecent, 4294967296",
    "restoreRecent -1": "Session.restoreRecent, -1",
    "restoreRecent nan": "Session.restoreRecent, 0/0",
    "load snapshot -1": "Session.load, nil, -1",
    "load snapshot inf": "Session.load, nil, 1/0",
    "replay speed nan": "Session.replay, nil, {speed = 0/0}",
    "replay speed inf": "Session.replay, nil, {speed = 1/0}",
    "artifact query limit 2^32": "Artifact.query, {limit = 4294967296}",
    "artifact query min_size -1": "Artifact.query, {min_size = -1}",
    "receive timeout nan": "Event.receive, sub, 0/0",
    "list created_after nan": "Session.list, {created_after = 0/0}",
    "list updated_before -inf": "Session.list, {updated_before = -1/0}",
    "artifact query created_after inf": "Artifact.query, {created_after = 1/0}",
    "receive timeout inf": "Event.receive, sub, 1/0",
}

LUA_TEMPLATE = """
local sub = Event.subscribe("nothing.*")
local cases = {
%s
}
local codes, messages = {}, {}
for name, call in pairs(cases) do
  local ok, err = pcall(table.unpack(call))
  codes[name] = ok and "OK" or err.code
  messages[name] = ok and "" or err.message
end
local ok1, at_edge_list = pcall(Session.list, {limit = 4294967295})
local ok2, at_edge_timeline = pcall(Session.getTimeline, nil, {limit = 4294967295})
return {codes = codes, messages = messages,
        edge = {ok1 and "OK" or at_edge_list.message, ok2 and "OK" or at_edge_timeline.message}}
"""

HOST_WORDS = ("ValueError", "OverflowError", "TypeError", "Traceback", "out of range for uint32", "Value out of range")


def _lua_source() -> str:
    return LUA_TEMPLATE % ",\n".join(f"  [{name!r}] = {{{call}}}" for name, call in LUA_REFUSED.items())


def test_every_out_of_range_integer_from_lua_is_invalid_argument(client: ScriptpoolClient) -> None:
    session = client.create_session(name="ranges")
    job = run_lua(client, _lua_source(), session_id=session.id)
    result = result_of(job)  # the job itself ends ok: each refusal was catchable
    assert isinstance(result, dict)
    codes, messages = result["codes"], result["messages"]
    assert isinstance(codes, dict) and isinstance(messages, dict)
    assert codes == dict.fromkeys(LUA_REFUSED, "INVALID_ARGUMENT")
    for name, message in messages.items():
        assert isinstance(message, str)
        assert not any(word in message for word in HOST_WORDS), (name, message)
    assert "must be an integer from 0 to 4294967295 (got 4294967296)" in str(messages["list limit 2^32"])
    # The largest uint32 passes the worker's check and reaches the coordinator (whose page maximum is lower).
    edge = result["edge"]
    assert isinstance(edge, list)
    assert all(answer == "OK" or "maximum" in str(answer) and "4294967295" in str(answer) for answer in edge), edge


@pytest.mark.parametrize(
    ("language", "source"),
    [
        (
            Language.JAVASCRIPT,
            "let r; try { Session.list({limit: 4294967296}); r = 'OK'; } catch (e) { r = [e.code, e.message]; } r",
        ),
        (
            Language.PYTHON,
            "try:\n    Session.restoreRecent(2**32)\n    r = 'OK'\nexcept ScriptpoolError as e:\n"
            "    r = [e.code, e.message]\nr",
        ),
    ],
    ids=["javascript", "python"],
)
def test_uint32_overflow_from_js_and_python_is_invalid_argument(
    client: ScriptpoolClient, language: Language, source: str
) -> None:
    result: PlainValue = result_of(client.run(language, source, timeout=60))
    assert isinstance(result, list)
    assert result[0] == "INVALID_ARGUMENT"
    assert "must be an integer from 0 to 4294967295" in str(result[1])


def test_a_lone_surrogate_from_python_is_a_clean_refusal(client: ScriptpoolClient) -> None:
    """Python strings may hold lone surrogates, which are not Unicode text: passing one to a call was
    a script_error, returning one an internal_error naming UnicodeEncodeError."""
    source = (
        "try:\n    Session.create(name='\\ud800')\n    r = 'OK'\nexcept ScriptpoolError as e:\n"
        "    r = [e.code, e.message]\nr"
    )
    message = "a string holds a lone surrogate (it is not Unicode text): pass bytes instead"
    assert result_of(client.run(Language.PYTHON, source, timeout=60)) == ["INVALID_ARGUMENT", message]
    for returned in ("'\\ud800'", "{'\\ud800': 1}"):
        job = client.run(Language.PYTHON, returned, timeout=60)
        assert outcome(job) is Outcome.SCRIPT_ERROR
        assert job.result.message == f"the script's result cannot be returned: {message}"
