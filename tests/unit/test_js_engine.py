"""The JavaScript engine in-process (no jail): QuickJS in wasm, the language layer of the sandbox."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from typing import Any

import pytest

from scriptpool.errors import NotFound
from scriptpool.languages import Language
from scriptpool.sandbox.engines import javascript, quickjs_internals
from scriptpool.sandbox.engines.quickjs_internals import JSError
from scriptpool.sandbox.errors import CallLimitExceeded, CpuTimeExceeded, MemoryExceeded, OutputExceeded, ScriptError
from scriptpool.sandbox.host import OutputSink
from scriptpool.sandbox.limits import MIB, JobLimits
from scriptpool.sandbox.runner import ScriptJob, runner_for
from scriptpool.values import PlainValue
from tests.conftest import REPO
from tests.unit.engine_helpers import AnsweringHost, seeded_job


class RecordingHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlainValue]]] = []

    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        self.calls.append((op, args))
        if op == "Session.get":
            raise NotFound(f"session {args[0]!s} not found")
        return {"echo": args}


def run(source: str, host: RecordingHost | None = None, **limits: int) -> tuple[PlainValue, str]:
    out = OutputSink(limits.get("output_bytes", 10_000))
    job = ScriptJob(language=Language.JAVASCRIPT, source=source, limits=JobLimits(**limits))
    return runner_for(Language.JAVASCRIPT).run(job, host or RecordingHost(), out), out.text()


def test_result_is_the_value_of_the_last_expression_statement() -> None:
    assert run("var x = 20;\nfunction f(y) { return y + 1 }\nf(x) * 2")[0] == 42
    assert run("if (true) { 'then' } else { 'else' }")[0] == "then"
    assert run("let unused = 1;")[0] is None


def test_returned_promises_and_top_level_await_are_awaited() -> None:
    assert run("(async () => { await null; return 5 })()")[0] == 5
    assert run("const v = await Promise.resolve(7);\nv * 2")[0] == 14
    with pytest.raises(ScriptError, match="never settles"):
        run("await new Promise(() => {})")


def test_values_cross_with_their_types() -> None:
    host = RecordingHost()
    source = "Session.create({name: 'n', tags: ['a', 'b'], metadata: {x: 1, y: 1.5, z: {}, gone: undefined}})"
    result, _ = run(source, host)
    expected = [{"name": "n", "tags": ["a", "b"], "metadata": {"x": 1, "y": 1.5, "z": {}}}]
    assert host.calls == [("Session.create", expected)]
    assert result == {"echo": expected}
    sent = host.calls[0][1][0]
    assert isinstance(sent, dict) and isinstance(sent["metadata"], dict) and type(sent["metadata"]["x"]) is int


def test_numbers_keep_int_versus_float() -> None:
    result, _ = run("[1, 2.5, 2**53 - 1, 2**53, -0, null, undefined]")
    assert result == [1, 2.5, 2**53 - 1, float(2**53), 0, None, None]
    assert isinstance(result, list)
    assert [type(v) for v in result] == [int, float, int, float, int, type(None), type(None)]


def test_uint8array_and_bytes_cross_byte_exact() -> None:
    class BytesHost(RecordingHost):
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            super().call(op, args)
            return b"\x00\xff\x01"

    host = BytesHost()
    result, _ = run(
        "const got = Artifact.getContent('s', 'a');\n"
        "Artifact.store('s', {content: new Uint8Array([255, 0, 7]), type: 'binary'});\n"
        "[got instanceof Uint8Array, Array.from(got), got]",
        host,
    )
    assert result == [True, [0, 255, 1], b"\x00\xff\x01"]
    assert host.calls[1] == ("Artifact.store", ["s", {"content": b"\xff\x00\x07", "type": "binary"}])


def test_console_log_and_print_write_space_separated_lines() -> None:
    _, out = run("console.log('a', 1, true, null, undefined, {x: [1, 'b']});\nprint('p', 2.5)")
    assert out == 'a 1 true null undefined { x: [1, "b"] }\np 2.5\n'


@pytest.mark.parametrize(
    "name",
    ["std", "os", "require", "process", "setTimeout", "WebAssembly", "__scriptpool_host_call",
     "__scriptpool_host_print", "__scriptpool_setup", "__scriptpool_prelude"],
)  # fmt: skip
def test_dangerous_or_internal_globals_are_absent(name: str) -> None:
    result, _ = run(f"typeof {name}")
    assert result == "undefined"


def test_globals_are_built_from_the_catalog_with_aliases() -> None:
    host = RecordingHost()
    run("Session.getCurrent(); Session.get_current(); State.list_keys('global'); Event.publish('e', 1)", host)
    assert [op for op, _ in host.calls] == ["Session.getCurrent", "Session.getCurrent", "State.list", "Event.emit"]
    assert run("typeof Artifact.checkAccess + typeof Hook.register + typeof State.compareAndSet")[0] == "function" * 3


def test_call_errors_are_errors_with_code_and_message() -> None:
    result, _ = run(
        "try { Session.get('x') } catch (e) { [e instanceof Error, e.code, e.message, String(e)] }",
    )
    assert result == [True, "NOT_FOUND", "NOT_FOUND: session x not found", "Error: NOT_FOUND: session x not found"]


def test_uncaught_call_error_is_a_script_error_with_its_line() -> None:
    with pytest.raises(ScriptError) as caught:
        run("const a = 1;\nSession.get('x');\n")
    assert caught.value.message == "NOT_FOUND: session x not found"
    assert caught.value.line == 2


def test_session_objects_have_methods() -> None:
    class Host(RecordingHost):
        tags: list[str]

        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            self.calls.append((op, args))
            if op == "Session.get":
                return {"id": "s1", "tags": ["a"], "state": "active"}
            if op == "Session.getTags":
                return list(self.tags)
            if op == "Session.setTags":
                assert isinstance(args[1], list)
                self.tags = [str(t) for t in args[1]]
                return args[1]
            return None

    host = Host()
    host.tags = ["a"]
    result, _ = run(
        "const s = Session.get('s1');\ns.suspend();\nconst tags = s.addTag('b');\n"
        "[s.hasTag('a'), s.hasTag('c'), tags, s.removeTag('a'), JSON.stringify(s)]",
        host,
    )
    stringified = json.dumps({"id": "s1", "tags": ["b"], "state": "active"}, separators=(",", ":"))
    assert result == [True, False, ["a", "b"], ["b"], stringified]
    assert ("Session.suspend", ["s1"]) in host.calls
    assert host.calls[-1] == ("Session.setTags", ["s1", ["b"]])


def test_syntax_error_is_a_script_error_with_its_line() -> None:
    with pytest.raises(ScriptError) as caught:
        run("const a = 1;\nconst b = 2;\nconst c = = 3;\n")
    assert caught.value.message.startswith("SyntaxError: ")
    assert caught.value.line == 3


def test_runtime_error_has_message_line_and_script_only_traceback() -> None:
    with pytest.raises(ScriptError) as caught:
        run("function f() {\n  null.x;\n}\nf();\n")
    assert caught.value.message == "TypeError: cannot read property 'x' of null"
    assert caught.value.line == 2
    assert caught.value.guest_traceback == "at f (script:2:3)\nat <eval> (script:4:1)"
    assert "<input>" not in caught.value.guest_traceback  # prelude frames are not the script's


def test_thrown_non_errors_are_shown_as_strings() -> None:
    with pytest.raises(ScriptError, match="^42$"):
        run("throw 42")


@pytest.mark.parametrize(
    ("source", "what"),
    [("(function () {})", "function"), ("Symbol('s')", "symbol"), ("new Map()", "Map"), ("({f: () => 1})", "function")],
)
def test_results_that_are_not_plain_values_are_script_errors(source: str, what: str) -> None:
    with pytest.raises(ScriptError, match=f"a JS {what} cannot be passed or returned as a value"):
        run(source)


def test_self_referencing_value_is_a_clear_error() -> None:
    with pytest.raises(ScriptError, match="contains itself"):
        run("const t = {}; t.t = t; t")


def test_bad_call_arguments_are_invalid_argument_errors() -> None:
    result, _ = run("try { Session.create({f: () => 1}) } catch (e) { e.code }")
    assert result == "INVALID_ARGUMENT"


def test_cpu_spin_is_stopped_and_cannot_be_caught() -> None:
    with pytest.raises(CpuTimeExceeded, match="200 ms"):
        run("while (true) { try { while (true) {} } catch (e) {} }", cpu_time_ms=200)


def test_cpu_spin_in_a_microtask_is_stopped() -> None:
    with pytest.raises(CpuTimeExceeded):
        run("Promise.resolve().then(() => { for (;;) {} }); 1", cpu_time_ms=200)


def test_memory_bomb_is_memory_exceeded() -> None:
    with pytest.raises(MemoryExceeded, match=str(16 * 1024 * 1024)):
        run("const a = []; while (true) a.push('x'.repeat(1000) + a.length)", memory_bytes=16 * 1024 * 1024)


def test_memory_errors_cannot_be_caught_and_ignored() -> None:
    source = "for (let k = 0; k < 5; k++) { try { let a = []; for (;;) a.push([k, k, k]) } catch (e) {} }\n'survived'"
    with pytest.raises(MemoryExceeded):
        run(source, memory_bytes=16 * 1024 * 1024, cpu_time_ms=5000)


def test_deep_recursion_is_a_script_error() -> None:
    with pytest.raises(ScriptError, match="stack overflow"):
        run("function f() { return f() + 1 }\nf()")
    assert run("function g(n) { return n === 0 ? 0 : 1 + g(n - 1) }\ng(200)")[0] == 200


def test_output_limit_keeps_the_first_bytes_even_if_caught() -> None:
    out = OutputSink(25)
    job = ScriptJob(language=Language.JAVASCRIPT, source="for (;;) { try { print('abcdefghij') } catch (e) {} }")
    with pytest.raises(OutputExceeded):
        runner_for(Language.JAVASCRIPT).run(job, RecordingHost(), out)
    assert out.text() == "abcdefghij\nabcdefghij\nabc"


def test_call_limit_cannot_be_caught() -> None:
    with pytest.raises(CallLimitExceeded):
        run("try { for (;;) Session.getCurrent() } catch (e) {}\n'done'", max_global_calls=5)


def test_each_job_gets_a_fresh_instance() -> None:
    run("globalThis.leak = 1; Object.prototype.polluted = 2")
    assert run("[typeof leak, ({}).polluted]")[0] == ["undefined", None]


def test_inputs_are_visible_as_INPUT() -> None:
    job = ScriptJob(language=Language.JAVASCRIPT, source="INPUT.n + 1", inputs={"n": 41})
    assert runner_for(Language.JAVASCRIPT).run(job, RecordingHost(), OutputSink(100)) == 42


def test_quickstart_example_runs_against_a_fake_host() -> None:
    class Host(RecordingHost):
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            self.calls.append((op, args))
            session: dict[str, PlainValue] = {"id": "s1", "name": "quickstart", "state": "active", "tags": ["demo"]}
            session["metadata"] = {"a": 1}
            page: dict[str, PlainValue] = {"items": [session], "next_cursor": None}
            replies: dict[str, PlainValue] = {"Session.create": "s1", "Session.get": session, "Session.list": page}
            return replies[op]

    source = (REPO / "examples" / "quickstart.js").read_text()
    result, out = run(source, Host())
    assert result == {"session_id": "s1", "name": "quickstart", "metadata": {"a": 1}, "listed": 1}
    assert "created session s1\n" in out and "has tag demo: true" in out


def test_a_forked_child_runs_jobs_on_the_prewarmed_engine() -> None:
    javascript.prewarm()
    template = javascript._template
    assert template is not None  # built before the fork: children inherit it
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run a job, report through the pipe, never return into pytest
        code = 0
        try:
            result, out = run("console.log('from the child'); [1, 2.5, 'three']")
            os.write(write_fd, pickle.dumps((result, out, javascript._template is template)))
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        payload = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pickle.loads(payload) == ([1, 2.5, "three"], "from the child\n", True)


def test_prewarm_leaves_no_threads_behind_to_break_a_fork() -> None:
    probe = (
        "import os\n"
        "from scriptpool.sandbox.engines import javascript\n"
        "javascript.prewarm()\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"


SEEDED = "[Math.random(), Math.random(), INPUT.x, new Date().getUTCFullYear(), Session.get('s')]"


def test_an_instance_prepared_in_the_spare_serves_one_job_configured_like_a_fresh_one() -> None:
    """The spare child builds the job's instance before the job arrives; seed, clock, INPUT and the
    host are applied only then, and the result is the same as from an instance built for the job."""
    fresh_host = AnsweringHost()
    js = Language.JAVASCRIPT
    fresh = runner_for(js).run(seeded_job(js, SEEDED), fresh_host, OutputSink(1000))
    javascript.prepare_spare_instance(JobLimits().memory_bytes)
    assert javascript._spare.ready is not None
    host = AnsweringHost()
    answer = runner_for(js).run(seeded_job(js, SEEDED), host, OutputSink(1000))
    assert javascript._spare.ready is None  # used once, by this job
    assert answer == fresh
    assert isinstance(answer, list) and answer[2:] == [[1, "two"], 2000, "answer"]
    assert host.calls == fresh_host.calls == [("Session.get", ["s"])]


def test_a_prepared_instance_with_another_memory_limit_is_not_used() -> None:
    javascript.prepare_spare_instance(JobLimits().memory_bytes)
    prepared_instance = javascript._spare.ready
    limits = JobLimits(memory_bytes=JobLimits().memory_bytes * 2)
    answer = runner_for(Language.JAVASCRIPT).run(
        seeded_job(Language.JAVASCRIPT, SEEDED, limits), AnsweringHost(), OutputSink(1000)
    )
    assert isinstance(answer, list) and answer[2] == [1, "two"]
    assert javascript._spare.ready is None and prepared_instance is not None
    with pytest.raises(JSError, match="closed"):  # closed, not handed to the job
        prepared_instance.guest.eval("1")


def test_the_prepared_instance_refuses_a_second_configuration() -> None:
    javascript.prepare_spare_instance(JobLimits().memory_bytes)
    prepared_instance = javascript._spare.take(JobLimits().memory_bytes)
    try:
        prepared_instance.api.call_method("configure", {"inputs": {}, "seed": 1, "clockOffsetMs": 0})
        with pytest.raises(JSError, match="already configured"):
            prepared_instance.api.call_method("configure", {"inputs": {}, "seed": 2, "clockOffsetMs": 0})
    finally:
        prepared_instance.discard()


def test_instances_restored_from_the_prelude_template_match_one_built_from_scratch() -> None:
    """Every job's instance is a new wasm instance whose heap is a copy of the prelude template's:
    the same globals and the same answers as an instance that ran the prelude itself."""
    assert javascript.prelude_template() is javascript.prelude_template()  # built once per process
    source = "[Object.getOwnPropertyNames(globalThis).sort().join(','), typeof Session.create, Math.random()]"
    job = seeded_job(Language.JAVASCRIPT, source)
    restored = runner_for(Language.JAVASCRIPT).run(job, AnsweringHost(), OutputSink(1000))
    scratch = javascript._Guest(JobLimits().memory_bytes)
    try:
        binding = javascript._Binding()
        api = javascript._load_prelude(scratch, binding, "(0, eval)(globalThis.__scriptpool_prelude)")
        prepared = object.__new__(javascript._Prepared)
        prepared.memory_bytes, prepared.guest, prepared.binding, prepared.api = (
            JobLimits().memory_bytes, scratch, binding, api
        )  # fmt: skip
        built = javascript._Job(job, AnsweringHost(), OutputSink(1000), prepared).run()
    finally:
        scratch.close()
    assert restored == built
    assert isinstance(restored, list) and "__scriptpool" not in str(restored[0])


def test_a_restored_instance_has_its_own_jobs_heap_limit_not_the_templates() -> None:
    small = 8 * 1024 * 1024
    prepared = javascript._Prepared(small)
    try:
        assert prepared.guest.runtime.memory_usage()["malloc_limit"] == small
        assert javascript.TEMPLATE_MEMORY_BYTES > small
    finally:
        prepared.discard()
    with pytest.raises(MemoryExceeded):  # 12 MB of strings fit the template's 64 MiB, not this job's 8
        run("const a = []; for (let i = 0; i < 12000; i++) a.push('y'.repeat(1000) + i); a.length", memory_bytes=small)


def test_each_restored_instance_calls_its_own_host_and_hides_the_plumbing() -> None:
    first, second = RecordingHost(), RecordingHost()
    assert run("State.get('global', 'a')", first)[0] == {"echo": ["global", "a"]}
    plumbing = "typeof __scriptpool_api, typeof __scriptpool_host_call, typeof __scriptpool_host_print"
    source = f"[{plumbing}, State.get('global', 'b')]"
    assert run(source, second)[0] == ["undefined", "undefined", "undefined", {"echo": ["global", "b"]}]
    assert first.calls == [("State.get", ["global", "a"])] and second.calls == [("State.get", ["global", "b"])]


def test_a_memory_limit_too_small_for_the_prelude_is_memory_exceeded() -> None:
    with pytest.raises(MemoryExceeded):
        run("1", memory_bytes=256 * 1024)


@pytest.mark.parametrize("memory_bytes", [4 * 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024, 512 * 1024 * 1024])
def test_a_fresh_instance_given_the_template_holds_it_byte_for_byte(memory_bytes: int) -> None:
    template = javascript.prelude_template()
    assert sum(length for _, length in template.runs) < len(template.image)  # only what differs is copied
    guest = javascript._Guest(memory_bytes)
    try:
        guest.copy_heap(template)
        assert guest.memory_copy() == template.image
    finally:
        guest.close()


def test_pages_that_differ_merges_neighbours_and_counts_pages_past_a_shorter_memory() -> None:
    page = 4
    fresh = bytearray(b"AAAABBBBCCCCDDDD")
    image = bytearray(b"AAAAxBBBCCCyDDDD\0\0\0\0\0\0z\0")
    assert javascript.pages_that_differ(image, [fresh], page) == [(4, 8), (20, 4)]
    other = bytearray(b"AAAq")  # differs in the first page, and holds zeros past it
    assert javascript.pages_that_differ(image, [fresh, other], page) == [(0, 16), (20, 4)]


def test_a_narrowed_template_that_would_not_come_out_exact_is_copied_whole() -> None:
    template = javascript.prelude_template()
    whole = javascript.HeapImage(template.image, template.stack_pointer)
    wrong = javascript._narrowed(whole, [template.image])  # as if fresh instances already held it all
    assert wrong.runs == [(0, len(template.image))]


def _without_quickjs_heap_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every instance built from here on keeps no QuickJS heap limit: only the wasm store's cap on
    its linear memory (`_Guest.__init__`'s `set_limits`) is left to bound it."""
    restore = javascript._Guest.restore

    def restore_without_heap_limit(guest: javascript._Guest, heap: javascript.HeapImage, fns: dict[str, Any]) -> None:
        restore(guest, heap, fns)
        quickjs_internals.instance(guest.engine_ctx).c("set_memory_limit", 2**31 - 1)

    monkeypatch.setattr(javascript._Guest, "restore", restore_without_heap_limit)


