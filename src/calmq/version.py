"""calmq's version: the one place it is written (pyproject.toml reads it from here).

A constant rather than ``importlib.metadata.version("calmq")``: every worker reports its
version in heartbeats, and importing ``importlib.metadata`` cost a worker ~15 ms at start.
"""

__version__ = "0.1.0"
