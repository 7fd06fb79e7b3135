"""`scriptpool quota set|get|reset PRINCIPAL`: per-principal quotas (docs/adr/0020-quotas.md).

Like `scriptpool apikey`, it talks to Redis directly (--redis-url, else $REDIS_URL, else the private
Redis of a `scriptpool up` on this host): an operator's tool, no API key. An override above the
server maximum (read from the same environment the coordinator reads: give both the same), negative
or not finite is one line and exit 2; the coordinator caps every override at its own maximum anyway.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from redis import Redis

from scriptpool.coordinator.cli.status_cmd import up_redis_url
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores.quotas import QUOTAS, Quota, QuotaStore, check_override, maxima, number
from scriptpool.core.redis_connect import connect
from scriptpool.errors import InvalidArgument

_USE = {
    "queued_jobs": "queued_jobs",
    "running_jobs": "running_jobs",
    "submission_burst": "submission_tokens",
    "sessions": "sessions",
    "artifact_bytes": "artifact_bytes",
    "state_bytes": "state_bytes",
    "subscriptions": "subscriptions",
}
"""What `QuotaStore.usage` reports for each quota (the burst: tokens left; the rate: nothing)."""


def add_parser(sub: Any, with_redis: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "quota", help="per-principal quotas: set, show (limits and use), reset (talks to Redis directly)"
    )
    with_redis(p)
    qsub = p.add_subparsers(dest="quota_command", required=True)
    setter = qsub.add_parser("set", help="lower PRINCIPAL's quotas below the server maximums")
    setter.add_argument("principal")
    for quota in QUOTAS:
        note = "" if quota.enforced else " (shown, not enforced yet)"
        setter.add_argument(
            f"--{quota.name.replace('_', '-')}",
            dest=quota.name,
            type=float,
            metavar="N",
            help=f"{quota.unit}, 0 to the server's {quota.setting}{note}",
        )
    getter = qsub.add_parser("get", help="PRINCIPAL's quotas: limit, override, server maximum and current use")
    getter.add_argument("principal")
    getter.add_argument("--json", action="store_true", help="one JSON object")
    reset = qsub.add_parser("reset", help="drop PRINCIPAL's overrides (all, or --quota NAME ...)")
    reset.add_argument("principal")
    reset.add_argument("--quota", action="append", default=[], metavar="NAME", help="one quota (repeatable)")
    return p


def run(args: argparse.Namespace) -> int:
    from scriptpool.coordinator.auth import PRINCIPAL_PATTERN

    if not PRINCIPAL_PATTERN.match(args.principal):
        raise InvalidArgument("principal: 1-128 characters of letters, digits and . _ @ -, starting alphanumeric")
    settings = Settings.from_env()
    store_maxima = maxima(settings)
    values = {q.name: getattr(args, q.name) for q in QUOTAS if getattr(args, q.name, None) is not None}
    if args.quota_command == "set" and not values:
        raise InvalidArgument("quota set: give at least one quota, e.g. --queued-jobs 100")
    for name in [*values, *getattr(args, "quota", [])]:
        check_override(store_maxima, name, values.get(name, 0))  # (before Redis is even asked)
    store = QuotaStore(_redis(args, settings), store_maxima)
    if args.quota_command == "set":
        store.set(args.principal, values)  # (every value checked before any is written)
        return 0
    if args.quota_command == "reset":
        store.reset(args.principal, args.quota)
        return 0
    report = read_report(store, args.principal)
    print(json.dumps(report) if args.json else render_text(report))
    return 0


def _redis(args: argparse.Namespace, settings: Settings) -> Redis:
    url = args.redis_url or settings.redis_url or up_redis_url(settings.state_dir)
    if not url:
        raise InvalidArgument("REDIS_URL (or --redis-url) must name the coordinator's Redis")
    return connect(url)


def read_report(store: QuotaStore, principal: str) -> dict[str, Any]:
    overrides = store.overrides(principal)
    limits = store.limits(principal)
    use = store.usage(principal, time.time())

    def exact(quota: Quota, value: float | None) -> float | None:
        return int(value) if value is not None and quota.whole else value

    quotas = {
        quota.name: {
            "limit": exact(quota, limits[quota.name]),
            "override": exact(quota, overrides.get(quota.name)),
            "server_maximum": exact(quota, store.maxima[quota.name]),
            "in_use": use[_USE[quota.name]] if quota.name in _USE else None,
            "enforced": quota.enforced,
        }
        for quota in QUOTAS
    }
    return {"principal": principal, "quotas": quotas}


def render_text(report: dict[str, Any]) -> str:
    lines = [f"principal {report['principal']}", f"{'quota':<24}{'in use':>16}{'limit':>16}{'server max':>16}  note"]
    for name, row in report["quotas"].items():
        use = "-" if row["in_use"] is None else number(row["in_use"])
        notes = []
        if row["override"] is not None:
            notes.append("override" if row["override"] <= row["server_maximum"] else "override capped")
        if name == "submission_burst":
            notes.append("in use = tokens left")
        if not row["enforced"]:
            notes.append("not enforced yet")
        lines.append(
            f"{name:<24}{use:>16}{number(row['limit']):>16}{number(row['server_maximum']):>16}  {', '.join(notes)}"
        )
    return "\n".join(lines)
