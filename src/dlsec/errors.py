"""Exceptions that carry their exit status (the click model).

Every error a user can cause is a :class:`DlsecError`; the CLI prints its message on one line and exits with
its ``exit_code``. Exit codes: 0 ok/clean, 1 findings, 2 error, 3 nothing scanned.
"""

from __future__ import annotations


class DlsecError(Exception):
    """Base class of all errors dlsec reports to a user; ``exit_code`` is the process status."""

    exit_code: int = 2


class InputError(DlsecError):
    """Bad input: a missing file, data outside its bounds, a wrong shape, an invalid parameter."""


class ModelError(InputError):
    """A model that cannot be loaded, or that is not a classifier of the given inputs."""


class DataError(InputError):
    """Data that cannot be read or that breaks the data contract (NCHW float in [0, 1], int64 labels)."""


class ConfigError(InputError):
    """An invalid attack or evaluation parameter (negative epsilon, unknown norm, unknown attack)."""


class VerificationError(DlsecError):
    """An integrity or authenticity check failed: a bad signature, a tampered file, a digest that does not match.

    Exit status 1 ("verification failed"), distinct from bad input (2).
    """

    exit_code = 1


class KeyMismatchError(InputError):
    """The key, passphrase or key service given is not one the file was protected with (exit status 2)."""
