"""The one error type users see: a message naming the file, the field and, where known, the line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The CLI prints `str(err)` on one line and exits with code 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.field = field
        self.line = line

    def __str__(self) -> str:
        where = self.file or ""
        if self.file and self.line:
            where += f":{self.line}"
        parts = [p for p in (where, self.field) if p]
        return ": ".join([*parts, self.message])


class SpecError(UserError):
    """The service spec is invalid."""
