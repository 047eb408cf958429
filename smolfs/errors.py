"""The one error hierarchy shared by smolfs, kstrip and launcher: :class:`SmolError`
(``message``, ``hint``) and its subclasses; each CLI prints one line and exits non-zero,
with a traceback only under ``--debug``."""

from __future__ import annotations


class SmolError(Exception):
    """Base of every error mksmolnb reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SmolError):
    """The command line or the arguments of an API call are wrong."""

    exit_code = 2


class InputError(SmolError):
    """An input (file, archive, spec, service, kernel) is missing, unreadable or malformed."""


class FilesystemLimitError(InputError):
    """Content the target filesystem cannot represent (name too long, file too large...)."""


class ImageTooSmall(SmolError):
    """A fixed image size cannot hold the content; ``minimum`` is the smallest that would."""

    def __init__(self, message: str, minimum: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.minimum = minimum


class ImageTooLarge(UsageError):
    """An image size over the sane bound (``smolfs.fs.sizes.MAX_IMAGE``) without ``--force``."""

    def __init__(self, message: str, size: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.size = size


class ExternalCommandError(SmolError):
    """An external program failed or is missing."""

    def __init__(
        self,
        message: str,
        argv: list[str] | None = None,
        returncode: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class FetchError(SmolError):
    """Downloading or verifying a NetBSD artifact failed."""


class ChecksumMismatch(FetchError):
    """A downloaded file does not match its published digest."""

    def __init__(self, message: str, expected: str, actual: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.expected = expected
        self.actual = actual


class KernelError(InputError):
    """A kernel file is not what the operation needs."""


class LaunchError(SmolError):
    """QEMU could not be started or the VM did not come up."""


class ReadyTimeout(LaunchError):
    """The service did not become ready in time."""


class GuestEnded(LaunchError):
    """The guest's kernel panicked, trapped into its debugger, or halted before the service
    was ready (QEMU stopped)."""
