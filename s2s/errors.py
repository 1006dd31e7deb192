"""Errors a user can act on: the CLI prints them as one line, with no traceback.

Library code raises these for bad input (a recipe key, a data file, a run directory); anything else that escapes is
a bug in s2s and keeps its traceback.
"""


class S2SError(Exception):
    """A problem with the user's input or environment; ``exit_code`` follows the usage (2) / runtime (1) split."""

    exit_code = 1


class RecipeError(S2SError):
    """A recipe that does not validate: the message starts with the key path (``model.encoder.cell: ...``)."""

    exit_code = 2


class DataError(S2SError):
    """A data file that cannot be read as the recipe says: the message names the file (and line)."""

    exit_code = 1


class RunError(S2SError):
    """A run directory that is missing, incomplete or of the wrong kind for the command."""

    exit_code = 2


class UsageError(RunError):
    """A command option that does not fit the run it is given, or its value (exit code 2, like any usage error)."""


class TrainingError(S2SError):
    """Training cannot go on (e.g. the loss keeps diverging); the last good checkpoint is kept."""

    exit_code = 1


class BackendError(S2SError):
    """``S2S_KERNELS`` has a value s2s does not know, or is ``require`` and the CPU kernels could not be built."""

    exit_code = 1
