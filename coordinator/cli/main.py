"""`scriptpool` — every subcommand parses its flags into Settings and calls one function."""

from __future__ import annotations

import os

# Before anything imports gRPC: `scriptpool worker` forks sandbox children, and `up` forks+execs its
# processes; gRPC's fork handlers must be off for both (see workers/__init__.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
# gRPC's C core logs a refused TLS handshake (and other connection noise) at INFO on stderr, beside
# the one `error:` line the CLI prints for it; an operator can still ask for more with GRPC_VERBOSITY.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import dataclasses
import json
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from scriptpool.coordinator.cli import (
    artifact_cmd,
    bench_cmd,
    events_cmd,
    job_cmd,
    keys_cmd,
    log_flags,
    parsing,
    quota_cmd,
    session_cmd,
    state_cmd,
    status_cmd,
)
from scriptpool.coordinator.cli.parsing import non_negative_float, non_negative_int, positive_int
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.single_instance import AlreadyInUse
from scriptpool.core.durability import APPENDFSYNC_CHOICES
from scriptpool.core.metrics import METRICS_VARIABLE, WORKER_INDEX_VARIABLE, MetricsPortInUse, metrics_address
from scriptpool.errors import InvalidArgument, ScriptpoolError
from scriptpool.languages import Language

if TYPE_CHECKING:
    from scriptpool.client import ScriptpoolClient
    from scriptpool.sandbox.jail.policy import JailPolicy
    from scriptpool.workers.settings import WorkerSettings

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = parsing.EXIT_USAGE
"""Bad input: flags, files, a malformed Redis URL, Redis refusing the credentials."""
EXIT_UNAVAILABLE = 3
"""The coordinator or Redis cannot be reached (or a wait ran out)."""
EXIT_JAIL_INCOMPLETE = 4
"""`doctor`, `worker`, `up`, `demo`: a required sandbox layer (one not allowed missing) is unavailable
or not effective on this host."""
EXIT_IN_USE = 5
"""`up`: another `up` holds the state directory; `coordinator`/`up`: the listen address is taken."""


def _settings(args: argparse.Namespace) -> Settings:
    from_env = Settings.from_env()
    return from_env.with_overrides(
        redis_url=getattr(args, "redis_url", None),
        coordinator=getattr(args, "coordinator", None),
        listen=getattr(args, "listen", None),
        api_key=getattr(args, "api_key", None),
        max_batch_jobs=getattr(args, "max_batch_jobs", None),
        redis_appendfsync=getattr(args, "appendfsync", None),
        ack_after_fsync=getattr(args, "ack_after_fsync", None),
        **_tls_overrides(args, from_env),
    )


def _tls_overrides(args: argparse.Namespace, from_env: Settings) -> dict[str, object]:
    """--tls-cert/--tls-key/--tls-client-ca (coordinator) and --tls-ca (clients) over the environment."""
    overrides: dict[str, object] = {
        name: Path(getattr(args, name))
        for name in ("tls_cert", "tls_key", "tls_client_ca")
        if getattr(args, name, None)
    }
    if getattr(args, "tls_ca", None):
        overrides["client_tls"] = dataclasses.replace(from_env.client_tls, ca=Path(args.tls_ca), system_roots=False)
    return overrides


def _api_key(settings: Settings) -> str:
    if settings.api_key:
        return settings.api_key
    if settings.api_key_file.exists():
        return settings.api_key_file.read_text().strip()
    raise InvalidArgument(
        f"no API key: pass --api-key, set SCRIPTPOOL_API_KEY, or start `scriptpool up` (writes {settings.api_key_file})"
    )


def _client(args: argparse.Namespace) -> tuple[Settings, object]:
    from scriptpool.client import ScriptpoolClient

    settings = _settings(args)
    return settings, ScriptpoolClient(settings.coordinator, _api_key(settings), tls=settings.client_tls)


# ------------------------------------------------------------------ commands
def _jail_policy(args: argparse.Namespace) -> JailPolicy:
    """The layers allowed missing: SCRIPTPOOL_ALLOW_MISSING_LAYERS plus each --allow-missing-layer."""
    from scriptpool.sandbox.jail import ALLOW_MISSING_VARIABLE, JailPolicy

    policy = JailPolicy.from_variable(os.environ.get(ALLOW_MISSING_VARIABLE, ""))
    return policy.merged(JailPolicy.allowing(getattr(args, "allow_missing_layer", None) or []))


