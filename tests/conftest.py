"""Test-session data: every test that needs CIFAR-10 finds one, on any machine, with no network.

A real copy is used when the user names one: ``$STABKIT_DATA``, or ``~/.cache/stabkit/data``
(``$STABKIT_CACHE/data``). Otherwise the session writes a generated stand-in in CIFAR-10's real on-disk
layouts (tests/generated_cifar.py: torchvision's pickle batches and the JPEG class-folder archive) into a
temporary folder, once, and points ``$STABKIT_DATA`` at the JPEG archive, so that notebooks run by papermill
(other processes) read it too. ``shared/data`` beside the checkout (this project's workplace) is never used
by the tests: a test that passes here must pass on a fresh clone without it (issue 25). Run the suite on
that copy with ``STABKIT_DATA=../shared/data make test``.

Tests that need actual photographs take the ``real_cifar10`` fixture: the real copy's path, or a skip
naming ``STABKIT_DATA``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/generated_cifar.py, whatever the import mode

from generated_cifar import write_generated_cifar10  # noqa: E402

#: Environment variable tests read to know the session's data are generated (set to "1") or real ("0").
ENV_GENERATED = "STABKIT_TEST_DATA_GENERATED"


def _real_copy() -> Path | None:
    """The real CIFAR-10 the user provides ($STABKIT_DATA, then the cache's data folder), or None."""
    from stabkit.data import cifar_files

    env = os.environ.get("STABKIT_DATA")
    roots = [Path(env).expanduser()] if env else []
    roots.append(cifar_files.cache_dir() / "data")
    for root in roots:
        found = cifar_files.locate(root)  # the search stabkit.data itself makes, without decoding anything
        if found is not None:
            return root
    return None


@pytest.fixture(scope="session", autouse=True)
def cifar10_data(tmp_path_factory) -> Path:
    """The session's CIFAR-10 (real or generated), exported as ``$STABKIT_DATA`` for the whole session."""
    saved = {k: os.environ.get(k) for k in ("STABKIT_DATA", "STABKIT_CACHE", ENV_GENERATED)}
    real = _real_copy()
    if real is not None:
        os.environ["STABKIT_DATA"] = str(real)
        os.environ[ENV_GENERATED] = "0"
        path = real
    else:
        folder = tmp_path_factory.mktemp("generated-cifar10")
        path = write_generated_cifar10(folder)["jpeg"]
        os.environ["STABKIT_DATA"] = str(path)
        # the decoded archive is cached as .npz under the cache folder: keep it with the data, not in ~/.cache
        os.environ["STABKIT_CACHE"] = str(folder / "cache")
        os.environ[ENV_GENERATED] = "1"
    yield path
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def real_cifar10(cifar10_data) -> Path:
    """Path of a real CIFAR-10 copy, or skip: the session runs on generated images."""
    if os.environ.get(ENV_GENERATED) != "0":
        pytest.skip("needs the real CIFAR-10 (actual photographs): set STABKIT_DATA to a copy (a folder or "
                    "archive in torchvision's or the class-folder layout); the session uses generated images")
    return cifar10_data
