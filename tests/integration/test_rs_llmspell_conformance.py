"""rs-llmspell conformance (issue 16): each Lua script in tests/conformance/rs_llmspell/ is written
as an rs-llmspell user writes it (see the comment at its top) and runs unchanged as a job on the real
stack; it asserts what it relies on itself, so the job must simply succeed."""

from __future__ import annotations

from pathlib import Path

import pytest

from scriptpool.client import ScriptpoolClient
from scriptpool.languages import Language

from .helpers import result_of

FOLDER = Path(__file__).resolve().parent.parent / "conformance" / "rs_llmspell"


@pytest.mark.parametrize("script", sorted(FOLDER.glob("*.lua")), ids=lambda p: p.stem)
def test_rs_llmspell_script_runs_unchanged(client: ScriptpoolClient, script: Path) -> None:
    result_of(client.run(Language.LUA, script.read_text(), timeout=60))
