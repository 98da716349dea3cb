"""Errors a person can act on.

Every front end shows these to the person as they are, so each message says what was wrong and what to do.
Where the fix is "use other weights", the error carries a ``WeightsFix`` and each front end spells it with its
own flag (``describe_error(exc, "cli")``): the app wants ``--weights artfusion=…``, the CLI ``--weights …``.
Anything else that escapes a method is a bug and is reported as one.
"""

from __future__ import annotations

from dataclasses import dataclass

FRONT_ENDS = ("python", "cli", "app", "modal")


@dataclass(frozen=True)
class WeightsFix:
    """ "Point the studio at your own copy of the weights", said the way each front end says it."""

    method: str
    example: str  # a weights value, e.g. "/path/to/artfusion_r12_step=317673.ckpt"
    cli: str | None = None  # the CLI's spelling when it is not ``--weights EXAMPLE``

    def spelled_for(self, front_end: str) -> str:
        if front_end == "cli":
            return self.cli or f"--weights {self.example}"
        if front_end == "app":
            return f"start the app with --weights {self.method}={self.example}"
        if front_end == "modal":
            return (
                f"put the files in the style-studio-cache Volume and deploy with "
                f'STYLE_STUDIO_WEIGHTS="{self.method}=/cache/…" modal deploy modal_app.py'
            )
        return f'weights={{"{self.method}": "{self.example}"}}'


class StudioError(Exception):
    """Base class: a problem with the request, the inputs or the setup, explained for the user."""

    def __init__(self, message: str, *, fix: WeightsFix | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.for_front_end("python")

    def for_front_end(self, front_end: str) -> str:
        """The message with its fix spelled for ``front_end`` (one of ``FRONT_ENDS``)."""
        if self.fix is None:
            return self.message
        return f"{self.message.rstrip('. ')}. To use your own copy: {self.fix.spelled_for(front_end)}."


def describe_error(exc: BaseException, front_end: str = "python") -> str:
    """What a front end shows for ``exc``: a studio error's own words, or one line naming an unexpected failure."""
    if isinstance(exc, StudioError):
        return exc.for_front_end(front_end)
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"Unexpected failure ({type(exc).__name__}{': ' + first if first else ''})."


class InvalidRequestError(StudioError, ValueError):
    """A parameter is out of range or of the wrong type."""


class ImageInputError(StudioError, ValueError):
    """An input file is unreadable, unsupported, too large or too small."""


class MethodUnavailableError(StudioError):
    """The method cannot run here: unknown name, missing weights, unsupported device."""


class OutOfMemoryError(StudioError):
    """The device ran out of memory; the message suggests a smaller size. Memory was freed for the next request."""


class GenerationCancelled(StudioError):
    """The person cancelled a generation; nothing was made and the studio is ready again."""
