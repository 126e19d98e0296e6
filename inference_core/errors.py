"""Errors shared across the packages, in a module that imports nothing of ours, so that every
module can raise them without importing the modules that use them (config, the registries)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work; reported in one line before anything loads (exit code 2)."""
