"""What one job's Hook and Event calls have set up, kept by its bridge in the worker: the job's hooks
(id, point, priority) and event subscriptions (id, pattern), and how many events it published and
received. `Hook.list`, `Event.listSubscriptions` and `Event.getStats` answer from it, without a
coordinator call; it lives as long as the job (numbers are per job, see docs/architecture.md#events).
"""

from __future__ import annotations

import dataclasses
import itertools


@dataclasses.dataclass(frozen=True)
class HookEntry:
    hook_id: str
    point: str
    priority: int
    order: int
    """Registration order: hooks of the same priority run in it."""


@dataclasses.dataclass
class EventBook:
    language: str = ""
    hooks: dict[str, HookEntry] = dataclasses.field(default_factory=dict)
    subscriptions: dict[str, str] = dataclasses.field(default_factory=dict)
    """Event subscription id -> its pattern (Event.subscribe and Event.on; hooks are apart)."""
    published: int = 0
    received: int = 0
    _order: itertools.count[int] = dataclasses.field(default_factory=itertools.count)

    def add_hook(self, hook_id: str, point: str, priority: int) -> HookEntry:
        entry = HookEntry(hook_id, point, priority, next(self._order))
        self.hooks[hook_id] = entry
        return entry

    def ordered_hooks(self) -> list[HookEntry]:
        """Lowest priority value (highest level) first, same priority in registration order."""
        return sorted(self.hooks.values(), key=lambda h: (h.priority, h.order))


__all__ = ["EventBook", "HookEntry"]
