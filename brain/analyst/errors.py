"""Exceptions raised by the analysts.

::

    AnalystError
     ├── AnalystUnavailable   the LLM could not be asked or did not answer
     │    │                   (``retryable`` says whether trying again may help)
     │    └── AnalystTimeout  the SDK gave up waiting for the answer
     └── AnswerInvalid        the LLM answered, but not with a valid assessment
                              (carries the tokens the answer cost)

An analyst raises only these; whatever the SDK raised is kept as ``__cause__`` for the log.
:class:`~brain.analyst.guard.GuardedAnalyst` catches them all and answers with the rules.
"""

from __future__ import annotations


class AnalystError(Exception):
    """Base class of every error the analyst package raises on purpose."""


class AnalystUnavailable(AnalystError):
    """The LLM call failed: an error status, a dropped connection, a refused key.

    ``retryable`` is true for rate limits, overload, server errors and network trouble,
    false for what will fail the same way again (a bad request or key). ``status`` is the
    HTTP status of the answer when there was one.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self)!r}, retryable={self.retryable}, "
            f"status={self.status})"
        )


class AnalystTimeout(AnalystUnavailable):
    """The SDK's own timeout expired before the answer arrived."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class AnswerInvalid(AnalystError):
    """The LLM answered with something that is not a valid assessment.

    The answer was billed all the same: ``input_tokens`` and ``output_tokens`` say how much,
    and ``model`` which model answered, so the usage ledger stays honest.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_write_tokens = cache_write_tokens
        self.cache_read_tokens = cache_read_tokens
