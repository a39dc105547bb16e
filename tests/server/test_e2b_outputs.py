"""Outputs exactly like E2B's through ``sandcell serve``: the official SDKs (sync, async, JavaScript) and the native REST API.

Charts are compared with ``e2b_charts`` run outside any sandbox (see tests/output_cases.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox
from e2b_code_interpreter.charts import BarChart, ChartType, SuperChart
from output_cases import CHART_CASES, ChartCase, chart_of, check_chart, reference_charts
from serving import Keys, Server
from test_e2b_js import installed, sdk_env  # noqa: F401 - installed: the fixture that installs the JavaScript SDK

import sandcell

PNG = b"\x89PNG\r\n\x1a\n"
KILLED = "killed while the request was in progress"
FRAME = "import pandas as pd\npd.DataFrame({'n': [1, 2], 'when': pd.to_datetime(['2024-01-02 00:00:00', '2024-03-04 05:06:07'])})"
FRAME_DATA = {"n": [1, 2], "when": ["2024-01-02T00:00:00", "2024-03-04T05:06:07"]}
NUMPY_DICT = "import numpy as np\n{1: np.int64(3), 'array': np.arange(3)}"
NUMPY_JSON = {"1": 3, "array": [0, 1, 2]}
PIL_IMAGE = "from PIL import Image\nimage = Image.new('RGB', (6, 4), 'teal')\n"
PIL_CELLS = ("image.show()", "image", "image.save('/home/user/saved.png')")
SLEEP = "import time\ntime.sleep(60)"


@pytest.fixture(scope="module")
def references() -> dict[str, dict[str, Any]]:
    return reference_charts()


@pytest.fixture
def sbx(make_e2b_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_e2b_sandbox(scope="module")


def main_result(execution: Any) -> Any:
    assert execution.error is None, execution.error
    (main,) = [result for result in execution.results if result.is_main_result]
    return main


def is_png(encoded: str) -> bool:
    return base64.b64decode(encoded).startswith(PNG)


# -- the synchronous SDK -----------------------------------------------------------------


@pytest.mark.parametrize("case", CHART_CASES, ids=[case.name for case in CHART_CASES])
def test_sync_sdk_charts(sbx: Sandbox, references: dict[str, dict[str, Any]], case: ChartCase) -> None:
    chart = chart_of(sbx.run_code(case.cell).results)
    assert chart.type == ChartType(case.kind)  # the SDK's own typed chart
    check_chart(case, chart.to_dict(), references[case.name])


def test_sync_sdk_typed_charts(sbx: Sandbox) -> None:
    bar = chart_of(sbx.run_code(CHART_CASES[0].cell).results)
    assert isinstance(bar, BarChart) and [element.label for element in bar.elements] == ["apples", "pears", "plums"]
    (superchart,) = [case for case in CHART_CASES if case.name == "superchart"]
    two = chart_of(sbx.run_code(superchart.cell).results)
    assert isinstance(two, SuperChart) and isinstance(two.elements[1], BarChart)


def test_sync_sdk_data_json_and_text(sbx: Sandbox) -> None:
    frame = main_result(sbx.run_code(FRAME))
    assert frame.data == FRAME_DATA and "data" in frame.formats()
    assert main_result(sbx.run_code(NUMPY_DICT)).json == NUMPY_JSON
    assert main_result(sbx.run_code("[1, 'two']")).json == [1, "two"]
    assert main_result(sbx.run_code("import os\nos.getenv('X')", envs={"X": "supertest"})).text == "supertest"
    assert main_result(sbx.run_code("await Promise.resolve('Hello World!')", language="javascript")).text == "Hello World!"


@pytest.mark.parametrize("cell", PIL_CELLS, ids=["show", "last_expression", "save"])
def test_sync_sdk_pil_images(sbx: Sandbox, cell: str) -> None:
    execution = sbx.run_code(PIL_IMAGE + cell)
    assert execution.error is None and len(execution.results) == 1 and is_png(execution.results[0].png)


def test_sync_sdk_raises_when_the_sandbox_is_killed_mid_run(make_e2b_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_e2b_sandbox()
    threading.Timer(1.0, sandbox.kill).start()
    with pytest.raises(TimeoutException, match=KILLED):
        sandbox.run_code(SLEEP)


# -- the asynchronous SDK ----------------------------------------------------------------


def test_async_sdk_outputs(references: dict[str, dict[str, Any]]) -> None:
    async def scenario() -> None:
        sandbox = await AsyncSandbox.create(timeout=120)
        try:
            for case in CHART_CASES:
                check_chart(case, chart_of((await sandbox.run_code(case.cell)).results).to_dict(), references[case.name])
            assert main_result(await sandbox.run_code(FRAME)).data == FRAME_DATA
            assert main_result(await sandbox.run_code(NUMPY_DICT)).json == NUMPY_JSON
            assert main_result(await sandbox.run_code("import os\nos.getenv('X')", envs={"X": "supertest"})).text == "supertest"
            assert main_result(await sandbox.run_code("await Promise.resolve('Hello World!')", language="javascript")).text == "Hello World!"
            for cell in PIL_CELLS:
                (image,) = (await sandbox.run_code(PIL_IMAGE + cell)).results
                assert is_png(image.png)
        finally:
            await sandbox.kill()

    asyncio.run(scenario())


def test_async_sdk_raises_when_the_sandbox_times_out_mid_run() -> None:
    async def scenario() -> None:
        sandbox = await AsyncSandbox.create(timeout=60)
        await sandbox.set_timeout(2)
        with pytest.raises(TimeoutException, match=KILLED):
            await sandbox.run_code(SLEEP)

    asyncio.run(scenario())


# -- the native REST API ----------------------------------------------------------------


def test_native_api_lines_carry_chart_data_json_and_unquoted_text(server: Server, keys: Keys, references: dict[str, dict[str, Any]]) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys.alpha}, timeout=60) as api:
        sandbox_id = api.post("/v1/sandboxes", json={"timeout": 120}).json()["sandbox_id"]
        try:

            def lines(code: str, **fields: Any) -> list[dict[str, Any]]:
                answer = api.post(f"/v1/sandboxes/{sandbox_id}/code", json={"code": code, **fields})
                assert answer.status_code == 200, answer.text
                return [json.loads(line) for line in answer.text.splitlines()]

            def main(code: str, **fields: Any) -> dict[str, Any]:
                (line,) = [line for line in lines(code, **fields) if line["type"] == "result" and line["is_main_result"]]
                return line

            bar = CHART_CASES[0]
            (figure,) = [line for line in lines(bar.cell) if line["type"] == "result"]
            assert is_png(figure["png"]) and figure["extra"] == {}
            check_chart(bar, figure["chart"], references[bar.name])
            assert main(FRAME)["data"] == FRAME_DATA
            assert main(NUMPY_DICT)["json"] == NUMPY_JSON
            assert main("import os\nos.getenv('X')", envs={"X": "supertest"})["text"] == "supertest"
            assert lines("1")[-1] == {"type": "end_of_execution"}

            killer = threading.Timer(1.0, api.delete, args=(f"/v1/sandboxes/{sandbox_id}",))
            killer.start()
            with pytest.raises(httpx.RemoteProtocolError):  # the stream breaks off: no end_of_execution
                lines(SLEEP)
            killer.join()
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")


def test_execute_stream_breaks_off_without_end_of_execution(server: Server, make_e2b_sandbox: Callable[..., Sandbox]) -> None:
    """The wire itself: what the SDKs read as a killed sandbox."""
    doomed = make_e2b_sandbox()
    received: list[str] = []
    headers = {"E2b-Sandbox-Id": doomed.sandbox_id, "E2b-Sandbox-Port": "49999", "X-Access-Token": doomed._envd_access_token or ""}
    threading.Timer(1.0, doomed.kill).start()
    body = {"code": "print('started', flush=True)\n" + SLEEP}
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", server.url + "/execute", json=body, headers=headers, timeout=30) as answer:
        received.extend(answer.iter_lines())
    assert [json.loads(line)["type"] for line in received] == ["stdout"]


# -- sandcell's own client, on the server -------------------------------------------------


def test_sandcell_client_on_the_server(server: Server, keys: Keys, references: dict[str, dict[str, Any]]) -> None:
    with sandcell.Sandbox.create(timeout=120, api_url=server.url, api_key=keys.alpha) as remote:
        for case in CHART_CASES[:2]:
            check_chart(case, chart_of(remote.run_code(case.cell).results), references[case.name])
        assert main_result(remote.run_code(FRAME)).data == FRAME_DATA
        assert main_result(remote.run_code(NUMPY_DICT)).json == NUMPY_JSON
        assert main_result(remote.run_code("import os\nos.getenv('X')", envs={"X": "supertest"})).text == "supertest"
        threading.Timer(1.0, remote.kill).start()
        with pytest.raises(sandcell.SandboxDiedException):
            remote.run_code(SLEEP)


# -- the JavaScript SDK ------------------------------------------------------------------


def test_js_sdk_outputs(installed: Any, server: Server, keys: Keys, references: dict[str, dict[str, Any]]) -> None:  # noqa: F811
    env = sdk_env(server, keys)
    cases = json.dumps([{"name": case.name, "cell": case.cell} for case in CHART_CASES])
    done = subprocess.run(["node", "outputs_check.mjs"], cwd=installed, env=env, input=cases, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    charts = json.loads(done.stdout)
    for case in CHART_CASES:
        check_chart(case, charts[case.name], references[case.name])
