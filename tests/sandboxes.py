"""The sandboxes tests make, each killed when the fixture scope that made it ends.

A module of its own so that both ``conftest.py`` files can import it (a conftest cannot be imported by name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Generic, Literal, Self, TypeVar

S = TypeVar("S")
Scope = Literal["function", "module"]

# A sandbox's own lifetime in tests: long enough for any test (or any module's tests, for a shared
# one), short enough that a leaked one does not outlive the test session by much.
TIMEOUTS: dict[Scope, float] = {"function": 180, "module": 600}


class Made(Generic[S]):
    """What one fixture scope made (sandcell's sandboxes or the E2B SDK's: anything with ``kill()``);
    ``with Made() as made:`` kills it all when the ``with`` ends (the fixture's teardown)."""

    def __init__(self) -> None:
        self._made: list[tuple[Callable[..., S], dict[str, Any], S]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, _, made in self._made:
            with contextlib.suppress(Exception):  # teardown goes on
                made.kill()  # type: ignore[attr-defined]

    def new(self, create: Callable[..., S], **kwargs: Any) -> S:
        made = create(**kwargs)
        self._made.append((create, kwargs, made))
        return made

    def reused(self, create: Callable[..., S], **kwargs: Any) -> S:
        """The one made earlier by ``create`` with the same arguments, else a new one."""
        for earlier_create, earlier_kwargs, made in self._made:
            if earlier_create == create and earlier_kwargs == kwargs:
                return made
        return self.new(create, **kwargs)


class SandboxFactory(Generic[S]):
    """``make(limits=..., envs=..., network=..., **create_kwargs)``: a new sandbox, killed after the test.

    ``make(scope="module", ...)``: the module's one sandbox made with these arguments, shared by
    its tests (the first to ask starts it) and killed after its last test.
    """

    def __init__(self, create: Callable[..., S], per_test: Made[S], per_module: Made[S], **defaults: Any) -> None:
        self._create = create
        self._made: dict[Scope, Made[S]] = {"function": per_test, "module": per_module}
        self._defaults = defaults

    def __call__(self, *, scope: Scope = "function", **kwargs: Any) -> S:
        kwargs = {"timeout": TIMEOUTS[scope], **self._defaults, **kwargs}
        if scope == "module":
            return self._made["module"].reused(self._create, **kwargs)
        return self._made["function"].new(self._create, **kwargs)
