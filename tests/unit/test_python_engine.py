"""The restricted Python engine in-process (no fork, no jail): the language layer of the sandbox."""

from __future__ import annotations

import sys

import pytest

from scriptpool.errors import NotFound
from scriptpool.languages import Language
from scriptpool.sandbox.engines.python import prewarm
from scriptpool.sandbox.errors import CallLimitExceeded, CpuTimeExceeded, MemoryExceeded, OutputExceeded, ScriptError
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.values import PlainValue

MIB = 1024 * 1024


class RecordingHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []
        self.tags: list[PlainValue] = ["a"]

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        if op == "Session.get" and args[0] == "missing":
            raise NotFound(f"session {args[0]!s} not found")
        if op in ("Session.get", "Session.list"):
            record: dict[str, PlainValue] = {
                "id": "s1",
                "name": "n",
                "tags": ["a"],
                "state": "active",
                "metadata": {"k": 1},
            }
            return record if op == "Session.get" else {"items": [record], "next_cursor": None}
        if op == "Session.getTags":
            return list(self.tags)
        if op == "Session.setTags":
            assert isinstance(args[1], list)
            self.tags = list(args[1])
            return args[1]
        return {"echo": args}


def run(
    source: str, host: RecordingHost | None = None, inputs: dict[str, PlainValue] | None = None, **limits: int
) -> tuple[PlainValue, str]:
    return run_with(source, host, inputs, limits)


def run_with(
    source: str, host: RecordingHost | None, inputs: dict[str, PlainValue] | None, limits: dict[str, int]
) -> tuple[PlainValue, str]:
    out = OutputSink(limits.get("output_bytes", 10_000))
    job = ScriptJob(language=Language.PYTHON, source=source, limits=JobLimits(**limits), inputs=inputs or {})
    return runner_for(Language.PYTHON).run(job, host or RecordingHost(), out), out.text()


def script_error(source: str, **limits: int) -> ScriptError:
    with pytest.raises(ScriptError) as caught:
        run_with(source, None, None, limits)
    return caught.value


# ------------------------------------------------------------------ results and values


def test_the_result_is_the_last_expression_statement() -> None:
    assert run("x = 20\nx + 22") == (42, "")
    assert run("x = 1") == (None, "")  # no trailing expression: no result
    assert run("def f():\n    return 1\nif True:\n    f()") == (None, "")  # only a top-level expression counts


def test_values_cross_with_their_types_and_keywords_are_the_options_map() -> None:
    host = RecordingHost()
    source = 'Session.create(name="n", tags=["a", "b"], metadata={"x": 1, "y": 1.5, "z": {}, "b": b"\\x00"})'
    result, _ = run(source, host)
    sent: PlainValue = {"name": "n", "tags": ["a", "b"], "metadata": {"x": 1, "y": 1.5, "z": {}, "b": b"\x00"}}
    assert host.calls == [("Session.create", [sent])]
    assert result == {"echo": [sent]}
    host = RecordingHost()
    run('State.set("global", "k", (1, 2.0, None, True))', host)
    assert host.calls == [("State.set", ["global", "k", [1, 2.0, None, True]])]


def test_bytes_stay_bytes_and_tuples_become_lists() -> None:
    assert run("(b'\\xff\\x00', 'text', (1, [2]))")[0] == [b"\xff\x00", "text", [1, [2]]]


def test_inputs_are_a_copy_the_script_may_change() -> None:
    inputs: dict[str, PlainValue] = {"items": [1, 2]}
    result, _ = run("INPUT['items'].append(3)\nINPUT", inputs=inputs)
    assert result == {"items": [1, 2, 3]}
    assert inputs == {"items": [1, 2]}


def test_snake_case_aliases_exist() -> None:
    host = RecordingHost()
    run("Session.get_current()\nSession.set_current('x')\nState.list_keys('global')\nEvent.publish('e', 1)", host)
    assert [op for op, _ in host.calls] == ["Session.getCurrent", "Session.setCurrent", "State.list", "Event.emit"]


