"""How a session looks to a script and to `--json` output: a plain map."""

from __future__ import annotations

from scriptpool.v1 import sessions_pb2
from scriptpool.values import PlainValue, from_value_map


def session_state_name(state: int) -> str:
    return sessions_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_").lower()  # type: ignore[arg-type]


def session_to_plain(session: sessions_pb2.Session) -> dict[str, PlainValue]:
    return {
        "id": session.id,
        "name": session.name,
        "description": session.description,
        "state": session_state_name(session.state),
        "tags": list(session.tags),
        "metadata": from_value_map(session.metadata),
        "parent_session_id": session.parent_session_id or None,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
    }
