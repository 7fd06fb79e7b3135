"""The event streams: one Redis Stream per principal, so one principal's events never evict another's.

  sp:events:{principal}         stream  the principal's events: its `Event.emit`s, `state.changed`, and
                                        the lifecycle entries of its sessions and their jobs
  sp:config:event-retention     string  entries each stream keeps (about: trimmed with MAXLEN ~); the
                                        coordinator writes its `max_events_per_principal` at start

Every writer, Python or Lua, appends through `LUA_APPEND_EVENT`, which finds the principal (given,
or the session's owner), reads the retention and trims that principal's stream only.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis import Redis
from redis.client import Pipeline

from scriptpool.core import lua
from scriptpool.core.keys import EVENT_RETENTION_KEY

DEFAULT_EVENT_RETENTION = 10_000


LUA_APPEND_EVENT = lua.load(
    "append_event", EVENT_RETENTION_KEY=EVENT_RETENTION_KEY, DEFAULT_EVENT_RETENTION=DEFAULT_EVENT_RETENTION
)
"""The Lua function `append_event(principal, session_id, fields)`, for the scripts that append events."""
_APPEND = LUA_APPEND_EVENT + lua.load("append")
APPEND_SCRIPT = _APPEND
"""The script `append_event` sends (an EVAL in a pipeline): a script that runs a pipeline's commands
itself (coordinator/stores/admission.py) calls `append_event` for it instead, as Lua cannot EVAL."""


def append_event(target: Redis | Pipeline, principal: str, session_id: str, fields: Mapping[str, str | bytes]) -> None:
    """Append to the principal's stream (principal '' = the owner of `session_id`), in the same round
    trip as the rest of `target`'s pipeline (EVAL, so no script has to be loaded first)."""
    flat: list[str | bytes] = []
    for name, value in fields.items():
        flat += [name, value]
    target.eval(_APPEND, 0, principal, session_id, *flat)
