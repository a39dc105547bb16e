"""Outputs exactly like E2B's, through sandcell's own API: charts, DataFrame data, JSON, string text, PIL images,
and a run whose sandbox is killed. The other APIs are in tests/server/test_e2b_outputs.py."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from output_cases import CHART_CASES, ChartCase, chart_of, check_chart, reference_charts

from sandcell import AsyncSandbox, Limits, Sandbox, SandboxDiedException
from sandcell.agent.loop import Ran
from sandcell.agent.notebook import to_notebook
from sandcell.agent.tool import ImageStore, render_parts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sbx(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(scope="module")


@pytest.fixture(scope="module")
def references() -> dict[str, dict[str, Any]]:
    return reference_charts()


def ok(execution: Any) -> Any:
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
    return execution


def main_result(execution: Any) -> Any:
    mains = [result for result in ok(execution).results if result.is_main_result]
    assert len(mains) == 1, execution.results
    return mains[0]


def is_png(encoded: str) -> bool:
    return base64.b64decode(encoded).startswith(PNG_MAGIC)


# -- charts ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CHART_CASES, ids=[case.name for case in CHART_CASES])
def test_every_figure_comes_with_e2bs_chart(sbx: Sandbox, references: dict[str, dict[str, Any]], case: ChartCase) -> None:
    check_chart(case, chart_of(ok(sbx.run_code(case.cell)).results), references[case.name])


def test_a_figure_the_extractor_cannot_read_still_gives_its_image(sbx: Sandbox) -> None:
    """E2B's formatter answers ``{}`` when ``e2b_charts`` fails (here: a box plot whose whisker is its quartile)."""
    code = "import matplotlib.pyplot as plt\nplt.boxplot([[2, 3, 4, 5, 9]], patch_artist=True)\nplt.show()"
    (figure,) = ok(sbx.run_code(code)).results
    assert is_png(figure.png) and figure.chart == {}


# -- DataFrame data, JSON, text ------------------------------------------------------------


def test_a_dataframe_carries_its_columns_with_iso_timestamps(sbx: Sandbox) -> None:
    code = "import pandas as pd\npd.DataFrame({'n': [1, 2], 'x': [0.5, None], 'when': pd.to_datetime(['2024-01-02 00:00:00', '2024-03-04 05:06:07'])})"
    result = main_result(sbx.run_code(code))
    assert result.data == {"n": [1, 2], "x": [0.5, None], "when": ["2024-01-02T00:00:00", "2024-03-04T05:06:07"]}
    assert result.html and "<table" in result.html and set(result.formats()) == {"text", "html", "data"}


def test_lists_and_dicts_have_json_with_numpy_values_and_non_string_keys(sbx: Sandbox) -> None:
    assert main_result(sbx.run_code("[1, 'two', None, [3.5]]")).json == [1, "two", None, [3.5]]
    code = "import numpy as np\n{1: np.int64(3), 'array': np.arange(3), 'half': np.float32(0.5), None: 'none key'}"
    assert main_result(sbx.run_code(code)).json == {"1": 3, "array": [0, 1, 2], "half": 0.5, "null": "none key"}
    assert main_result(sbx.run_code("{(2, 3): 'tuple key'}")).json is None  # orjson refuses it: text only, as with E2B
    assert main_result(sbx.run_code("(1, 2)")).json is None  # a tuple is neither: E2B leaves it text only
    assert main_result(sbx.run_code("1 + 1")).formats() == ["text"]


def test_a_strings_text_has_no_quotes(sbx: Sandbox) -> None:
    assert main_result(sbx.run_code("import os\nos.getenv('X')", envs={"X": "supertest"})).text == "supertest"
    said = main_result(sbx.run_code("'say \"hi\"'"))
    assert said.text == 'say "hi"' and said.bundle["text/plain"] == "'say \"hi\"'"
    assert main_result(sbx.run_code('"it\'s"')).text == "it's"
    assert main_result(sbx.run_code("await Promise.resolve('Hello World!')", language="javascript")).text == "Hello World!"
    assert main_result(sbx.run_code("['a']")).text == "['a']"


def test_long_lists_are_shown_whole(sbx: Sandbox) -> None:
    """E2B's kernel config: ``PlainTextFormatter.max_seq_length = 0``."""
    result = main_result(sbx.run_code("list(range(2000))"))
    assert result.text.startswith("[0,\n 1,") and result.text.endswith(" 1999]") and "..." not in result.text


# -- PIL images ----------------------------------------------------------------------------

PIL_IMAGE = "from PIL import Image\nimage = Image.new('RGB', (6, 4), 'teal')\n"


