"""Warm the engines once in the zygote, so its children only instantiate them."""

from __future__ import annotations

import logging

from scriptpool.sandbox.jail import prepare_forking_process
from scriptpool.sandbox.runner import prewarm

log = logging.getLogger(__name__)


def warm_engines() -> None:
    """Engines first (the JavaScript guest is compiled in a child forked before anything else), then
    the jail's per-process precomputation; every child inherits both."""
    try:
        from scriptpool.sandbox.engines.js_mapped import prewarm_mapped

        prewarm_mapped()
    except Exception:  # e.g. a noexec temp directory: compile in-process instead (prewarm below)
        log.warning("zygote: mapping the compiled JavaScript guest failed; compiling it in-process", exc_info=True)
    prewarm()
    prepare_forking_process()
