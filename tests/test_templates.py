"""Templates: ``code-interpreter-v1`` has E2B's packages, each of which does real work in a sandbox; ``base`` has none of them."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable

import pytest
from pooling import take_pooled
from sandboxes import SandboxFactory

from sandcell import Limits, Sandbox, SandboxPool
from sandcell.isolation import Image, ImageMissing, Policy
from sandcell.isolation.templates import CODE_INTERPRETER, TEMPLATES, pinned

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes with cgroups need root"),
]

# One cell per package: it imports the package and makes it do one real thing
# (files under /home/user, servers on the sandbox's own loopback). Each prints "ok".
CELLS = {
    "scikit-learn": """
        import numpy as np
        from sklearn.linear_model import LinearRegression
        x = np.arange(20).reshape(-1, 1)
        model = LinearRegression().fit(x, 2 * x.ravel() + 1)
        assert abs(model.coef_[0] - 2) < 1e-9 and abs(model.intercept_ - 1) < 1e-9
    """,
    "scipy": """
        from scipy import integrate, optimize
        assert abs(optimize.minimize_scalar(lambda x: (x - 3) ** 2).x - 3) < 1e-6
        assert abs(integrate.quad(lambda x: x**2, 0, 3)[0] - 9) < 1e-9
    """,
    "seaborn": """
        import matplotlib.pyplot as plt
        import pandas as pd
        import seaborn as sns
        ax = sns.barplot(data=pd.DataFrame({"kind": ["a", "b", "a"], "value": [1, 3, 5]}), x="kind", y="value")
        assert [round(bar.get_height()) for bar in ax.patches] == [3, 3]  # the means
        plt.savefig("/home/user/seaborn.png")
        assert open("/home/user/seaborn.png", "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    """,
    "plotly": """
        import json
        import plotly.graph_objects as go
        figure = json.loads(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])).to_json())
        assert figure["data"][0]["type"] == "scatter" and figure["data"][0]["y"] == [3, 4]
    """,
    "kaleido": """
        import plotly.graph_objects as go
        go.Figure(go.Bar(y=[1, 3, 2])).write_image("/home/user/bars.png")
        assert open("/home/user/bars.png", "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    """,
    "openpyxl": """
        import openpyxl
        import pandas as pd
        book = openpyxl.Workbook()
        book.active.append(["name", "score"])
        book.active.append(["ada", 36])
        book.save("/home/user/scores.xlsx")
        assert pd.read_excel("/home/user/scores.xlsx").to_dict("records") == [{"name": "ada", "score": 36}]
    """,
    "xlrd": """
        import struct
        import xlrd
        # A BIFF2 worksheet (the oldest .xls): a BOF, one NUMBER cell at A1, an EOF.
        record = lambda kind, data: struct.pack("<HH", kind, len(data)) + data
        xls = record(0x0009, struct.pack("<HH", 2, 0x10)) + record(0x0003, struct.pack("<HH3sd", 0, 0, bytes(3), 42.5)) + record(0x000A, b"")
        assert xlrd.open_workbook(file_contents=xls).sheet_by_index(0).cell_value(0, 0) == 42.5
    """,
    "python-docx": """
        import docx
        document = docx.Document()
        document.add_paragraph("hello from a sandbox")
        document.save("/home/user/note.docx")
        assert [p.text for p in docx.Document("/home/user/note.docx").paragraphs] == ["hello from a sandbox"]
    """,
    "numba": """
        from numba import njit
        @njit
        def total(n):
            s = 0
            for i in range(n):
                s += i
            return s
        assert total(1000) == 499500
    """,
    "opencv-python-headless": """
        import cv2
        import numpy as np
        image = np.zeros((20, 20, 3), np.uint8)
        cv2.rectangle(image, (5, 5), (14, 14), (0, 0, 255), -1)
        assert cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[10, 10] == 76
        assert cv2.imencode(".png", image)[1].tobytes()[:4] == b"\\x89PNG"
    """,
    "scikit-image": """
        import numpy as np
        from skimage import filters, transform
        image = np.zeros((32, 32)); image[:, 16:] = 1
        assert transform.resize(image, (16, 16)).shape == (16, 16)
        assert filters.sobel(image)[:, 15:17].min() > 0 and filters.sobel(image)[:, :10].max() == 0
    """,
    "imageio": """
        import imageio.v3 as iio
        import numpy as np
        pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        iio.imwrite("/home/user/pixels.png", pixels)
        assert (iio.imread("/home/user/pixels.png") == pixels).all()
    """,
    "pillow": """
        import io
        from PIL import Image
        buffer = io.BytesIO()
        Image.new("RGB", (7, 3), "red").save(buffer, "PNG")
        assert Image.open(io.BytesIO(buffer.getvalue())).size == (7, 3)
    """,
    "joblib": """
        import joblib
        from joblib import Parallel, delayed
        assert Parallel(n_jobs=2)(delayed(pow)(i, 2) for i in range(5)) == [0, 1, 4, 9, 16]
        joblib.dump({"a": [1, 2]}, "/home/user/saved.joblib")
        assert joblib.load("/home/user/saved.joblib") == {"a": [1, 2]}
    """,
    "nltk": """
        from nltk.stem import PorterStemmer
        from nltk.tokenize import wordpunct_tokenize
        assert [PorterStemmer().stem(word) for word in wordpunct_tokenize("running dogs!")] == ["run", "dog", "!"]
    """,
    "textblob": """
        from textblob import TextBlob
        assert TextBlob("What a wonderful, happy day").sentiment.polarity > 0.5
    """,
    "sympy": """
        import sympy
        x = sympy.symbols("x")
        assert sympy.integrate(x**2, x) == x**3 / 3
        assert sympy.solve(x**2 - 4, x) == [-2, 2]
    """,
    "xarray": """
        import numpy as np
        import xarray as xr
        temperature = xr.DataArray(np.array([[1.0, 3.0], [5.0, 7.0]]), dims=("time", "place"), coords={"place": ["a", "b"]})
        assert temperature.mean("time").sel(place="b").item() == 5.0
    """,
    "soundfile": """
        import numpy as np
        import soundfile
        tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
        soundfile.write("/home/user/tone.wav", tone, 8000)
        data, rate = soundfile.read("/home/user/tone.wav")
        assert rate == 8000 and len(data) == 8000 and abs(data - tone).max() < 1e-3
    """,
    "librosa": """
        import librosa
        import numpy as np
        tone = librosa.tone(440, sr=22050, duration=1.0)
        assert abs(np.median(librosa.yin(tone, fmin=100, fmax=1000, sr=22050)) - 440) < 5
    """,
    "gensim": """
        from gensim.models import Word2Vec
        sentences = [["cat", "sat", "on", "mat"], ["dog", "sat", "on", "log"]] * 20
        model = Word2Vec(sentences, vector_size=8, min_count=1, workers=1, seed=1)
        assert model.wv["cat"].shape == (8,) and "dog" in model.wv.index_to_key
    """,
    "spacy": """
        import spacy
        assert [token.text for token in spacy.blank("en")("Hello, sandbox world.")] == ["Hello", ",", "sandbox", "world", "."]
    """,
    "bokeh": """
        from bokeh.embed import json_item
        from bokeh.plotting import figure
        plot = figure(title="lines")
        plot.line([1, 2, 3], [4, 6, 5])
        assert "doc" in json_item(plot)
    """,
    "beautifulsoup4": """
        from bs4 import BeautifulSoup
        assert BeautifulSoup("<ul><li class=x>one</li><li>two</li></ul>", "html.parser").select_one("li.x").text == "one"
    """,
    "e2b-charts": """
        import matplotlib.pyplot as plt
        from e2b_charts import chart_figure_to_dict
        figure = plt.figure()
        plt.plot([1, 2, 3], [2, 4, 3], label="series")
        assert chart_figure_to_dict(figure)["type"] == "line"
        plt.close(figure)
    """,
    "orjson": """
        import numpy as np
        import orjson
        assert orjson.dumps({"a": np.array([1, 2])}, option=orjson.OPT_SERIALIZE_NUMPY) == b'{"a":[1,2]}'
    """,
    "pytz": """
        import datetime
        import pytz
        moment = pytz.timezone("Europe/Paris").localize(datetime.datetime(2024, 7, 1, 12))
        assert moment.utcoffset() == datetime.timedelta(hours=2)
    """,
    "requests": """
        import http.server, threading
        import requests
        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(self.path.encode())
            def log_message(self, *args):
                pass
        server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert requests.get(f"http://127.0.0.1:{server.server_port}/x", params={"q": 1}, timeout=5).text == "/x?q=1"
        server.shutdown()
    """,
    "urllib3": """
        import urllib3
        url = urllib3.util.parse_url("https://user@example.org:8443/path?q=1")
        assert (url.host, url.port, url.path) == ("example.org", 8443, "/path")
    """,
    "aiohttp": """
        import asyncio
        from aiohttp import ClientSession, web
        async def roundtrip():
            app = web.Application()
            app.router.add_get("/", lambda request: web.json_response({"hello": "sandbox"}))
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            async with ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    body = await response.json()
            await runner.cleanup()
            return body
        assert asyncio.run(roundtrip()) == {"hello": "sandbox"}
    """,
    "tornado": """
        from tornado.template import Template
        assert Template("{% for n in items %}{{ n }},{% end %}").generate(items=[1, 2]) == b"1,2,"
    """,
    "pytest": """
        import pytest
        open("/home/user/test_sample.py", "w").write("def test_adds():\\n    assert 1 + 1 == 2\\n")
        assert pytest.main(["-q", "-p", "no:cacheprovider", "/home/user/test_sample.py"]) == 0
    """,
}


