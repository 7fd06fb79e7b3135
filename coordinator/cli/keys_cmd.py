"""`scriptpool keys create|list|revoke|rotate` (AdminService, with an admin key) and
`scriptpool apikey create` (straight into Redis: the bootstrap of the first admin).

A new key's secret is the only thing on stdout (`KEY=$(scriptpool keys create ci)`), its record on
stderr; `--json` prints both as one object instead. Secrets are never listed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scriptpool.client import ScriptpoolClient
from scriptpool.v1 import admin_pb2

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
SCOPES_HELP = "comma-separated: submit, read, admin (default submit,read)"


def duration(text: str) -> float:
    """`--expires-in`: seconds, or a number with s/m/h/d; 0 = never."""
    match = DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 30d; 0 = never)")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def add_key_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a new key (`keys create`, `apikey create`)."""
    p.add_argument("principal", help="who the key acts for")
    p.add_argument("--name", default="", help="a label for people (e.g. ci, laptop)")
    p.add_argument("--scopes", default="", help=SCOPES_HELP)
    p.add_argument("--expires-in", type=duration, default=0.0, metavar="DURATION",
                   help="seconds, or with s/m/h/d (e.g. 30d); default never")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the secret and the key's record as one JSON object")


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    p = sub.add_parser("keys", help="manage API keys over the API (needs a key with the admin scope)")
    with_client(p)
    ksub = p.add_subparsers(dest="keys_command", required=True)
    add_key_flags(ksub.add_parser("create", help="create a key and print its secret (shown this once)"))
    lp = ksub.add_parser("list", help="list keys (never their secrets), oldest first")
    lp.add_argument("--principal", default="", help="only this principal's keys")
    lp.add_argument("--json", action="store_true", help="the keys as a JSON array")
    for name, what in (("revoke", "revoke a key at once, on every coordinator"),
                       ("rotate", "a new secret for a key (same principal, name, scopes, expiry); the old one "
                                  "is revoked at once")):  # fmt: skip
        kp = ksub.add_parser(name, help=what)
        kp.add_argument("id", help="the key's id (`scriptpool keys list`)")
        kp.add_argument("--json", action="store_true", help="the result as JSON")
    return p


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    command = args.keys_command
    if command == "create":
        request = admin_pb2.CreateKeyRequest(
            principal=args.principal, name=args.name, scopes=_scope_words(args.scopes),
            expires_in_seconds=args.expires_in,
        )  # fmt: skip
        print_created(client.admin.create_key(request), as_json=args.json)
    elif command == "list":
        keys = list_all(client, args.principal)
        if args.json:
            print(json.dumps([key_dict(key) for key in keys], indent=2))
        else:
            for key in keys:
                print(key_line(key))
    elif command == "revoke":
        key = client.admin.revoke_key(admin_pb2.KeyRef(id=args.id))
        print(json.dumps(key_dict(key), indent=2) if args.json else key_line(key))
    else:
        print_created(client.admin.rotate_key(admin_pb2.KeyRef(id=args.id)), as_json=args.json)
    return 0


def list_all(client: ScriptpoolClient, principal: str) -> list[admin_pb2.KeyInfo]:
    """Every page of ListKeys."""
    keys: list[admin_pb2.KeyInfo] = []
    token = ""
    while True:
        page = client.admin.list_keys(admin_pb2.ListKeysRequest(principal=principal, page_token=token))
        keys.extend(page.keys)
        token = page.next_page_token
        if not token:
            return keys


def _scope_words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def _when(epoch: float) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else None


def key_dict(key: admin_pb2.KeyInfo) -> dict[str, Any]:
    return {
        "id": key.id, "principal": key.principal, "name": key.name, "scopes": list(key.scopes),
        "created_at": _when(key.created_at), "expires_at": _when(key.expires_at),
        "last_used_at": _when(key.last_used_at), "revoked_at": _when(key.revoked_at), "legacy": key.legacy,
    }  # fmt: skip


def key_line(key: admin_pb2.KeyInfo) -> str:
    if key.revoked_at:
        status = f"revoked {_when(key.revoked_at)}"
    elif key.expires_at and key.expires_at <= time.time():
        status = "expired"
    else:
        status = "active"
    return (
        f"{key.id}  {key.principal}  name={key.name or '-'}  scopes={','.join(key.scopes)}  "
        f"created={_when(key.created_at)}  expires={_when(key.expires_at) or 'never'}  "
        f"last_used={_when(key.last_used_at) or 'never'}  {status}"
    )


def print_created(created: admin_pb2.CreatedKey, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"secret": created.secret, "key": key_dict(created.key)}, indent=2))
        return
    print(created.secret)
    print(f"key {key_line(created.key)} (the secret above is shown this once)", file=sys.stderr)
