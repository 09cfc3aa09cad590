"""Errors the CLI turns into one line (and an exit code) instead of a traceback."""


class UsageError(ValueError):
    """A bad name, value or setting given by the user (an unregistered suite or method, a bad --lr, a missing
    results folder); the message says what is valid. Exit 2."""


class SkipRun(Exception):
    """A method or task cannot apply to this model/device/data; the run is recorded `skipped` with the reason."""


class StorageFull(OSError):
    """The disk holding the results filled up (ENOSPC) while a record was being stored. Exit 1."""


class DataError(RuntimeError):
    """A data or model file that is missing, unreadable or lacks what the task needs; names the file."""


class NothingToCompare(Exception):
    """`bench compare` on a history too young to hold two comparable grids (the first night). Exit 3, which a
    nightly job may accept; every other failure to compare is an error."""