@pytest.fixture
def interpreter(make_sandbox: SandboxFactory[Sandbox]) -> Sandbox:
    """One code-interpreter-v1 sandbox for the package cells, each of which runs in a context of its own."""
    return make_sandbox(scope="module", template=CODE_INTERPRETER, limits=Limits(memory_mb=2048, pids=512))


def run_ok(sbx: Sandbox, code: str, timeout: float = 120, context: object = None) -> str:
    execution = sbx.run_code(textwrap.dedent(code), timeout=timeout, context=context)  # type: ignore[arg-type]
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
    return "".join(execution.logs.stdout)


@pytest.mark.parametrize("package", sorted(CELLS))
def test_each_package_does_real_work(interpreter: Sandbox, package: str) -> None:
    context = interpreter.create_code_context()
    try:
        assert run_ok(interpreter, textwrap.dedent(CELLS[package]) + "print('ok')\n", context=context).endswith("ok\n")
    finally:
        interpreter.remove_code_context(context)


def test_every_package_e2b_lists_has_a_cell() -> None:
    # E2B's list, less what the base image already has (numpy, pandas, matplotlib, ipython).
    e2b = {"aiohttp", "beautifulsoup4", "bokeh", "e2b-charts", "gensim", "imageio", "joblib", "kaleido", "librosa", "nltk", "numba", "opencv-python-headless",
           "openpyxl", "orjson", "pillow", "plotly", "pytest", "python-docx", "pytz", "requests", "scikit-image", "scikit-learn", "scipy", "seaborn",
           "soundfile", "spacy", "sympy", "textblob", "tornado", "urllib3", "xarray", "xlrd"}  # fmt: skip
    assert e2b <= set(CELLS) and e2b <= set(pinned(CODE_INTERPRETER))


