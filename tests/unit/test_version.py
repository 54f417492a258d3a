"""The version has one source (calmq/version.py); the installed metadata must agree with it."""

import importlib.metadata

import calmq


def test_installed_metadata_reads_the_version_from_the_package() -> None:
    assert importlib.metadata.version("calmq") == calmq.__version__