@pytest.mark.parametrize(
    ("source", "what"),
    [("{1, 2}", "a set cannot be"), ("len", "cannot be"), ("x = []\nx.append(x)\nx", "contains itself"),
     ("{1: 'a'}", "map keys must be strings"), ("import json\njson", "a module cannot be")],
)  # fmt: skip
def test_results_that_are_not_json_like_are_script_errors(source: str, what: str) -> None:
    error = script_error(source)
    assert error.message.startswith("the script's result cannot be returned")
    assert what in error.message


def test_functions_cannot_be_passed_to_globals() -> None:
    error = script_error("State.set('global', 'k', lambda c: 1)")
    assert error.message == (
        "INVALID_ARGUMENT: State.set: a function cannot be passed or returned as a value (JSON-like values only)"
    )
    assert error.line == 1


# ------------------------------------------------------------------ print


def test_print_is_collected_in_order_and_printed_reads_it_back() -> None:
    result, out = run("print('a', 1, True)\nprint('b', end='')\nprint('c', sep='-')\nprinted")
    assert out == "a 1 True\nbc\n"
    assert result == "a 1 True\nbc\n"


def test_print_to_a_file_is_refused() -> None:
    assert "print(file=...) is not available" in script_error("print('x', file=[])").message


def test_output_limit_keeps_the_first_bytes() -> None:
    out = OutputSink(25)
    job = ScriptJob(language=Language.PYTHON, source="for i in range(100):\n    print('abcdefghij')")
    with pytest.raises(OutputExceeded):
        runner_for(Language.PYTHON).run(job, RecordingHost(), out)
    assert out.text() == "abcdefghij\nabcdefghij\nabc"


# ------------------------------------------------------------------ globals and errors


def test_call_errors_raise_scriptpool_error_with_code_and_message() -> None:
    source = """
try:
    Session.get("missing")
except ScriptpoolError as e:
    caught = [e.code, e.message, str(e), isinstance(e, NotFound), isinstance(e, Exception)]
caught
"""
    result, _ = run(source)
    assert result == ["NOT_FOUND", "session missing not found", "NOT_FOUND: session missing not found", True, True]


def test_an_uncaught_call_error_is_a_script_error_with_code_message_and_line() -> None:
    error = script_error("x = 1\nSession.get('missing')")
    assert error.message == "NOT_FOUND: session missing not found"
    assert error.line == 2


def test_session_objects_have_fields_and_methods() -> None:
    host = RecordingHost()
    source = """
s = Session.get("s1")
s.suspend()
tags = s.addTag("b")
[s.id, s.name, s.state, s.metadata, s.hasTag("a"), s.has_tag("zz"), tags, s["name"], Session.list()[0].id]
"""
    result, _ = run(source, host)
    assert result == ["s1", "n", "active", {"k": 1}, True, False, ["a", "b"], "n", "s1"]
    assert ("Session.suspend", ["s1"]) in host.calls
    assert ("Session.setTags", ["s1", ["a", "b"]]) in host.calls


def test_call_limit() -> None:
    with pytest.raises(CallLimitExceeded):
        run("for i in range(100):\n    Session.getCurrent()", max_global_calls=5)


def test_the_call_limit_cannot_be_caught() -> None:
    with pytest.raises(CallLimitExceeded):
        source = "for i in range(100):\n    try:\n        Session.getCurrent()\n    except:\n        pass"
        run(source, max_global_calls=5)


# ------------------------------------------------------------------ script errors


def test_syntax_error_has_its_line() -> None:
    error = script_error("a = 1\nb = 2\nc = = 3\n")
    assert error.line == 3
    assert error.message.startswith("syntax error:")


def test_runtime_error_has_message_line_and_a_script_only_traceback() -> None:
    error = script_error("def f():\n    return 1 / 0\n\nf()\n")
    assert error.message == "ZeroDivisionError: division by zero"
    assert error.line == 2
    assert error.guest_traceback.splitlines() == [
        "Traceback (most recent call last):",
        "  line 4, in <module>",
        "    f()",
        "  line 2, in f",
        "    return 1 / 0",
        "ZeroDivisionError: division by zero",
    ]


