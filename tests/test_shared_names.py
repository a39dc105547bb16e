"""Names the host, the agent and the sandbox share come from ``sandcell.protocol`` alone (no sandbox needed)."""

from __future__ import annotations

import pytest

from sandcell.agent.tool import EXEC_CODE, BadArguments, parse_arguments
from sandcell.isolation.image import ETC_FILES
from sandcell.protocol import LANGUAGE_ALIASES, LANGUAGES, SANDBOX_UID, normalize_language, part_name, part_prefix


@pytest.mark.parametrize("alias", sorted(LANGUAGE_ALIASES))
def test_the_agent_takes_every_name_the_sandbox_takes(alias: str) -> None:
    """The agent once refused ``python3``, which the sandbox runs."""
    assert parse_arguments(f'{{"code": "1", "language": "{alias}"}}') == ("1", normalize_language(alias))


def test_the_agent_offers_the_sandboxs_languages() -> None:
    assert EXEC_CODE["function"]["parameters"]["properties"]["language"]["enum"] == list(LANGUAGES)
    with pytest.raises(BadArguments, match="unknown language"):
        parse_arguments('{"code": "1", "language": "cobol"}')


def test_the_sandbox_user_is_the_protocols() -> None:
    assert f":{SANDBOX_UID}:{SANDBOX_UID}:" in ETC_FILES["passwd"]


def test_a_part_name_starts_with_its_prefix() -> None:
    assert part_name("/tmp/state", 1 << 20, 4096).startswith(part_prefix("/tmp/state", 1 << 20))
