"""Errors a user can fix. The CLI prints them without a traceback and exits with their code."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data, arguments, checkpoint): exit code 2.

    `message` says what is wrong and where; `hint` says how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class DataError(UserError):
    """A dataset could not be found, read, verified or matched to the model."""


class DataModelMismatch(DataError):
    """Data of another form than the model takes (input shape, classes, ids): for a new
    config the model or the data is changed; for a trained run, the data changed since."""


class UserCodeError(UserError):
    """The user's own code (a custom layer or callback) raised: reported as theirs."""


def out_of_memory(error: BaseException) -> UserError | None:
    """XLA's RESOURCE_EXHAUSTED (an allocation the device or host could not make) as what the
    user changes, the model's or the batch's size; None for any other error."""
    text = str(error)
    if type(error).__name__ not in ("JaxRuntimeError", "XlaRuntimeError") or \
            "RESOURCE_EXHAUSTED" not in text:
        return None
    return UserError(f"out of memory: {text.strip().splitlines()[0]}",
                     "make the model's layers or fit.batch_size smaller (on a GPU or TPU, "
                     "fit.precision: bfloat16 halves the activations)")


class TrainingFailed(Exception):
    """Training itself failed (non-finite loss): exit code 1."""

    exit_code = 1