def _require_jail_for_stack(args: argparse.Namespace) -> None:
    """`up`/`demo`/a worker pool: refuse before starting anything when a required jail layer is missing (the workers
    would refuse one by one), and let the workers they start allow the same layers."""
    from scriptpool.sandbox.jail import ALLOW_MISSING_VARIABLE, require_jail

    policy = _jail_policy(args)
    require_jail(policy)
    if policy.allowed_missing:
        os.environ[ALLOW_MISSING_VARIABLE] = ",".join(sorted(policy.allowed_missing))


def cmd_up(args: argparse.Namespace) -> int:
    from scriptpool.coordinator.embedded import UP_METRICS, run_up

    metrics = metrics_address(args.metrics_port, os.environ, default=UP_METRICS)
    settings = dataclasses.replace(_settings(args), metrics=metrics)
    _require_jail_for_stack(args)
    return run_up(settings, args.workers)


def cmd_coordinator(args: argparse.Namespace) -> int:
    from scriptpool.coordinator.server import serve_forever

    serve_forever(_settings(args).with_overrides(metrics=metrics_address(args.metrics_port, os.environ)))
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from scriptpool.workers.settings import WorkerSettings
    from scriptpool.workers.worker import run_worker

    settings = WorkerSettings.from_env(
        redis_url=args.redis_url or "",
        coordinator=args.coordinator or "",
        name=args.name or "",
        queues=args.queues or "",
        metrics_port=None if args.check else args.metrics_port,
    )
    settings = dataclasses.replace(settings, jail_policy=_jail_policy(args))
    if args.processes is not None:
        return _run_pool(args, settings)
    if args.grace is not None:
        raise InvalidArgument("--grace is for a pool: add --processes N")
    if args.check:
        from scriptpool.workers.check import run_checks

        checks = run_checks(settings, worker=not args.no_worker)
        for check in checks:
            print(check.line())
        return EXIT_OK if all(check.ok for check in checks) else EXIT_UNAVAILABLE
    run_worker(settings, burst=args.burst)
    return EXIT_OK


def _run_pool(args: argparse.Namespace, settings: WorkerSettings) -> int:
    """`scriptpool worker --processes N`: each worker is this command without --processes/--grace."""
    from scriptpool.core.redis_connect import connect
    from scriptpool.workers.pool import DEFAULT_GRACE_SECONDS, PoolSettings, run_pool

    if args.check or args.name:
        raise InvalidArgument("--check and --name are for one worker: leave out --processes")
    worker = [sys.executable, "-m", "scriptpool.coordinator.cli.main", *(["-v"] if args.verbose else []), "worker"]
    worker += ["--burst"] if args.burst else []
    worker += ["--queues", ",".join(settings.listen_queues())] if args.queues else []
    pool = PoolSettings(
        processes=args.processes,
        worker_command=tuple(worker),
        grace_seconds=DEFAULT_GRACE_SECONDS if args.grace is None else args.grace,
        burst=args.burst,
    )
    _require_jail_for_stack(args)  # refuse (exit 4) before any worker starts; the workers allow the same layers
    connect(settings.redis_url).close()  # a bad or unreachable Redis is one line before any worker starts
    env = {k: v for k, v in os.environ.items() if k != "SCRIPTPOOL_WORKER_NAME"}  # each worker names itself host-pid
    env.update(REDIS_URL=settings.redis_url, SCRIPTPOOL_COORDINATOR=settings.coordinator)
    if settings.metrics is not None:  # the pool serves none itself; worker N serves on this port + N
        env["SCRIPTPOOL_METRICS"] = str(settings.metrics)
    return run_pool(pool, env)


def _language_for(path: Path, explicit: str | None) -> Language:
    if explicit:
        return Language.parse(explicit)
    if not path.suffix:
        raise InvalidArgument(f"cannot tell the language of {path}: use a .lua/.js/.py name or --lang")
    return Language.parse(path.suffix)


