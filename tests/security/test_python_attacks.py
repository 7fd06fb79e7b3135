"""Attacks on the restricted-Python sandbox, through the real stack (exact outcome + worker healthy)."""

from __future__ import annotations

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome

from .attack_table import CPU, SMALL_MEMORY, Attack, run_attack

E = Outcome.SCRIPT_ERROR
ATTACKS: dict[str, Attack] = {
    # --- escapes: dunders, frames, format strings, host callback internals, modules
    "subclasses_walk": Attack("().__class__.__bases__[0].__subclasses__()", E, "starts with"),
    "getattr_dunder": Attack("getattr((), '__class__')", E, "not accessible"),
    "format_string_attribute": Attack("'{0.__class__}'.format(1)", E, "format"),
    "format_map_attribute": Attack("'{x.__class__}'.format_map({'x': 1})", E, "format"),
    "generator_frame": Attack("g = (x for x in [1])\ng.gi_frame", E, "gi_frame"),
    "generator_frame_globals": Attack("g = (x for x in [1])\ng.gi_frame.f_globals", E, "restricted name"),
    "generator_code": Attack("g = (x for x in [1])\ng.gi_code", E, "gi_code"),
    "exception_traceback_frames": Attack(
        "try:\n    1/0\nexcept Exception as e:\n    e.__traceback__", E, "__traceback__"
    ),  # fmt: skip
    "host_callback_self": Attack("Session.create.__self__", E, "__self__"),
    "host_callback_globals": Attack("Session.create.__globals__", E, "__globals__"),
    "error_class_subclasses": Attack("ScriptpoolError.__subclasses__()", E, "__subclasses__"),
    "lambda_defaults": Attack("(lambda x=1: x).__defaults__", E, "__defaults__"),
    "object_new": Attack("object.__new__(int)", E, "__new__"),
    "import_os_system": Attack("import os\nos.system('id')", E, "has no attribute 'system'"),
    "import_os_environ": Attack("import os\nos.environ", E, "has no attribute 'environ'"),
    "import_sys": Attack("import sys\nsys.modules", E, "not available"),
    "import_subprocess": Attack("import subprocess", E, "not available"),
    "import_ctypes": Attack("import ctypes", E, "not available"),
    "dunder_import": Attack("__import__('os')", E, "__import__"),
    "open_host_file": Attack("open('/etc/passwd').read()", E, "NOT_FOUND"),  # /etc/passwd of the job's root
    "eval_call": Attack("eval('1')", E, "Eval"),
    "exec_call": Attack("exec('1')", E, "Exec"),
    "compile_call": Attack("compile('1', 'x', 'eval')", E, "compile() is not available"),
    "type_three_args": Attack("type('X', (), {})", E, "type() is not available"),
    "globals_call": Attack("globals()", E, "globals() is not available"),
    "vars_call": Attack("vars()", E, "vars() is not available"),
    "breakpoint_debugger": Attack("breakpoint()", E, "breakpoint"),
    "write_builtins": Attack("__builtins__['x'] = 1", E, "__builtins__"),
    "mutate_shared_module": Attack("import math\nmath.pi = 3", E, "cannot be changed"),
    "string_formatter_class": Attack(
        "import string\nstring.Formatter().get_field('0.__class__', [1], {})", E, "Formatter"
    ),  # fmt: skip
    "catch_limit_with_bare_except": Attack(
        "while True:\n    try:\n        while True: pass\n    except:\n        pass",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    # --- CPU spin in every construct
    "spin_while": Attack("while True: pass", Outcome.CPU_TIME_EXCEEDED, limits=CPU),
    "spin_itertools_count": Attack(
        "import itertools\nfor i in itertools.count(): pass", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_finally": Attack(
        "try:\n    while True: pass\nfinally:\n    while True: pass", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    "spin_in_generator_finalizer": Attack(
        "def g():\n    try:\n        yield 1\n    finally:\n        while True: pass\nx = g()\nnext(x)\ndel x\n"
        "while True: pass",
        Outcome.CPU_TIME_EXCEEDED,
        limits=CPU,
    ),  # fmt: skip
    "spin_in_one_c_call": Attack("sum(range(10**13))", Outcome.CPU_TIME_EXCEEDED, limits={"cpu_time_ms": 1000}),
    "regex_catastrophic_backtracking": Attack(
        "import re\nre.match('(a+)+$', 'a' * 32 + 'b')", Outcome.CPU_TIME_EXCEEDED, limits={"cpu_time_ms": 1000}
    ),  # fmt: skip
    "pow_bomb": Attack(
        "2 ** 10 ** 10", Outcome.MEMORY_EXCEEDED, limits={"cpu_time_ms": 10000, "wall_time_ms": 30000}
    ),  # the memory limit is reached first, however loaded the machine
    "spin_in_sort_key": Attack(
        "def k(x):\n    while True: pass\nsorted([2, 1], key=k)", Outcome.CPU_TIME_EXCEEDED, limits=CPU
    ),  # fmt: skip
    # --- memory
    "list_multiplication_bomb": Attack("[0] * 10**10", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY),
    "bytearray_bomb": Attack("bytearray(10**10)", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY),
    "string_doubling": Attack("s = 'x'\nwhile True:\n    s = s + s", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY),
    "list_growth": Attack(
        "t = []\nwhile True:\n    t.append([0] * 1000)", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY
    ),  # fmt: skip
    "memory_error_swallowed": Attack(
        "while True:\n    try:\n        x = [0] * 10**10\n    except MemoryError:\n        pass",
        Outcome.MEMORY_EXCEEDED,
        limits=SMALL_MEMORY,
    ),  # fmt: skip
    "hash_of_huge_bytes": Attack(
        "import hashlib\nhashlib.sha256(b'x' * 10**10)", Outcome.MEMORY_EXCEEDED, limits=SMALL_MEMORY
    ),  # fmt: skip
    # --- recursion, output, calls, arguments
    "deep_recursion": Attack("def f():\n    return f()\nf()", E, "RecursionError"),
    "int_to_str_bomb": Attack("str(10**100000)", E, "Exceeds the limit"),
    "print_flood": Attack("while True:\n    print('spam')", Outcome.OUTPUT_EXCEEDED, limits={"output_bytes": 4096}),
    "single_huge_print": Attack(
        "print('x' * 5 * 1024 * 1024)", Outcome.OUTPUT_EXCEEDED, limits={"output_bytes": 4096}
    ),  # fmt: skip
    "global_call_flood": Attack(
        "while True:\n    Session.getCurrent()", Outcome.CALL_LIMIT_EXCEEDED, limits={"max_global_calls": 50}
    ),  # fmt: skip
    "global_call_flood_caught": Attack(
        "while True:\n    try:\n        Session.list()\n    except Exception:\n        pass",
        Outcome.CALL_LIMIT_EXCEEDED,
        limits={"max_global_calls": 50},
    ),  # fmt: skip
    "huge_argument_to_global": Attack("Session.create({'name': 'x' * 8 * 1024 * 1024})", E, "maximum is 255"),
    "cyclic_argument": Attack("t = {}\nt['t'] = t\nSession.create({'metadata': t})", E, "itself"),
    "unreturnable_result": Attack("class A:\n    pass\nA()", E, "cannot be passed or returned"),
    "huge_error_message": Attack("raise ValueError('x' * 4 * 1024 * 1024)", E, "more characters cut"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_python_attack(client: ScriptpoolClient, name: str) -> None:
    run_attack(client, Language.PYTHON, name, ATTACKS[name])
