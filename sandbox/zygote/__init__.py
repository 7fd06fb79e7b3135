"""The zygote: a small process that holds only the sandbox engines and forks sandbox children for
its worker (see `_server` for the process, `_protocol` for its messages)."""

from scriptpool.sandbox.zygote._protocol import CHILD, EXITED, FAILED, SIZE, SPAWN, Message, languages_mask

__all__ = ["CHILD", "EXITED", "FAILED", "SIZE", "SPAWN", "Message", "languages_mask"]