def run_file(client: object, path: Path, args: argparse.Namespace) -> int:
    from scriptpool.client import ScriptpoolClient
    from scriptpool.v1 import jobs_pb2

    assert isinstance(client, ScriptpoolClient)
    for flag, value in (("--timeout", args.timeout), ("--cpu-ms", args.cpu_ms), ("--wall-ms", args.wall_ms),
                        ("--memory-bytes", args.memory_bytes), ("--max-retries", args.max_retries)):  # fmt: skip
        job_cmd.check_non_negative(flag, value)
    language = _language_for(path, args.lang)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from exc
    limits = {k: v for k, v in (("cpu_time_ms", args.cpu_ms), ("wall_time_ms", args.wall_ms),
                                ("memory_bytes", args.memory_bytes)) if v}  # fmt: skip

    def queued(job: jobs_pb2.Job) -> None:
        # First, so that whatever happens to this command, `scriptpool job wait ID` can pick up.
        print(f"job {job.id}", file=sys.stderr, flush=True)

    job = client.run(
        language,
        source,
        session_id=args.session or "",
        limits=limits,
        timeout=args.timeout,
        max_retries=args.max_retries or 0,
        on_queued=queued,
    )
    return job_cmd.print_finished(job, as_json=args.json)


def cmd_run(args: argparse.Namespace) -> int:
    _, client = _client(args)
    return run_file(client, Path(args.file), args)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a throwaway embedded stack, run one file, stop everything."""
    from scriptpool.client import ScriptpoolClient
    from scriptpool.coordinator.embedded import EmbeddedStack

    _require_jail_for_stack(args)
    with tempfile.TemporaryDirectory(prefix="scriptpool-demo-") as state:
        address = f"127.0.0.1:{_free_port()}"
        settings = _settings(args).with_overrides(listen=address, coordinator=address, state_dir=Path(state))
        print(f"starting scriptpool (coordinator {address}, {args.workers} workers, private redis-server)...")
        stack = EmbeddedStack(settings, workers=args.workers).start()
        try:
            with ScriptpoolClient(address, stack.api_key) as client:
                print(f"running {args.file}:")
                return run_file(client, Path(args.file), args)
        finally:
            stack.stop()
            print("scriptpool stopped.")


def client_command(run: Callable[[ScriptpoolClient, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A subcommand (`session`, `artifact`, `state`, `events`) run with the client that
    --coordinator/--api-key (or the environment, or a running `scriptpool up`) name."""

    def command(args: argparse.Namespace) -> int:
        from scriptpool.client import ScriptpoolClient

        _, client = _client(args)
        assert isinstance(client, ScriptpoolClient)
        return run(client, args)

    return command


