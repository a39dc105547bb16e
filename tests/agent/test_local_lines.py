"""The embedded model's line mode: each element of ``lines`` is one line of source, escapes and all."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from sandcell import Sandbox
from sandcell.agent.providers.local import parse_turn, schema_messages

# (language, line as the model means it, what running it prints)
CASES = [
    ("python", r"print('a\nb')", "a\nb\n"),
    ("python", r"print('a\tb')", "a\tb\n"),
    ("python", r"print('a\\b')", "a\\b\n"),
    ("python", r"""print("it's \"quoted\"")""", 'it\'s "quoted"\n'),
    ("python", r"print('x,y\nz'.split('\n'))", "['x,y', 'z']\n"),
    ("javascript", r"console.log('a\nb'.split('\n').length)", "2\n"),
    ("javascript", r"console.log('a\tb')", "a\tb\n"),
    ("javascript", r"console.log('a\\b')", "a\\b\n"),
    ("javascript", r"""console.log("say \"hi\"")""", 'say "hi"\n'),
    ("bash", r"printf 'a\nb\n'", "a\nb\n"),
    ("bash", r"printf 'a\tb\n'", "a\tb\n"),
    ("bash", r"echo 'a\\b'", "a\\\\b\n"),
    ("bash", r"""echo "say \"hi\"" """, 'say "hi"\n'),
]


def code_of(raw: str) -> tuple[str, str]:
    call = parse_turn(raw, 1).tool_calls[0]
    arguments = json.loads(call.arguments)
    return arguments["code"], arguments["language"]


def as_model_wrote_it(language: str, line: str, escapes_decoded: bool) -> str:
    """The model's JSON: escaped properly, or with the line's ``\\n``/``\\t`` written as JSON escapes (decoded to the characters)."""
    if escapes_decoded:
        line = line.replace("\\n", "\n").replace("\\t", "\t")
    return json.dumps({"action": "run_code", "language": language, "lines": ["x = 1" if language == "python" else "true" if language == "bash" else "1", line]})


@pytest.fixture
def sbx(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(scope="module")


@pytest.mark.parametrize("escapes_decoded", [False, True], ids=["escaped", "decoded"])
@pytest.mark.parametrize(("language", "line", "printed"), CASES)
def test_a_line_runs_as_written(sbx: Sandbox, language: str, line: str, printed: str, escapes_decoded: bool) -> None:
    code, chosen = code_of(as_model_wrote_it(language, line, escapes_decoded))
    assert chosen == language and code.count("\n") == 1, code
    execution = sbx.run_code(code, language=language, timeout=20)
    assert execution.error is None, execution.error
    assert "".join(execution.logs.stdout) == printed


def test_a_code_string_keeps_its_line_breaks() -> None:
    code, _ = code_of(json.dumps({"action": "run_code", "code": "a = 1\nprint(a)"}))
    assert code == "a = 1\nprint(a)"


def test_history_goes_back_to_the_same_lines() -> None:
    code = "rows = data.split('\\n')\nprint(len(rows))"
    call = {"function": {"name": "exec_code", "arguments": json.dumps({"code": code, "language": "python"})}}
    converted = schema_messages([{"role": "assistant", "tool_calls": [call]}])
    assert code_of(converted[0]["content"])[0] == code
