"""`scriptpool bench [throughput|latency|callbacks|sessions|sandbox|artifacts|scale|memory|worker|waits|all]`."""

from __future__ import annotations

import argparse
import json
import platform
import signal
from typing import Any

from scriptpool.coordinator.bench.cases import CASES, Options
from scriptpool.coordinator.bench.stack import BenchStack
from scriptpool.coordinator.cli import progress
from scriptpool.coordinator.cli.parsing import positive_int


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="benchmarks, each with a baseline measured in the same run")
    p.add_argument("case", choices=[*CASES, "all"], nargs="?", default="all")
    p.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    p.add_argument("--coordinator", help="use this coordinator instead of starting one")
    p.add_argument("--jobs", type=positive_int, default=200, help="jobs per measured run (default 200)")
    p.add_argument("--repeat", type=positive_int, default=3, help="measured runs after the warm-up (default 3)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes for throughput (default 2)")
    p.add_argument("--calls", type=positive_int, default=200, help="global calls per job in `callbacks` (default 200)")
    p.add_argument(
        "--load",
        choices=["batched", "per-call"],
        default="batched",
        help="how `cpu`, `worker` and `scale` submit jobs: SubmitJobs calls of 25 jobs from 4 threads "
        "(default), or one waiting SubmitJob per job from 16 threads; `throughput` measures both",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per case")
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through BenchStack.__exit__: its processes are stopped


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    options = Options(jobs=args.jobs, repeat=args.repeat, workers=args.workers, calls=args.calls, load=args.load)
    names = list(CASES) if args.case == "all" else [args.case]
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    hosts = 2 if "scale" in names else 0  # `scale` also measures workers on two namespace hosts
    with BenchStack(args.redis_url or "", args.coordinator or "", hosts=hosts) as stack:
        for name in progress.steps(names, shown=progress.wanted(as_json=args.json)):
            result: dict[str, Any] = {"case": name, "machine": machine, **CASES[name](stack, options)}
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(f"== {name}")
                for key, value in result.items():
                    if key not in ("case", "machine"):
                        print(f"  {key:32} {value}")
    return 0