def test_versions_are_the_pinned_ones(interpreter: Sandbox) -> None:
    versions = pinned(CODE_INTERPRETER)
    found = run_ok(interpreter, "from importlib.metadata import version\nfor name in ['scikit-learn', 'scipy', 'spacy']: print(name, version(name))")
    assert found.split() == [item for name in ("scikit-learn", "scipy", "spacy") for item in (name, versions[name])]


def test_commands_and_scripts_see_the_template(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox(template=CODE_INTERPRETER, envs={"PYTHONPATH": "/home/user/lib"})
    assert sbx.commands.run("python -c 'import sklearn, scipy; print(sklearn.__version__)'").stdout.strip() == pinned(CODE_INTERPRETER)["scikit-learn"]
    assert sbx.commands.run("echo $PYTHONPATH").stdout.strip() == f"/home/user/lib:{Image().template_mount(CODE_INTERPRETER)}"  # the caller's first
    assert sbx.commands.run("pytest --version").stdout.strip() == f"pytest {pinned(CODE_INTERPRETER)['pytest']}"
    # a subprocess of a cell, and a new context (forked from a zygote that never imported the template's packages)
    assert run_ok(sbx, "import subprocess, sys; print(subprocess.check_output([sys.executable, '-c', 'import seaborn; print(1)'], text=True))").strip() == "1"
    assert run_ok(sbx, "import sklearn; print(sklearn.__name__)", context=sbx.create_code_context()).strip() == "sklearn"
    assert sbx.get_info().template == CODE_INTERPRETER


def test_what_the_supervisor_skips_is_importable_in_every_context(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox(template="base")  # nltk, textblob, requests... import ssl, bz2 or lzma
    assert run_ok(sbx, "import bz2, lzma, ssl; print(lzma.decompress(lzma.compress(bz2.decompress(bz2.compress(b'round')))).decode())").strip() == "round"
    # ...and so do the modules that looked for them at their own import, before any cell ran
    # (in a fork server: asyncio, imported for the supervisor; pandas; http.client through it).
    checks = "import asyncio.sslproto, http.client, pandas.compat\nprint(asyncio.sslproto.ssl is not None, hasattr(http.client, 'HTTPSConnection'))"
    assert run_ok(sbx, checks).split() == ["True", "True"]
    assert run_ok(sbx, "import pandas as pd\npd.DataFrame({'a': [1]}).to_csv('t.csv.bz2')\nprint(pd.read_csv('t.csv.bz2').a[0])").strip() == "1"


def test_the_template_is_read_only(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox(template=CODE_INTERPRETER)
    where = str(Image().template_mount(CODE_INTERPRETER))
    result = sbx.commands.run(f"touch {where}/sklearn/planted 2>&1; rm -rf {where}/sklearn 2>&1; test -d {where}/sklearn && echo kept", timeout=30)
    assert "Read-only file system" in result.stdout and result.stdout.strip().endswith("kept")


def test_base_has_none_of_it(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox(template="base")
    where = Image().template_mount(CODE_INTERPRETER)
    execution = sbx.run_code("import sklearn")
    assert execution.error is not None and execution.error.name == "ModuleNotFoundError"
    files = sbx.commands.run(f"find {where.parent} -mindepth 1 -not -type d 2>/dev/null | head -3; true", timeout=30)
    assert files.stdout == ""  # no file of any template's; at most empty mount points
    scipy = sbx.commands.run("python -c 'import scipy' 2>&1; echo \"[$PYTHONPATH]\"", timeout=30)
    assert "No module named 'scipy'" in scipy.stdout and scipy.stdout.strip().endswith("[]")
    assert run_ok(sbx, "import pandas, numpy, matplotlib; print(pandas.__name__)").strip() == "pandas"
    assert sbx.get_info().template == "base"


def test_a_base_sandbox_cannot_lift_what_covers_the_template(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox(template="base")
    where = Image().template_mount(CODE_INTERPRETER)
    tried = run_ok(
        sbx,
        f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for flags in (0, 2):  # umount2 plain and MNT_DETACH
            print(libc.umount2(b"{where}", flags), os.strerror(ctypes.get_errno()) != "Success")
        print(sorted(os.listdir("{where}")) if os.path.isdir("{where}") else "absent", os.path.exists("/proc/1/root{where}/sklearn"))
        """,
    )
    assert tried.split("\n")[:2] == ["-1 True", "-1 True"] and tried.split("\n")[2] in ("[] False", "absent False"), tried


def test_unknown_template_is_refused_with_the_list() -> None:
    for attempt in (lambda: Sandbox.create(template="code-interpreter-v9"), lambda: Policy(template="")):
        with pytest.raises(ValueError, match=r"unknown template .*base, code-interpreter-v1"):
            attempt()
    assert TEMPLATES == ("base", "code-interpreter-v1")


def test_a_missing_template_says_how_to_install_it(tmp_path: object) -> None:
    with pytest.raises(ImageMissing, match=r"code-interpreter-v1 template is not installed.*sandcell setup.*template='base'"):
        Image(home=tmp_path).check_template(CODE_INTERPRETER)  # type: ignore[arg-type]
    Image(home=tmp_path).check_template("base")  # type: ignore[arg-type]  # adds nothing: nothing to miss


def test_the_pool_hands_out_only_the_asked_template() -> None:
    with SandboxPool(size=1, kinds=[(Limits(), False, "base"), (Limits(), False, CODE_INTERPRETER)], learn=0) as pool:
        base = take_pooled(pool, template="base")
        interpreter = take_pooled(pool, template=CODE_INTERPRETER)
        try:
            assert (base.backend.policy.template, interpreter.backend.policy.template) == ("base", CODE_INTERPRETER)
            assert base.run_code("import sklearn").error is not None
            assert interpreter.run_code("import sklearn; sklearn.__name__").text == "sklearn"
        finally:
            base.kill()
            interpreter.kill()


def test_a_pool_of_one_template_never_serves_another() -> None:
    with SandboxPool(size=1, kinds=[(Limits(), False, CODE_INTERPRETER)], learn=0) as pool:
        assert pool.warm(template=CODE_INTERPRETER, timeout=120)
        assert pool.take(Limits(), False, {}, "base") is None
        assert pool.ready(template=CODE_INTERPRETER) == 1
