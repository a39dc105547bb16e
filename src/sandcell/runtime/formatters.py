"""The IPython formatters E2B's code-interpreter template registers (its start-up script ``0002_data.py``).

- ``e2b/data``: a pandas DataFrame as a dict of column lists, timestamps in ISO form;
- ``e2b/chart``: a matplotlib figure as E2B's chart description (``e2b_charts.chart_figure_to_dict``);
- ``application/json``: lists and dicts through orjson (numpy values and non-string keys allowed).

IPython calls every formatter for every value it shows, so each first looks
in ``sys.modules``: a DataFrame or a Figure can only exist once its library
is imported, and ``1 + 1`` imports nothing. Registered on the shell a zygote
builds, so every forked context has them from the start.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.formatters import BaseFormatter, JSONFormatter
from traitlets import ObjectName, Unicode


class DataFrameFormatter(BaseFormatter):
    format_type = Unicode("e2b/data")
    print_method = ObjectName("_repr_e2b_data_")
    _return_type = (dict, str)

    def __call__(self, obj: Any) -> Any:
        pandas = sys.modules.get("pandas")
        if pandas is None or not isinstance(obj, pandas.DataFrame):
            return super().__call__(obj)
        columns = obj.to_dict(orient="list")
        for name, values in columns.items():
            columns[name] = [value.isoformat() if isinstance(value, pandas.Timestamp) else value for value in values]
        return columns


class ChartFormatter(BaseFormatter):
    format_type = Unicode("e2b/chart")
    print_method = ObjectName("_repr_e2b_chart_")
    _return_type = (dict, str)

    def __call__(self, obj: Any) -> Any:
        figure_module = sys.modules.get("matplotlib.figure")
        if figure_module is None or not isinstance(obj, figure_module.Figure):
            return super().__call__(obj)
        from e2b_charts import chart_figure_to_dict

        try:
            return chart_figure_to_dict(obj)
        except Exception:  # noqa: BLE001 - as E2B: a figure the extractor cannot read has no chart, but still its image
            return {}


class ListDictJSONFormatter(JSONFormatter):
    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, (list, dict)):
            import orjson

            try:
                return orjson.loads(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)), {"expanded": True}
            except TypeError:
                pass
        return super().__call__(obj)


def register(shell: Any) -> None:
    formatters = shell.display_formatter.formatters
    for formatter in (DataFrameFormatter, ChartFormatter, ListDictJSONFormatter):
        instance = formatter(parent=shell.display_formatter)
        formatters[instance.format_type] = instance
