"""Attacks on the JavaScript (QuickJS in WebAssembly) sandbox, through the real stack."""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.values import from_value
from tests.integration.helpers import assert_worker_healthy, outcome, run_js

from .attack_table import CPU, SMALL_MEMORY, Attack, run_attack

E = Outcome.SCRIPT_ERROR
OK = Outcome.OK
ATTACKS: dict[str, Attack] = {
    # --- escapes: the Function constructor, modules, host internals (all stay inside the wasm guest)
    "constructor_constructor_std": Attack(
        "if (this.constructor.constructor('return typeof std')() !== 'undefined') throw new Error('std reachable')", OK
    ),  # fmt: skip
    "indirect_eval_os": Attack("if ((0, eval)('typeof os') !== 'undefined') throw new Error('os reachable')", OK),
    "dynamic_import_os": Attack("await import('os')", E, "os"),
    "require_fs": Attack("require('fs')", E, "require is not defined"),
    "host_internals_on_global": Attack(
        "const hidden = Object.getOwnPropertyNames(globalThis).filter(n => "
        "n.startsWith('_') || n.includes('host')); if (hidden.length) "
        "throw new Error(hidden.join())",
        OK,
    ),  # fmt: skip
    "webassembly_api": Attack("if (typeof WebAssembly !== 'undefined') throw new Error('wasm api')", OK),
    "atomics_api": Attack("if (typeof Atomics !== 'undefined') throw new Error('atomics')", OK),
    "prototype_pollution_getter_spin": Attack(
        "Object.defineProperty(Object.prototype, 'name', {get(){ while(1){} }}); Session.create({}).length", OK
    ),  # fmt: skip
    "prototype_pollution_iterator_spin": Attack(
        "Array.prototype[Symbol.iterator] = function*(){ while(1){} }; Session.create({tags: ['a']})",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    # --- CPU
    "spin_while": Attack("while (true) {}", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_caught_in_try": Attack(
        "while (true) { try { while (true) {} } catch (e) {} }", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_finally": Attack(
        "try { while (true) {} } finally { while (true) {} }", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_microtask": Attack(
        "Promise.resolve().then(() => { while (true) {} })", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_async_await_loop": Attack(
        "(async () => { for (;;) { await null; } })()", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_result_getter": Attack("({ get x() { while (1) {} } })", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_in_proxy_trap": Attack(
        "new Proxy({}, { ownKeys() { while (1) {} } })", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_thrown_tostring": Attack("throw { toString() { while (1) {} } }", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "regex_catastrophic_backtracking": Attack(
        "/(a+)+$/.test('a'.repeat(40) + 'b')", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    # --- memory
    "array_growth": Attack(
        "const a = []; while (true) a.push(new Array(1000).fill(1))", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY
    ),  # fmt: skip
    "string_doubling": Attack("let s = 'x'; while (true) s += s", E, "string too long", limits=SMALL_MEMORY),
    "huge_typed_array": Attack("new Uint8Array(2 ** 31)", E, "array buffer length"),
    # QuickJS's out-of-memory error is catchable and the heap stays under its cap, so a script that
    # keeps catching it is ended by its CPU budget (documented in docs/THREAT_MODEL.md).
    "caught_oom_loop_ends_at_cpu_limit": Attack(
        "const k = []; while (true) { try { k.push(new Array(1e6).fill(0)) } catch (e) {} }",
        Outcome.CPU_TIME_EXCEEDED,
        limits={**SMALL_MEMORY, "cpu_time_ms": 1500},
    ),  # fmt: skip
    # --- recursion, output, calls, arguments, results
    "deep_recursion": Attack("function f() { return 1 + f(); } f()", E, "stack overflow"),
    "print_flood": Attack("while (true) console.log('spam')", Outcome.OUTPUT_EXCEEDED, limits={"output_bytes": 4096}),
    "global_call_flood": Attack(
        "while (true) Session.getCurrent()", Outcome.CALL_LIMIT_EXCEEDED, limits={"max_global_calls": 50}
    ),  # fmt: skip
    "global_call_flood_caught": Attack(
        "while (true) { try { Session.list() } catch (e) {} }",
        Outcome.CALL_LIMIT_EXCEEDED,
        limits={"max_global_calls": 50},
    ),  # fmt: skip
    "huge_argument_to_global": Attack("Session.create({name: 'x'.repeat(8 * 1024 * 1024)})", E, "maximum is 255"),
    "cyclic_argument": Attack("const t = {}; t.t = t; Session.create({metadata: t})", E, "itself"),
    "symbol_result": Attack("Symbol('x')", E, "symbol"),
    "huge_error_message": Attack("throw new Error('x'.repeat(4 * 1024 * 1024))", E, "more characters cut"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_js_attack(client: ScriptpoolClient, name: str) -> None:
    run_attack(client, Language.JAVASCRIPT, name, ATTACKS[name])


def test_a_lone_surrogate_in_a_global_calls_argument_is_invalid_argument_in_our_words(client: ScriptpoolClient) -> None:
    """Unpaired surrogates (in a value or a key) are refused before they reach the host, as Lua and
    Python refuse them; a surrogate pair is ordinary text. They used to fail in the wasm host glue
    (`HostError: Host function failed`, neither our code nor our words)."""
    source = """(() => {
      const seen = [];
      for (const args of [["k\\uD800", 1], ["k", {"\\uDC00": 1}], ["k", ["a\\uDBFFb"]]]) {
        try { State.set("job", ...args); seen.push("stored"); } catch (e) { seen.push(e.code + " " + e.message); }
      }
      State.set("job", "pair", "\\uD83D\\uDE00");
      seen.push(State.get("job", "pair") === "\\uD83D\\uDE00");
      return seen;
    })()"""
    job = run_js(client, source)
    assert outcome(job) is Outcome.OK, job.result.message
    refusal = "INVALID_ARGUMENT INVALID_ARGUMENT: a string holds a lone surrogate (it is not valid Unicode text)"
    assert from_value(job.result.result) == [refusal, refusal, refusal, True]
    assert_worker_healthy(client)
