"""PIL images shown as results, as E2B's template does (its start-up script ``0003_images.py``).

- ``Image.show()`` opens no viewer program: every Unix viewer declines
  (``show_file`` returns 0), so PIL falls through to its IPython viewer,
  which displays the image;
- ``image.save(path)`` with a path given as a string also displays it.

E2B imports PIL at start-up to patch it; here the patch waits for PIL's own
import (a finder on ``sys.meta_path`` that is asked only about modules not
yet imported), so a context that never touches PIL pays nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def _decline(self: Any, path: str, **options: Any) -> int:
    return 0


def patch_image_show(image_show: ModuleType) -> None:
    image_show.UnixViewer.show_file = _decline


def patch_image_save(image_module: ModuleType) -> None:
    original_save = image_module.Image.save

    def save(image: Any, fp: Any, format: Any = None, **options: Any) -> None:
        if isinstance(fp, str):
            from IPython.display import display

            display(image)  # type: ignore[no-untyped-call]
        original_save(image, fp, format, **options)

    image_module.Image.save = save


class AfterImport(MetaPathFinder):
    """Runs ``patches[name](module)`` right after module ``name`` is first imported."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> ModuleSpec | None:
        patch = self.patches.get(name)
        if patch is None:
            return None
        spec = next((found for finder in sys.meta_path if finder is not self and (found := _find(finder, name, path, target)) is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.patches[name]
        loader_exec = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            loader_exec(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign] # this module's own loader instance
        return spec


def _find(finder: Any, name: str, path: Any, target: Any) -> ModuleSpec | None:
    find_spec = getattr(finder, "find_spec", None)
    return find_spec(name, path, target) if find_spec is not None else None


def install() -> None:
    """Patch PIL now if it is imported, else as soon as it is."""
    waiting: dict[str, Callable[[ModuleType], None]] = {}
    for name, patch in (("PIL.Image", patch_image_save), ("PIL.ImageShow", patch_image_show)):
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
        else:
            waiting[name] = patch
    if waiting:
        sys.meta_path.insert(0, AfterImport(waiting))
