"""`scriptpool events ...`: publish an event, or follow a principal's events live. Data is JSON."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.output import to_json
from scriptpool.coordinator.cli.parsing import non_negative_int
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import events_pb2
from scriptpool.values import from_value, to_value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: object) -> None:
    p = sub.add_parser("events", help="publish events, or follow your events live")
    assert callable(with_client)
    with_client(p)
    esub = p.add_subparsers(dest="events_command", required=True)
    ep = esub.add_parser("emit", help="publish an event NAME with JSON data")
    ep.add_argument("name", help="e.g. deploy.finished")
    ep.add_argument("data", nargs="?", default="null", help='a JSON value, e.g. {"version": 3}')
    ep = esub.add_parser("tail", help="print your events matching PATTERN as they happen (Ctrl-C stops)")
    ep.add_argument("pattern", nargs="?", default="*", help="a glob over event names, e.g. 'session.*'")
    ep.add_argument("--count", type=non_negative_int, default=0, help="stop after this many events (0: never)")
    ep.add_argument("--json", action="store_true", help="one JSON object per line")


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    if args.events_command == "emit":
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"data is not JSON ({exc.msg}); quote strings: '\"text\"'") from None
        client.events.emit(events_pb2.EmitEventRequest(name=args.name, data=to_value(data)))
        return 0
    if args.count < 0:
        raise InvalidArgument("--count must be 0 (never stop) or more")
    seen = 0
    for event in client.follow_events(args.pattern):
        print(_line(event, args.json), flush=True)
        seen += 1
        if seen == args.count:
            break
    return 0


def _line(event: events_pb2.Event, as_json: bool) -> str:
    data = from_value(event.data)
    if as_json:
        return to_json(
            {"id": event.id, "name": event.name, "session_id": event.session_id, "job_id": event.job_id,
             "timestamp": event.timestamp, "data": data}
        )  # fmt: skip
    when = datetime.fromtimestamp(event.timestamp, UTC).strftime("%H:%M:%S.%f")[:-3]
    where = f" session {event.session_id}" if event.session_id else ""
    return f"{when} {event.name}{where} {to_json(data)}"
