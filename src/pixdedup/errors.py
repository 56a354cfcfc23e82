"""Errors for whole-run problems.

A failure on a single image is *data* (an ``ImageRecord`` with status ``error``),
never one of these exceptions.  These are raised for problems that stop a run;
the CLI turns them into one line and a non-zero exit code.
"""

from __future__ import annotations


class PixdedupError(Exception):
    """Base class: a problem the user can act on; ``str(err)`` is the message."""

    exit_code = 2


class ConfigError(PixdedupError):
    """Invalid configuration value, flag or unknown plugin name."""


class InputError(PixdedupError):
    """The input collection cannot be read (missing, not a directory, ...)."""


class OutputError(PixdedupError):
    """The output location is unusable (inside the input, exists, not writable)."""


class UnknownNameError(ConfigError):
    """A registry was asked for a name it does not know."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown {kind} '{name}'; valid names: {', '.join(sorted(valid))}")
        self.kind = kind
        self.name = name
        self.valid = valid


class DecodeError(Exception):
    """One image could not be decoded; the message is the per-file reason."""
