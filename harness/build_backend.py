"""The build backend pyproject.toml names: setuptools', except that a wheel is built from a copy of the
folders the package maps (pyproject's package-dir) in a temporary directory, so `pip install .` leaves
no build/ (nor a stale build/lib whose deleted modules a later wheel would still ship) and no egg-info
in the clone. Editable installs (`pip install -e .`) and sdists build in place, as setuptools does."""
import os
import shutil
import tempfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks this backend passes through)
    build_editable, build_sdist, get_requires_for_build_editable, get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
)

__all__ = ["build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
           "get_requires_for_build_sdist", "get_requires_for_build_wheel", "prepare_metadata_for_build_editable",
           "prepare_metadata_for_build_wheel"]

# what a wheel is built from: pyproject.toml's package-dir folders and the files it reads
SOURCES = ("pyproject.toml", "README.md", "harness", "reference", "scripts", "golden", "impl", "tests/fixtures")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _copy(root, tmp):
    for name in SOURCES:
        src, dst = Path(root) / name, Path(tmp) / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=SKIP)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _in_copy(hook, *args):
    root = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="nanoproof-build-") as tmp:
        _copy(root, tmp)
        os.chdir(tmp)
        try:
            return hook(*args)
        finally:
            os.chdir(root)


def get_requires_for_build_wheel(config_settings=None):
    return _in_copy(_setuptools.get_requires_for_build_wheel, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _in_copy(_setuptools.prepare_metadata_for_build_wheel, os.path.abspath(metadata_directory),
                    config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if metadata_directory is not None:
        metadata_directory = os.path.abspath(metadata_directory)
    return _in_copy(_setuptools.build_wheel, os.path.abspath(wheel_directory), config_settings, metadata_directory)
