"""Every name ``lightkeeper`` promises in ``__all__`` imports, and each package's ``__all__`` is honest."""

from __future__ import annotations

import importlib

import pytest

import lightkeeper

PACKAGES = [
    "lightkeeper",
    "lightkeeper.errors",
    "lightkeeper.store",
    "lightkeeper.refresh",
    "lightkeeper.lightspeed",
    "lightkeeper.scheduler",
    "lightkeeper.simulator",
    "lightkeeper.web",
]


@pytest.mark.parametrize("name", lightkeeper.__all__)
def test_every_public_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from lightkeeper import {name}", namespace)  # the way a user writes it
    assert namespace[name] is getattr(lightkeeper, name)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_all_names_only_what_exists(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"
    assert len(module.__all__) == len(set(module.__all__)), f"{package}.__all__ lists a name twice"


def test_the_error_tree_is_listed_once_and_exported_whole() -> None:
    from lightkeeper import errors

    assert set(errors.__all__) <= set(lightkeeper.__all__)
    assert all(issubclass(getattr(errors, name), errors.LightkeeperError) for name in errors.__all__)
