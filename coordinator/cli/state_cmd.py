"""`scriptpool state ...`: read and write State scopes from a terminal. Values are JSON."""

from __future__ import annotations

import argparse
import json

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.output import to_json
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import state_pb2
from scriptpool.values import from_value, to_value

SCOPE_HELP = "global, session:current, session:<id>"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: object) -> None:
    p = sub.add_parser("state", help="read and write State (global or a session's)")
    assert callable(with_client)
    with_client(p)
    ssub = p.add_subparsers(dest="state_command", required=True)
    sp = ssub.add_parser("get", help="print a key's value as JSON (null when absent)")
    sp.add_argument("scope", help=SCOPE_HELP)
    sp.add_argument("key")
    sp = ssub.add_parser("set", help="set a key to a JSON value (null deletes it)")
    sp.add_argument("scope", help=SCOPE_HELP)
    sp.add_argument("key")
    sp.add_argument("value", help='a JSON value, e.g. 3, "text", {"a": [1, 2]}')
    sp = ssub.add_parser("delete", help="delete a key")
    sp.add_argument("scope", help=SCOPE_HELP)
    sp.add_argument("key")
    sp = ssub.add_parser("list", help="print the scope's keys, one per line")
    sp.add_argument("scope", help=SCOPE_HELP)


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    command = args.state_command
    if command == "get":
        answer = client.state.get(state_pb2.StateKey(scope=args.scope, key=args.key))
        print(to_json(from_value(answer.value)))
    elif command == "set":
        try:
            value = json.loads(args.value)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"value is not JSON ({exc.msg}); quote strings: '\"text\"'") from None
        client.state.set(state_pb2.SetStateRequest(scope=args.scope, key=args.key, value=to_value(value)))
    elif command == "delete":
        answer = client.state.delete(state_pb2.StateKey(scope=args.scope, key=args.key))
        print("deleted" if answer.found else "not found")
    else:
        for key in client.state.list(state_pb2.StateScope(scope=args.scope)).keys:
            print(key)
    return 0
