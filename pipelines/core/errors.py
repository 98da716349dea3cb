"""Errors a person can act on.

Every front end (Gradio, CLI, Modal) shows ``str(error)`` of these as is, so each message says what was
wrong and what to do. Anything else that escapes a method is a bug and is reported as one.
"""


class StudioError(Exception):
    """Base class: a problem with the request, the inputs or the setup, explained for the user."""


class InvalidRequestError(StudioError, ValueError):
    """A parameter is out of range or of the wrong type."""


class ImageInputError(StudioError, ValueError):
    """An input file is unreadable, unsupported, too large or too small."""


class MethodUnavailableError(StudioError):
    """The method cannot run here: unknown name, missing weights, unsupported device."""


class OutOfMemoryError(StudioError):
    """The device ran out of memory; the message suggests a smaller size. Memory was freed for the next request."""