def test_errors_raised_inside_host_code_show_no_host_paths() -> None:
    error = script_error("import json\njson.loads('{')")
    assert error.line == 2 and error.message.startswith("JSONDecodeError: ")
    assert ".py" not in error.guest_traceback and sys.prefix not in error.guest_traceback


def test_deep_recursion_is_a_short_script_error() -> None:
    error = script_error("def f(n):\n    return f(n + 1)\nf(0)")
    assert error.message.startswith("RecursionError")
    assert "more frames" in error.guest_traceback
    assert len(error.guest_traceback.splitlines()) < 60


def test_raising_system_exit_is_a_script_error() -> None:
    assert script_error("raise SystemExit(3)").message == "SystemExit: 3"


# ------------------------------------------------------------------ restrictions


@pytest.mark.parametrize(
    "source",
    ["open('/etc/passwd')", "eval('1')", "exec('x = 1')", "compile('1', 'f', 'eval')", "globals()", "vars()",
     "type('X', (), {})", "object.__subclasses__()", "__import__('os')", "().__class__", "breakpoint()",
     "getattr((), '__class__')", "import os\nos.system", "import os\nos.environ", "import os\nos._exit",
         "import os.path\nos.path.realpath", "from os import getcwd", "import sys",
         "import subprocess", "from collections import abc",
     "from json import decoder", "import json\njson.__name__", "import json\ngetattr(json, 'decoder')",
     "import json\njson.codecs", "import random\nrandom.random.__self__", "'{0.__class__}'.format(1)",
     "'{x}'.format_map({})", "import string\nstring.Formatter", "import functools\nfunctools.singledispatch",
     "(i for i in [1]).gi_frame", "getattr((i for i in [1]), 'gi_frame')", "print.__self__", "def f():\n    nonlocal x",
     "import json as _j", "Session.create.__func__", "dir()", "locals()"],
)  # fmt: skip
def test_escape_hatches_are_closed(source: str) -> None:
    with pytest.raises(ScriptError):
        run(source)


def test_allowed_modules_work() -> None:
    source = """
import math, json, re, datetime, itertools, functools, collections, string, hashlib, base64
from heapq import nsmallest
[math.isqrt(17), json.loads(json.dumps({"a": [1]})), re.findall(r"\\d+", "a1b22"),
 datetime.date(2024, 1, 31).isoformat(), list(itertools.islice(itertools.count(5), 3)),
 functools.reduce(lambda a, b: a * b, [1, 2, 3, 4]), collections.Counter("aab")["a"], string.digits,
 hashlib.sha256(b"x").hexdigest()[:8], base64.b64encode(b"hi"), nsmallest(2, [5, 1, 3])]
"""
    result, _ = run(source)
    assert result == [4, {"a": [1]}, ["1", "22"], "2024-01-31", [5, 6, 7], 24, 2, "0123456789", "2d711642",
                      b"aGk=", [1, 3]]  # fmt: skip


def test_random_is_a_generator_per_job() -> None:
    source = "import random\nrandom.seed(7)\n[random.randint(1, 10**6) for i in range(3)]"
    first, _ = run(source)
    second, _ = run(source)
    assert first == second
    assert run("import random\nrandom.seed(7)\nimport random as r2\nr2.random() == random.random()")[0] is False


def test_scripts_change_their_own_objects_but_not_globals_or_modules() -> None:
    source = """
class Point:
    count = 0
    def __init__(self, x):
        self.x = x
Point.count = 5
p = Point(3)
p.y = 4
d = {}
d["k"] = [1]
d["k"][0] = 2
setattr(p, "z", 5)
[p.x, p.y, p.z, Point.count, d]
"""
    assert run(source)[0] == [3, 4, 5, 5, {"k": [2]}]
    assert "cannot be changed" in script_error("Session.create = None").message
    assert "cannot be changed" in script_error("import math\nmath.pi = 3").message
    assert "cannot be changed" in script_error("import math\nsetattr(math, 'pi', 3)").message


