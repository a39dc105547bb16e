"""How a Python context encodes its events: as a Jupyter session packs messages in E2B's kernel.

That is orjson with ``jupyter_client.jsonutil.json_default`` for what orjson
cannot encode itself: numpy scalars become numbers, arrays lists, dates ISO
strings, bytes base64, and NaN becomes ``null``. So a chart or a DataFrame
(``e2b/chart``, ``e2b/data``) arrives with the values E2B's server sends.
An object neither knows is sent as its ``repr`` (where Jupyter would drop
the message); a number past 64 bits sends the event through the standard
library instead.
"""

from __future__ import annotations

import datetime
import json
import numbers
from binascii import b2a_base64
from collections.abc import Iterable
from typing import Any

try:
    import orjson
except ImportError:  # an image without it still works, with NaN as the standard library writes it
    orjson = None


def jupyter_default(obj: Any) -> Any:
    """``jupyter_client.jsonutil.json_default``."""
    if isinstance(obj, datetime.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=datetime.UTC)
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, datetime.date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return b2a_base64(obj, newline=False).decode("ascii")
    if isinstance(obj, Iterable):
        return list(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(f"{obj!r} is not JSON serializable")


def _default_or_repr(obj: Any) -> Any:
    try:
        return jupyter_default(obj)
    except TypeError:
        return repr(obj)


def dumps(event: dict[str, Any]) -> str:
    if orjson is not None:
        try:
            encoded: str = orjson.dumps(event, default=_default_or_repr, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode()
            return encoded
        except TypeError:  # an integer past 64 bits, nesting too deep
            pass
    return json.dumps(event, default=_default_or_repr)
