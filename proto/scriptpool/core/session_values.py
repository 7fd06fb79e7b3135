"""How a session looks to a script and to `--json` output: a plain map.

rs-llmspell names sit beside scriptpool's own (issue 16): `status` is `state`, `custom_metadata` is
`metadata`; `created_at`/`updated_at` are ISO-8601 strings with the seconds kept as
`created_at_unix`/`updated_at_unix` (ADR 0011, `scriptpool.core.script_times`)."""

from __future__ import annotations

from scriptpool.core.script_times import with_times
from scriptpool.v1 import sessions_pb2
from scriptpool.values import PlainValue, from_value_map


def session_state_name(state: int) -> str:
    return sessions_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_").lower()  # type: ignore[arg-type]


def session_to_plain(session: sessions_pb2.Session) -> dict[str, PlainValue]:
    state = session_state_name(session.state)
    plain: dict[str, PlainValue] = {
        "id": session.id,
        "name": session.name,
        "description": session.description,
        "state": state,
        "status": state,
        "tags": list(session.tags),
        "metadata": from_value_map(session.metadata),
        "custom_metadata": from_value_map(session.metadata),
        "parent_session_id": session.parent_session_id or None,
    }
    return with_times(plain, created_at=session.created_at, updated_at=session.updated_at)


__all__ = ["session_state_name", "session_to_plain"]