@pytest.mark.parametrize("cell", ["image.show()", "image", "image.save('/home/user/saved.png')"], ids=["show", "last_expression", "save"])
def test_pil_images_come_back_as_png(sbx: Sandbox, cell: str) -> None:
    (result,) = ok(sbx.run_code(PIL_IMAGE + cell)).results
    assert is_png(result.png) and result.text.startswith("<PIL.Image.Image image mode=RGB size=6x4")


def test_saving_to_a_path_object_shows_nothing_as_with_e2b(sbx: Sandbox) -> None:
    """E2B's patch of ``Image.save`` displays only when the file is named by a string."""
    execution = ok(sbx.run_code(PIL_IMAGE + "import pathlib\nimage.save(pathlib.Path('/home/user/quiet.png'))"))
    assert execution.results == []
    assert sbx.files.read("/home/user/quiet.png", format="bytes").startswith(PNG_MAGIC)


# -- the agent and the notebook --------------------------------------------------------------


def test_the_agent_tells_the_model_a_charts_data(sbx: Sandbox, tmp_path: Path) -> None:
    execution = ok(sbx.run_code(CHART_CASES[0].cell))
    _, rest = render_parts(execution, ImageStore(tmp_path))
    assert rest[0].startswith("[image/png") and "chart-1.png" in rest[0]
    assert rest[1].startswith('chart data: {"type":"bar","title":"Fruit"') and '"label":"pears"' in rest[1]


def test_the_notebook_keeps_charts_and_data_as_json_outputs(sbx: Sandbox) -> None:
    chart = ok(sbx.run_code(CHART_CASES[0].cell))
    frame = ok(sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1]})"))
    text = ok(sbx.run_code("'quoted'"))
    notebook = to_notebook([Ran("python", "chart", chart), Ran("python", "frame", frame), Ran("python", "text", text)])
    nbformat.validate(notebook)
    figure, table, string = (cell.outputs[0].data for cell in notebook.cells)
    assert figure["application/vnd.e2b.chart+json"]["type"] == "bar" and "image/png" in figure
    assert table["application/vnd.e2b.data+json"] == {"a": [1]}
    assert string["text/plain"] == "'quoted'"  # a notebook shows a string's repr, as Jupyter does


# -- a sandbox killed while the code runs -----------------------------------------------------


def test_a_sandbox_killed_while_code_runs_raises(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox()
    threading.Timer(0.5, sandbox.kill).start()
    with pytest.raises(SandboxDiedException, match=r"stopped while the code was running.*it was killed"):
        sandbox.run_code("import time\nprint('started', flush=True)\ntime.sleep(30)")


def test_a_sandbox_reaching_its_timeout_while_code_runs_raises() -> None:
    async def scenario() -> None:
        sandbox = await AsyncSandbox.create(timeout=1)  # ends itself
        with pytest.raises(SandboxDiedException, match=r"stopped while the code was running.*timeout of 1 s"):
            await sandbox.run_code("import time\ntime.sleep(30)")

    asyncio.run(scenario())


# -- abuse: what user code can make the formatters do, in every kind of sandbox ---------------


def test_hostile_values_cannot_break_a_run(any_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = any_sandbox()
    cyclic = main_result(sandbox.run_code("cycle = [1]\ncycle.append(cycle)\ncycle"))
    assert cyclic.text == "[1, [...]]" and cyclic.json is None  # orjson refuses it; E2B falls back to text
    huge = main_result(sandbox.run_code("[2 ** 70]"))
    assert huge.json is None and huge.text == f"[{2**70}]"
    code = (
        "import pandas as pd\n"
        "class Odd:\n    def __repr__(self): return 'odd'\n"
        "pd.DataFrame({'nan': [float('nan')], 'inf': [float('inf')], 'odd': [Odd()], 'set': [{1}]})"
    )
    frame = main_result(sandbox.run_code(code))
    assert frame.data == {"nan": [None], "inf": [None], "odd": ["odd"], "set": [[1]]}  # what E2B's orjson packer gives
    raising = "import matplotlib.pyplot as plt\nclass Broken(plt.Figure):\n    def get_axes(self): raise RuntimeError('no')\nBroken()"
    assert main_result(sandbox.run_code(raising)).chart == {}
    assert main_result(sandbox.run_code("'still fine'")).text == "still fine"


def test_a_charts_data_counts_against_the_output_cap(any_sandbox: Callable[..., Sandbox]) -> None:
    """A figure of a million points: its image and chart (megabytes) are dropped past the cap, the run ends as usual."""
    sandbox = any_sandbox(limits=Limits(output_mb=1))
    execution = ok(sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot(range(1_000_000))\nplt.show()\n'after'"))
    assert [result.text for result in execution.results] == ["after"]
    assert "output truncated" in "".join(execution.logs.stderr)