def test_the_linear_memory_cap_alone_keeps_the_heap_under_the_jobs_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's cap on the linear memory is a layer of its own: with QuickJS's heap limit lifted,
    a 64 MB buffer in a 16 MiB job is refused (memory_exceeded) and the linear memory never grows
    past the cap. (The interrupt poll's check would still name the limit afterwards; only the cap
    keeps the memory from being taken.)"""
    _without_quickjs_heap_limit(monkeypatch)
    prepared = javascript._Prepared(16 * MIB)
    try:
        assert prepared.guest.runtime.memory_usage()["malloc_limit"] > 1024 * MIB
        job = ScriptJob(language=Language.JAVASCRIPT, source="new Uint8Array(64 * 1024 * 1024).length")
        with pytest.raises(MemoryExceeded):
            javascript._Job(job, AnsweringHost(), OutputSink(1000), prepared).run()
        assert prepared.guest.linear_memory() <= prepared.guest.memory_cap
    finally:
        prepared.discard()


def test_the_stack_trace_api_hands_out_no_prelude_function() -> None:
    """QuickJS's V8-style Error.prepareStackTrace would give CallSites whose getFunction() returns
    the prelude's `call`/`toPlain` (a getter runs while the prelude reads the argument)."""
    source = """
    const seen = [];
    try { Error.prepareStackTrace = (e, frames) => frames; } catch (e) { seen.push(e.message); }
    try { Object.defineProperty(Error, 'prepareStackTrace', {value: (e, f) => f}); } catch (e) { seen.push(e.message); }
    const probe = {get x() {
      const stack = new Error().stack;
      seen.push(typeof stack);
      const held = {}; Error.captureStackTrace(held); seen.push(typeof held.stack);
      try { seen.push(String(probe_caller())); } catch (e) { seen.push('caller refused'); }
      return 1;
    }};
    function probe_caller() { return probe_caller.caller; }
    Session.create(probe);
    [seen, typeof Error.prepareStackTrace]
    """
    result, _ = run(source)
    assert result == [
        ["'prepareStackTrace' is read-only", "property is not configurable", "string", "string", "caller refused"],
        "undefined",
    ]


def test_host_faults_reach_the_script_as_a_generic_error() -> None:
    """A global call that fails on the host for a reason of its own (here an OSError) gives the
    script an INTERNAL error with a fixed text: no Python type name, message or object."""

    class FaultyHost:
        def call(self, op: str, args: list[PlainValue]) -> PlainValue:
            raise OSError(27, "File too large: /srv/secret/path")

    out = OutputSink(10_000)
    job = ScriptJob(language=Language.JAVASCRIPT, source="try { Session.list() } catch (e) { [e.code, e.message] }")
    result = runner_for(Language.JAVASCRIPT).run(job, FaultyHost(), out)
    assert result == ["INTERNAL", "INTERNAL: the call failed in the host"]
