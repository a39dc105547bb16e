"""Figures whose charts (``e2b/chart``) every API must return as E2B's own extractor describes them.

The reference is ``e2b_charts.chart_figure_to_dict`` run on the same figure in
the image's Python outside any sandbox, after the figure was rendered to PNG
the way IPython's inline backend renders it (tick labels exist only once drawn).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from sandcell.isolation.image import Image


@dataclass(frozen=True)
class ChartCase:
    name: str
    code: str  # draws one figure with pyplot; ``plt`` and ``np`` are imported
    kind: str  # the chart's ``type``

    @property
    def cell(self) -> str:
        """The code as a cell: its figure comes back as a display result."""
        return f"{PRELUDE}\n{self.code}\nplt.show()"


PRELUDE = "import datetime\nimport matplotlib.pyplot as plt\nimport numpy as np"

CHART_CASES = [
    ChartCase(
        "bar",
        "fig, ax = plt.subplots()\nax.bar(['apples', 'pears', 'plums'], [3, 5, 2], label='fruit')\n"
        "ax.set_title('Fruit')\nax.set_xlabel('kind')\nax.set_ylabel('weight [kg]')",
        "bar",
    ),
    ChartCase(
        "line",
        "fig, ax = plt.subplots()\nx = np.linspace(0, 2, 5)\nax.plot(x, x ** 2, label='square')\nax.plot(x, x, label='identity')\n"
        "ax.set_title('Growth')\nax.set_xlabel('time (s)')\nax.set_ylabel('size')",
        "line",
    ),
    ChartCase("scatter", "fig, ax = plt.subplots()\nax.scatter([1, 2, 3], [4, 5, 6], label='A')\nax.scatter([1.5, 2.5], [3, 2], label='B')", "scatter"),
    ChartCase("pie", "fig, ax = plt.subplots()\nax.pie([30, 50, 20], labels=['a', 'b', 'c'])\nax.set_title('Shares')", "pie"),
    ChartCase(
        "box_and_whisker",
        "fig, ax = plt.subplots()\nax.boxplot([[85, 90, 78, 92, 88], [95, 89, 76, 91, 84, 87]], tick_labels=['A', 'B'], patch_artist=True)\n"
        "ax.set_title('Spread')",
        "box_and_whisker",
    ),
    ChartCase(
        "superchart",
        "fig, (left, right) = plt.subplots(1, 2)\nleft.plot([1, 2, 3], [3, 1, 2])\nright.bar(['p', 'q'], [1, 2])\nfig.suptitle('Two views')",
        "superchart",
    ),
    ChartCase("log_scale", "fig, ax = plt.subplots()\nax.plot([1, 10, 100], [1, 100, 10000])\nax.set_yscale('log')", "line"),
    ChartCase("datetime_axis", "fig, ax = plt.subplots()\nax.plot([datetime.date(2024, 1, day) for day in (1, 2, 3)], [1, 3, 2])", "line"),
    ChartCase("categorical_axis", "fig, ax = plt.subplots()\nax.plot(['mon', 'tue', 'wed'], [1, 4, 2])", "line"),
    ChartCase(
        "unknown",
        "fig, ax = plt.subplots()\nax.add_artist(plt.Circle((0, 0), 1, fill=False))\nax.add_artist(plt.Circle((0, 0), 2, fill=False))\n"
        "ax.grid(True)\nplt.title('Two circles')",
        "unknown",
    ),
]

# Run in the image's Python: each case's figure, rendered as the inline backend does, described by E2B's
# extractor, and packed as E2B's kernel packs a message (jupyter_client's orjson packer and json_default).
REFERENCE = """
import datetime, json, numbers, sys
import matplotlib
matplotlib.use("agg")
import orjson
from IPython.core.pylabtools import print_figure
from e2b_charts import chart_figure_to_dict

def json_default(obj):
    if isinstance(obj, datetime.date):
        return obj.isoformat()
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(repr(obj))

charts = []
for code in json.load(sys.stdin):
    namespace = {}
    exec(code, namespace)
    plt = namespace["plt"]
    figure = plt.gcf()
    print_figure(figure, "png", bbox_inches="tight")
    charts.append(chart_figure_to_dict(figure))
    plt.close("all")
sys.stdout.write(orjson.dumps(charts, default=json_default, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode())
"""


def reference_charts() -> dict[str, dict[str, Any]]:
    """Each case's chart as ``e2b_charts`` gives it in a plain interpreter, by case name."""
    codes = [f"{PRELUDE}\n{case.code}" for case in CHART_CASES]
    done = subprocess.run([str(Image().python), "-c", REFERENCE], input=json.dumps(codes), capture_output=True, text=True, timeout=120, check=True)
    return {case.name: chart for case, chart in zip(CHART_CASES, json.loads(done.stdout), strict=True)}


def check_chart(case: ChartCase, chart: dict[str, Any], reference: dict[str, Any]) -> None:
    """``chart`` is E2B's description of the case's figure: the reference, and of the expected kind."""
    assert chart == reference, f"{case.name}: {json.dumps(chart)}\n!= {json.dumps(reference)}"
    assert chart["type"] == case.kind
    assert bool(chart["elements"]) == (case.kind != "unknown"), case.name
    if case.name == "bar":
        assert chart["title"] == "Fruit" and chart["x_label"] == "kind" and chart["y_unit"] == "kg"
        assert [(bar["label"], bar["value"]) for bar in chart["elements"]] == [("apples", 3.0), ("pears", 5.0), ("plums", 2.0)]
    elif case.name == "line":
        assert [line["label"] for line in chart["elements"]] == ["square", "identity"] and chart["x_unit"] == "s"
        assert chart["elements"][0]["points"][-1] == [2.0, 4.0]
    elif case.name == "superchart":
        assert chart["title"] == "Two views" and [element["type"] for element in chart["elements"]] == ["line", "bar"]
    elif case.name == "log_scale":
        assert chart["y_scale"] == "log"
    elif case.name == "datetime_axis":
        assert chart["x_scale"] == "datetime" and chart["elements"][0]["points"][0][0] == "2024-01-01"
    elif case.name == "categorical_axis":
        assert chart["x_scale"] == "categorical" and [point[0] for point in chart["elements"][0]["points"]] == ["mon", "tue", "wed"]
    elif case.name == "box_and_whisker":
        assert [(box["label"], box["median"], box["max"]) for box in chart["elements"]] == [("A", 88.0, 92.0), ("B", 88.0, 95.0)]
    elif case.name == "unknown":
        assert chart["title"] == "Two circles"
    elif case.name == "pie":
        assert [wedge["label"] for wedge in chart["elements"]] == ["a", "b", "c"]


def chart_of(results: list[Any]) -> Any:
    """The one result of a figure, checked to carry its PNG and its chart."""
    figures = [result for result in results if result.png]
    assert len(figures) == 1, results
    assert figures[0].chart, figures[0]
    return figures[0].chart
