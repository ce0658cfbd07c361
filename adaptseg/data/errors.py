"""The data error, in a module without torch so that command lines can name it cheaply."""

from __future__ import annotations


class DataError(ValueError):
    """A data problem, with the file it is about in the message.

    Raised in a DataLoader worker, torch re-raises it in the main process with the worker's
    traceback as the message; only the original line is kept, so users see the file.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split("DataError: ", 1)[-1]
        super().__init__(message)