def cmd_apikey(args: argparse.Namespace) -> int:
    """Create a key straight in Redis: how the first admin key is made (`scriptpool keys` needs one)."""
    from scriptpool.coordinator.services.admin import created_key
    from scriptpool.coordinator.stores.api_keys import ApiKeyStore, parse_scopes
    from scriptpool.core.redis_connect import connect

    settings = _settings(args)
    if not settings.redis_url:
        raise InvalidArgument("REDIS_URL (or --redis-url) must name the coordinator's Redis")
    store = ApiKeyStore(connect(settings.redis_url), max_keys_per_principal=settings.max_keys_per_principal)
    created = store.create(
        args.principal, name=args.name, scopes=parse_scopes([args.scopes]), expires_in=args.expires_in
    )
    keys_cmd.print_created(created_key(created), as_json=args.json)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    return bench_cmd.run(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Every layer, applied or not; exit 4 when a required one (not allowed missing) is unavailable,
    the condition under which a worker on this host refuses to start."""
    from scriptpool.sandbox.jail import probe_host
    from scriptpool.sandbox.jail.policy import how_to_provide

    policy = _jail_policy(args)
    report = probe_host()
    required = policy.missing_required(report)
    if args.json:
        print(json.dumps({"applied": report.applied, "unavailable": report.unavailable,
                          "missing_required": sorted(required), "ok": not required}))  # fmt: skip
        return EXIT_JAIL_INCOMPLETE if required else EXIT_OK
    for layer in report.applied:
        print(f"ok           {layer}")
    for layer, why in policy.missing_allowed(report).items():
        print(f"ALLOWED      {layer}: {why} (missing; allowed by --allow-missing-layer: weaker isolation)")
    for layer, why in required.items():
        print(f"UNAVAILABLE  {layer}: {why}; to provide it: {how_to_provide(layer)}")
    if required:
        names = " ".join(f"--allow-missing-layer {layer}" for layer in required)
        print(f"a worker on this host refuses to start; to run it with weaker isolation instead: {names}")
    return EXIT_JAIL_INCOMPLETE if required else EXIT_OK


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = parsing.OneLineParser(prog="scriptpool", description="Sandboxed script worker pool.")
    parser.add_argument("--version", action="version", version=f"scriptpool {_version()}")
    parsing.add_global_flags(parser)
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(dest="command", required=True)
    )

    def with_redis(p: argparse.ArgumentParser) -> None:
        p.add_argument("--redis-url", help="Redis URL (default: $REDIS_URL)")

    def with_client(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--coordinator", help="coordinator address (default: $SCRIPTPOOL_COORDINATOR or 127.0.0.1:50051)"
        )
        p.add_argument("--api-key", help="API key (default: $SCRIPTPOOL_API_KEY or the one `scriptpool up` wrote)")
        with_client_tls(p)

    def with_client_tls(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tls-ca",
            help="dial the coordinator over TLS, verifying its certificate against this PEM CA file (default "
            "$SCRIPTPOOL_TLS_CA; $SCRIPTPOOL_TLS=1: the system roots; client certificate: "
            "$SCRIPTPOOL_TLS_CLIENT_CERT/KEY)",
        )

    def with_server_tls(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tls-cert", help="serve TLS on TCP addresses with this PEM certificate (default $SCRIPTPOOL_TLS_CERT)"
        )
        p.add_argument("--tls-key", help="the PEM key of --tls-cert (default $SCRIPTPOOL_TLS_KEY)")
        p.add_argument(
            "--tls-client-ca",
            help="mutual TLS: every TCP client must present a certificate signed by this PEM CA "
            "(default $SCRIPTPOOL_TLS_CLIENT_CA)",
        )

    def with_metrics(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument(
            "--metrics-port",
            metavar="[HOST:]PORT",
            help=f"serve Prometheus metrics on http://HOST:PORT/metrics (HOST default 127.0.0.1; 'off': none); "
            f"default ${METRICS_VARIABLE} or {default}",
        )

    def with_jail(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--allow-missing-layer",
            action="append",
            metavar="LAYER",
            help="run even if this host cannot provide this sandbox layer (weaker isolation; repeatable; "
            "also $SCRIPTPOOL_ALLOW_MISSING_LAYERS=a,b); LAYER is a name `scriptpool doctor` prints",
        )

    def with_run(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="script file: .lua, .js or .py")
        p.add_argument("--lang", help="language, when the extension does not say")
        p.add_argument("--session", help="run in this session (default: a new one)")
        p.add_argument("--timeout", type=non_negative_float, default=300.0, help="seconds to wait for the result")
        p.add_argument("--cpu-ms", type=non_negative_int, help="CPU time limit (ms)")
        p.add_argument("--wall-ms", type=non_negative_int, help="wall time limit (ms)")
        p.add_argument("--memory-bytes", type=non_negative_int, help="memory limit (bytes)")
        p.add_argument(
            "--max-retries",
            type=non_negative_int,
            default=0,
            help="times the job is queued again if its worker is lost (default 0)",
        )
        p.add_argument("--json", action="store_true", help="print the whole job as JSON")

    p = sub.add_parser("up", help="start redis (unless REDIS_URL), the coordinator and workers in the foreground")
    with_redis(p)
    p.add_argument("--listen", help="coordinator listen address (default 127.0.0.1:50051)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    with_server_tls(p)
    with_jail(p)
    p.add_argument(
        "--appendfsync",
        choices=APPENDFSYNC_CHOICES,
        help="the private Redis's appendfsync (default $SCRIPTPOOL_REDIS_APPENDFSYNC or everysec)",
    )
    p.add_argument(
        "--ack-after-fsync",
        action="store_true",
        default=None,
        help="acknowledge submissions and results only once fsynced (default $SCRIPTPOOL_ACK_AFTER_FSYNC)",
    )
    with_metrics(p, "127.0.0.1:9464: the coordinator's; worker process N serves on that port + 1 + N")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("coordinator", help="run the gRPC coordinator")
    with_redis(p)
    p.add_argument("--listen", help="listen address (default $SCRIPTPOOL_LISTEN or 127.0.0.1:50051)")
    p.add_argument(
        "--max-batch-jobs",
        type=positive_int,
        help="most jobs one SubmitJobs call may submit (default $SCRIPTPOOL_MAX_BATCH_JOBS or 1000)",
    )
    with_server_tls(p)
    with_metrics(p, "off")
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", help="run one RQ worker process, or a pool of them (--processes N)")
    with_redis(p)
    p.add_argument("--coordinator", help="coordinator address for the scripts' global calls")
    p.add_argument("--name", help="worker name (default host-pid)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty (a pool: when all workers did)")
    p.add_argument(
        "--processes",
        type=positive_int,
        metavar="N",
        help="run a pool of N worker processes that starts dead ones again "
        "(exit 0 clean, 1 workers had to be killed, 2 bad input)",
    )
    p.add_argument(
        "--queues", help="comma-separated RQ queues to take jobs from, in priority order (default $SCRIPTPOOL_QUEUE)"
    )
    p.add_argument(
        "--grace",
        type=non_negative_float,
        metavar="SECONDS",
        help="with --processes: seconds the workers have to finish their jobs after SIGTERM/SIGINT (default 30)",
    )
    with_jail(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="probe instead of working: Redis, the coordinator's health, a registered worker of this host "
        "(exit 0 when all pass, 3 otherwise; for liveness/readiness probes)",
    )
    p.add_argument("--no-worker", action="store_true", help="with --check: leave out the registered-worker check")
    with_metrics(p, f"off; the port moves up by ${WORKER_INDEX_VARIABLE} when set")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("run", help="submit a script, wait, print its output and result")
    with_client(p)
    with_run(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="start a throwaway stack, run one script, stop (used by `make demo`)")
    with_redis(p)
    with_run(p)
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    with_jail(p)
    p.set_defaults(func=cmd_demo)

    for name, module in (("session", session_cmd), ("artifact", artifact_cmd), ("state", state_cmd),
                         ("events", events_cmd), ("job", job_cmd)):  # fmt: skip
        module.add_parser(sub, with_client)
        sub.choices[name].set_defaults(func=client_command(module.run))

    p = sub.add_parser("apikey", help="create client API keys (talks to Redis directly: the first admin key)")
    with_redis(p)
    asub = p.add_subparsers(dest="apikey_command", required=True)
    keys_cmd.add_key_flags(asub.add_parser("create", help="create a key for PRINCIPAL and print it"))
    p.set_defaults(func=cmd_apikey)
    keys_cmd.add_parser(sub, with_client).set_defaults(func=client_command(keys_cmd.run))
    quota_cmd.add_parser(sub, with_redis).set_defaults(func=quota_cmd.run)

    bench_cmd.add_parser(sub).set_defaults(func=cmd_bench)

    p = sub.add_parser("doctor", help="report which sandbox layers this host provides (exit 4 when one is missing)")
    p.add_argument("--json", action="store_true", help="one JSON object: {applied, unavailable, missing_required, ok}")
    with_jail(p)
    p.set_defaults(func=cmd_doctor)

    status_cmd.add_parser(sub, with_redis).set_defaults(func=status_cmd.run)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scriptpool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parsing.parse(build_parser(), sys.argv[1:] if argv is None else argv)
    try:
        log_flags.apply(args)
        code: int = args.func(args)
        return code
    except ScriptpoolError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if isinstance(exc, (AlreadyInUse, MetricsPortInUse)):
            return EXIT_IN_USE
        from scriptpool.sandbox.jail.policy import JailIncomplete  # here: client commands never load the sandbox

        if isinstance(exc, JailIncomplete):
            return EXIT_JAIL_INCOMPLETE
        return EXIT_UNAVAILABLE if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else EXIT_USAGE
    except OSError as exc:  # a file the command was pointed at: one line, never a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: INVALID_ARGUMENT:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
