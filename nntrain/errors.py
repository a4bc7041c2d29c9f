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


class UserCodeError(UserError):
    """The user's own code (a custom layer or callback) raised: reported as theirs."""


class TrainingFailed(Exception):
    """Training itself failed (non-finite loss): exit code 1."""

    exit_code = 1
