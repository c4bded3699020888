"""The installed zsar's version (its own module so that every layer, and ``zsar --version``, reads it
without importing the package's public names)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zsar")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
