"""Mutations the suite must catch: disable one defence layer at a time and check its tests fail.

Each mutation replaces one exact piece of source (it must occur exactly once, or the mutation is
reported as stale) so that one layer does nothing while everything else, including the layer's
report ("applied"), stays as it was. The script then runs the named test files against the mutated
tree (the workers and sandbox children the tests start import the same files) and reports, per
mutation, whether every test named in `must_fail` failed ("caught") and which tests failed in all.
The source is restored after each mutation, whatever happens (its timestamp too, so the bytecode
cache stays valid; the runs write no bytecode).

Not part of `make test`: it runs the named tests once per mutation (several minutes). Run it from
the repository root, with nothing else using the tree:

    .venv/bin/python -m tests.mutations              # every mutation
    .venv/bin/python -m tests.mutations seccomp      # the named ones
    .venv/bin/python -m tests.mutations --list

The list is docs/THREAT_MODEL.md's "Mutations the suite must catch"; keep the two in step.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_SECONDS = 900

SUPERVISOR = "workers/supervision/supervisor.py"
APPLY = "sandbox/jail/_apply.py"
ENFORCEMENT = "tests/unit/test_supervisor_enforcement.py"
JAIL = "tests/unit/test_jail.py"
OS_JAIL = "tests/security/test_os_jail_attacks.py"
RLIMITS_TEST = f"{OS_JAIL}::test_job_rlimits_equal_the_jobs_limits_in_the_running_process"
LUA_ENGINE = "tests/unit/test_lua_engine.py"
JS_ENGINE = "tests/unit/test_js_engine.py"
CHILD_REUSE = "tests/unit/test_child_reuse.py"
SCOPES = "tests/unit/test_scopes.py"
API_KEYS = "tests/integration/test_api_keys.py"
SHARING = "tests/integration/test_session_sharing.py"
MATRIX = "tests/integration/test_access_matrix.py"
MATRIX_SCRIPTS = "tests/integration/test_access_matrix_scripts.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    layer: str
    path: str
    original: str
    replacement: str
    must_fail: tuple[str, ...]
    """Test node ids that must each fail under the mutation."""
    run: tuple[str, ...] = ()
    """What to run (files or node ids); default: the files of `must_fail`."""

    def targets(self) -> list[str]:
        return list(self.run) if self.run else sorted({test.split("::")[0] for test in self.must_fail})


def _rlimit(name: str, field: str) -> Mutation:
    return Mutation(
        name=f"rlimit-{name}",
        layer=f"RLIMIT_{field}",
        path=APPLY,
        original=f"    _set(resource.RLIMIT_{field},",
        replacement=f"    (lambda *_: None)(resource.RLIMIT_{field},",
        must_fail=(RLIMITS_TEST,),
    )


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        name="worker-output-limit",
        layer="worker counts output bytes and kills the child past the limit",
        path=SUPERVISOR,
        original="if len(data) > room:",
        replacement="if False:",
        must_fail=(
            f"{ENFORCEMENT}::test_a_child_printing_past_its_output_limit_is_killed_and_its_output_cut_at_the_limit",
        ),
    ),
    Mutation(
        name="worker-call-limit",
        layer="worker counts global calls and kills the child past the limit",
        path=SUPERVISOR,
        original="if info.global_calls > self.limits.max_global_calls:",
        replacement="if False:",
        must_fail=(
            f"{ENFORCEMENT}::test_a_child_calling_past_its_call_limit_is_killed_before_the_extra_call_reaches_the_host",
        ),
    ),
    Mutation(
        name="worker-wall-time",
        layer="worker kills the child at the wall deadline",
        path=SUPERVISOR,
        original="if now >= deadline:",
        replacement="if False:",
        must_fail=(f"{ENFORCEMENT}::test_a_child_sleeping_past_its_wall_deadline_is_killed",),
    ),
    Mutation(
        name="worker-cpu-watch",
        layer="worker measures the job's CPU in /proc and kills it past the budget",
        path=SUPERVISOR,
        original="if self.cpu is not None and self.cpu.exceeded():",
        replacement="if False:",
        must_fail=(f"{ENFORCEMENT}::test_a_child_spinning_past_its_cpu_budget_is_killed_by_the_worker_cpu_watch",),
    ),
    _rlimit("cpu", "CPU"),
    _rlimit("as", "AS"),
    _rlimit("fsize", "FSIZE"),
    _rlimit("nofile", "NOFILE"),
    Mutation(
        name="rlimit-nproc",
        layer="RLIMIT_NPROC",
        path=APPLY,
        original="    _set(resource.RLIMIT_NPROC,",
        replacement="    (lambda *_: None)(resource.RLIMIT_NPROC,",
        must_fail=(
            RLIMITS_TEST,
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
        ),
    ),
    Mutation(
        name="rlimit-core",
        layer="RLIMIT_CORE",
        path=APPLY,
        original="    _set(resource.RLIMIT_CORE,",
        replacement="    (lambda *_: None)(resource.RLIMIT_CORE,",
        must_fail=(
            RLIMITS_TEST,
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
        ),
    ),
    Mutation(
        name="seccomp",
        layer="seccomp filter (reported applied, never installed)",
        path=APPLY,
        original="lambda: _seccomp.install(arch, keep_fd, os.getpid()) and None",
        replacement="lambda: None",
        must_fail=(
            f"{JAIL}::test_execve_kills_the_process_with_sigsys",
            f"{JAIL}::test_fork_kills_the_process_with_sigsys",
            f"{JAIL}::test_ptrace_of_the_worker_kills_the_process",
            f"{JAIL}::test_new_inet_socket_is_refused_with_eperm",
            f"{JAIL}::test_an_inherited_socket_other_than_the_worker_socketpair_is_unusable",
            f"{JAIL}::test_chmod_of_a_file_outside_the_scratch_directory_is_refused",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
            f"{OS_JAIL}::test_job_process_has_a_seccomp_filter_and_no_new_privs",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="landlock",
        layer="Landlock ruleset (reported applied, never enforced)",
        path=APPLY,
        original="    _landlock.restrict_self(abi, report.scratch_dir)",
        replacement="    (lambda *_: None)(abi, report.scratch_dir)",
        must_fail=(
            f"{JAIL}::test_writing_outside_the_scratch_directory_is_refused",
            f"{JAIL}::test_writing_another_jobs_scratch_directory_is_refused",
            f"{JAIL}::test_reading_host_files_outside_the_allowed_paths_is_refused",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="network-namespace",
        layer="network namespace (reported applied, never entered)",
        path=APPLY,
        original="_attempt(report, NETNS, _process.unshare_network)",
        replacement="_attempt(report, NETNS, lambda: None)",
        must_fail=(
            f"{JAIL}::test_network_namespace_has_only_a_loopback_that_is_down",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
            f"{OS_JAIL}::test_job_is_in_a_fresh_network_namespace",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="capabilities",
        layer="capability drop",
        path=APPLY,
        original="lambda: _process.drop_capabilities(arch)",
        replacement="lambda: None",
        must_fail=(
            f"{JAIL}::test_capabilities_are_dropped",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
            f"{OS_JAIL}::test_job_process_holds_no_capabilities",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="inherited-fds",
        layer="inherited descriptors closed",
        path=APPLY,
        original="    close_inherited_fds(keep_fd)\n",
        replacement="    (lambda *_: None)(keep_fd)\n",
        must_fail=(
            f"{JAIL}::test_inherited_descriptors_are_closed",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
            f"{OS_JAIL}::test_job_holds_only_stdio_and_the_worker_socket",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="empty-environment",
        layer="environment emptied and its block zeroed",
        path=APPLY,
        original="    os.environ.clear()\n    try:\n        _process.wipe_environment_block()",
        replacement="    return\n    try:\n        _process.wipe_environment_block()",
        must_fail=(
            f"{JAIL}::test_environment_is_empty_and_the_inherited_block_is_wiped",
            f"{JAIL}::test_probe_host_verifies_every_layer_in_a_throwaway_child",
            f"{JAIL}::test_doctor_exits_non_zero_when_a_layer_does_not_hold",
            f"{OS_JAIL}::test_job_cannot_read_the_worker_environment",
        ),
        run=(JAIL, OS_JAIL),
    ),
    Mutation(
        name="js-linear-memory-cap",
        layer="the wasm store's linear-memory cap under QuickJS's own heap limit",
        path="sandbox/engines/javascript.py",
        original="self._store.set_limits(memory_size=self.memory_cap)",
        replacement="(lambda **_: None)(memory_size=self.memory_cap)",
        must_fail=(f"{JS_ENGINE}::test_the_linear_memory_cap_alone_keeps_the_heap_under_the_jobs_limit",),
    ),
    Mutation(
        name="js-stack-trace-pin",
        layer="Error.prepareStackTrace pinned, so no CallSite hands out a prelude function",
        path="sandbox/engines/js_prelude.js",
        original=(
            'defineProperty(ErrorCtor, "prepareStackTrace", '
            "{ value: undefined, writable: false, configurable: false });"
        ),
        replacement="",
        must_fail=(f"{JS_ENGINE}::test_the_stack_trace_api_hands_out_no_prelude_function",),
    ),
    Mutation(
        name="lua-attribute-filter",
        layer="lupa's attribute filter, denying every Python attribute",
        path="sandbox/engines/lua.py",
        original="attribute_filter=_deny_attributes,",
        replacement="attribute_filter=None,",
        must_fail=(f"{LUA_ENGINE}::test_the_attribute_filter_stops_a_leaked_python_object",),
    ),
    Mutation(
        name="lua-close-refused",
        layer="chunks declaring a to-be-closed variable are refused (its __close could swallow the memory error)",
        path="sandbox/engines/lua_prelude.lua",
        original='return str_find(text, "close", 1, true) ~= nil and declares_close(fn)',
        replacement="return false",
        must_fail=(
            f"{LUA_ENGINE}::test_no_script_can_swallow_the_memory_limit[close_handler]",
            f"{LUA_ENGINE}::test_no_script_can_swallow_the_memory_limit[close_added_later_in_load]",
        ),
    ),
    Mutation(
        name="lua-session-metatable-lock",
        layer="the prelude's session metatable is locked (__metatable)",
        path="sandbox/engines/lua_prelude.lua",
        original="local SessionObject = { __index = SessionMethods, __metatable = false }",
        replacement="local SessionObject = { __index = SessionMethods }",
        must_fail=(f"{LUA_ENGINE}::test_no_prelude_metatable_can_be_read_or_replaced",),
    ),
    Mutation(
        name="reused-child-scratch-check",
        layer="the worker checks a kept child's scratch is empty before reusing it",
        path=SUPERVISOR,
        original="if not scratch_is_empty(child.pid):",
        replacement="if False:",
        must_fail=(f"{CHILD_REUSE}::test_a_process_whose_scratch_is_not_empty_after_a_job_is_not_reused",),
    ),
    Mutation(
        name="api-key-scopes",
        layer="a client key is refused an RPC whose scope it does not hold",
        path="coordinator/scopes.py",
        original="if needed not in caller.scopes:",
        replacement="if False:",
        must_fail=(
            f"{SCOPES}::test_a_key_without_the_scope_is_refused_naming_it[/scriptpool.v1.JobService/SubmitJob-scopes0-submit]",
            f"{API_KEYS}::test_scopes_are_enforced[scopes0-submit-submit]",
            f"{API_KEYS}::test_scopes_are_enforced[scopes2-admin-admin]",
            f"{MATRIX}::test_the_matrix_row[Session.Delete]",
            f"{MATRIX}::test_the_matrix_row[Admin.CreateKey]",
        ),
    ),
    Mutation(
        name="api-key-revocation",
        layer="a revoked API key is refused",
        path="coordinator/auth.py",
        original="        if record.revoked:\n",
        replacement="        if False:\n",
        must_fail=(
            f"{API_KEYS}::test_a_revoked_key_is_refused_by_the_next_call_on_another_replica",
            f"{MATRIX}::test_the_matrix_row[Session.Get]",
        ),
    ),
    Mutation(
        name="session-grant-levels",
        layer="a session grantee may do only what its level allows",
        path="coordinator/stores/session_access.py",
        original="        if level >= need:\n",
        replacement="        if level >= 1:\n",
        must_fail=(
            f"{SHARING}::test_each_level_allows_exactly_its_operations[read]",
            f"{SHARING}::test_each_level_allows_exactly_its_operations[write]",
            f"{MATRIX}::test_the_matrix_row[Session.Suspend]",
            f"{MATRIX_SCRIPTS}::test_a_job_reaches_the_owners_objects_through_its_globals[lua-grantee_read]",
        ),
    ),
    Mutation(
        name="grants-name-known-principals",
        layer="a session grant names a principal that exists",
        path="coordinator/stores/session_access.py",
        original="        if not revoke and not principal_known(self.redis, principal):\n",
        replacement="        if False:\n",
        must_fail=(f"{SHARING}::test_a_grant_names_a_principal_that_exists",),
    ),
)


@dataclass(frozen=True)
class Verdict:
    mutation: Mutation
    failed: tuple[str, ...]
    error: str = ""

    @property
    def missed(self) -> list[str]:
        return [test for test in self.mutation.must_fail if test not in self.failed]

    @property
    def caught(self) -> bool:
        return not self.error and not self.missed


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_tests(targets: list[str]) -> tuple[int, tuple[str, ...], str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *targets]
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return -1, tuple(_FAILED.findall(out)), f"timed out after {RUN_TIMEOUT_SECONDS} s"
    return done.returncode, tuple(dict.fromkeys(_FAILED.findall(done.stdout))), done.stdout[-2000:]


def apply_and_run(mutation: Mutation) -> Verdict:
    path = REPO / mutation.path
    source = path.read_text()
    found = source.count(mutation.original)
    if found != 1:
        return Verdict(mutation, (), f"stale mutation: its source occurs {found} times in {mutation.path}")
    stat = path.stat()
    try:
        path.write_text(source.replace(mutation.original, mutation.replacement))
        code, failed, tail = run_tests(mutation.targets())
    finally:
        path.write_text(source)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    error = "" if code in (0, 1) else f"pytest exited {code}: {tail}"
    return Verdict(mutation, failed, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name:22} {m.path}: {m.original.strip()!r} -> {m.replacement.strip()!r}")
        return 0
    verdicts = []
    for mutation in chosen:
        verdict = apply_and_run(mutation)
        verdicts.append(verdict)
        state = "caught" if verdict.caught else "MISSED"
        print(f"{state:7} {mutation.name}: {len(verdict.failed)} test(s) failed", flush=True)
        for test in verdict.failed:
            print(f"          failed: {test}", flush=True)
        for test in verdict.missed:
            print(f"          did not fail: {test}", flush=True)
        if verdict.error:
            print(f"          {verdict.error}", flush=True)
    missed = [v.mutation.name for v in verdicts if not v.caught]
    print(f"{len(verdicts) - len(missed)}/{len(verdicts)} mutations caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