# ------------------------------------------------------------------ CPU and memory


def test_an_endless_loop_stops_at_the_cpu_limit() -> None:
    with pytest.raises(CpuTimeExceeded, match="200 ms"):
        run("while True:\n    pass", cpu_time_ms=200)


@pytest.mark.parametrize(
    "source",
    [
        "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass",
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
        "try:\n    while True:\n        pass\nfinally:\n    while True:\n        pass",
        "try:\n    while True:\n        pass\nexcept:\n    pass\n1",
        "def spin():\n    while True:\n        pass\nwhile True:\n    try:\n"
        "        sorted([3, 1], key=lambda x: spin())\n    except BaseException:\n        pass",
        "def f():\n    f()\ntry:\n    f()\nexcept RecursionError:\n    pass\nwhile True:\n    pass",
        "def g():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
        "x = g()\nnext(x)\nx = None\nwhile True:\n    pass",
        "x = [i for i in iter(int, 1)]",
    ],
    ids=["bare-except", "except-base-exception", "finally", "caught-then-ends", "callback-from-c",
         "recursion-error-in-tracer", "generator-finalizer", "comprehension"],
)  # fmt: skip
def test_the_cpu_limit_cannot_be_swallowed(source: str) -> None:
    with pytest.raises(CpuTimeExceeded):
        run(source, cpu_time_ms=200, memory_bytes=512 * MIB)


def test_the_tracer_is_removed_after_the_job() -> None:
    before = sys.gettrace()
    with pytest.raises(CpuTimeExceeded):
        run("while True:\n    pass", cpu_time_ms=100)
    run("1")
    assert sys.gettrace() is before


def test_growing_memory_stops_at_the_memory_limit() -> None:
    with pytest.raises(MemoryExceeded, match=str(16 * MIB)):
        run("x = []\nwhile True:\n    x.append('x' * 1000 + str(len(x)))", memory_bytes=16 * MIB)


def test_a_memory_error_cannot_be_caught() -> None:
    source = "try:\n    x = 'x' * (10 ** 15)\nexcept MemoryError:\n    pass\n1"
    with pytest.raises(MemoryExceeded):
        run(source, memory_bytes=16 * MIB)


def test_prewarm_builds_everything_once_and_jobs_still_run() -> None:
    prewarm()
    assert run("import json\njson.dumps([1])")[0] == "[1]"


def test_host_faults_and_unencodable_arguments_reach_the_script_as_clean_errors() -> None:
    """No raw host exception text reaches a script: a string with a lone surrogate and a huge int are
    INVALID_ARGUMENT with our own words (not UnicodeEncodeError's, nor int formatting's ValueError
    about sys.set_int_max_str_digits), and a host fault of its own is a fixed INTERNAL text."""
    from scriptpool.values import to_value

    class EncodingHost:
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            for arg in args:
                to_value(arg)  # what the socket host does with every argument
            if op == "Session.list":
                raise OSError(27, "File too large: /srv/secret/path")
            return None

    source = """
out = []
for attempt in (lambda: Session.create({'name': '\\udc80'}), lambda: Session.create({'n': 10 ** 5000}),
                lambda: Session.list()):
    try:
        attempt()
    except Exception as e:
        out.append(str(e))
print('\\udc80')
out
"""
    job = ScriptJob(language=Language.PYTHON, source=source)
    output = OutputSink(10_000)
    result = runner_for(Language.PYTHON).run(job, EncodingHost(), output)
    assert result == [
        "INVALID_ARGUMENT: a string holds a lone surrogate (it is not Unicode text): pass bytes instead",
        "INVALID_ARGUMENT: integer of 16610 bits does not fit in 64 bits",
        "INTERNAL: the call failed in the host",
    ]
    assert output.text() == "?\n"
