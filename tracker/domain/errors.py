"""Errors a caller can cause, with a machine-readable code: the API and the CLI both show them."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: `code` is stable for programs, `message` is a sentence for people.

    `status` is the HTTP status the API answers with (422 unless said otherwise).
    """

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(InputError):
    def __init__(self, what: str, key: object) -> None:
        super().__init__("not_found", f"{what} {key} does not exist", 404)


class Conflict(InputError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, 409)
