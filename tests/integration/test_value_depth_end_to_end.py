"""A value of exactly MAX_DEPTH levels goes everywhere a value goes; one more is refused clearly.

Before, a list 49 levels deep (legal: the limit said 64) returned by a script ended the job as
`sandbox_violation`: the worker could not parse the child's frame. Now every hop carries MAX_DEPTH
(tests/unit/test_value_depth.py) and one level more is a clear error: a script error naming the
limit for a returned value, INVALID_ARGUMENT (catchable) for a call's argument.
"""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.values import MAX_DEPTH

from .helpers import outcome, result_of

DEEP = {
    Language.LUA: "local function deep(n) local v = 1 for i = 1, n do v = {k = v} end return v end\n",
    Language.JAVASCRIPT: "function deep(n) { let v = 1; for (let i = 0; i < n; i++) v = {k: v}; return v; }\n",
    Language.PYTHON: "def deep(n):\n    v = 1\n    for _ in range(n):\n        v = {'k': v}\n    return v\n",
}
RETURN = {Language.LUA: "return deep({n})", Language.JAVASCRIPT: "deep({n})", Language.PYTHON: "deep({n})"}
# Global calls with a value argument: each returns "OK" or the refusal's code.
CALLS = {
    Language.LUA: """
local codes = {{}}
for name, call in pairs({{
  state = function() State.set("global", "deep", deep({n})) end,
  event = function() Event.emit("deep.value", deep({n})) end,
}}) do
  local ok, err = pcall(call)
  codes[name] = ok and "OK" or (type(err) == "table" and err.code or tostring(err))
end
return codes""",
    Language.JAVASCRIPT: """
const codes = {{}};
const calls = {{state: () => State.set("global", "deep", deep({n})), event: () => Event.emit("deep.value", deep({n}))}};
for (const name of Object.keys(calls)) {{
  try {{ calls[name](); codes[name] = "OK"; }} catch (e) {{ codes[name] = e.code || String(e); }}
}}
codes""",
    Language.PYTHON: """
codes = {{}}
for name, call in (("state", lambda: State.set("global", "deep", deep({n}))),
                   ("event", lambda: Event.emit("deep.value", deep({n})))):
    try:
        call()
        codes[name] = "OK"
    except ScriptpoolError as e:
        codes[name] = e.code
codes""",
}
LANGUAGES = [Language.LUA, Language.JAVASCRIPT, Language.PYTHON]


def _expected(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda lang: lang.value)
def test_a_returned_value_of_max_depth_comes_back_and_one_more_is_a_clear_error(
    client: ScriptpoolClient, language: Language
) -> None:
    job = client.run(language, DEEP[language] + RETURN[language].format(n=MAX_DEPTH), timeout=60)
    assert result_of(job) == _expected(MAX_DEPTH)
    job = client.run(language, DEEP[language] + RETURN[language].format(n=MAX_DEPTH + 1), timeout=60)
    assert outcome(job) is Outcome.SCRIPT_ERROR, job.result.message
    assert f"nested deeper than {MAX_DEPTH} levels" in job.result.message


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda lang: lang.value)
def test_call_arguments_of_max_depth_pass_and_one_more_is_invalid_argument(
    client: ScriptpoolClient, language: Language
) -> None:
    job = client.run(language, DEEP[language] + CALLS[language].format(n=MAX_DEPTH), timeout=60)
    assert result_of(job) == {"state": "OK", "event": "OK"}
    assert client.state_get("global", "deep") == _expected(MAX_DEPTH) if hasattr(client, "state_get") else True
    job = client.run(language, DEEP[language] + CALLS[language].format(n=MAX_DEPTH + 1), timeout=60)
    assert result_of(job) == {"state": "INVALID_ARGUMENT", "event": "INVALID_ARGUMENT"}
