"""Errors the CLI turns into a clear message and an exit code."""

from __future__ import annotations

EXIT_FAIL = 1      # a run's verdict: a criterion failed (or a point could not be measured)
EXIT_SPEC = 2      # bad input: nothing was applied
EXIT_LAB = 3       # the lab could not be built or run (it was rolled back)
EXIT_CAPABILITY = 4  # this machine lacks what the request needs
EXIT_INCONCLUSIVE = 5  # a run's verdict: no criterion failed, but the data cannot decide one
EXIT_INTERNAL = 70   # a bug in metrolab (a traceback was printed; EX_SOFTWARE)


class MetrolabError(Exception):
    exit_code = 1


class SpecError(MetrolabError):
    """Bad input, located: file, field path and the offending value."""

    exit_code = EXIT_SPEC

    def __init__(self, file: str, path: str, value: object, message: str):
        self.file, self.path, self.value, self.message = file, path, value, message
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {message} (value: {value!r})")


class SpecErrors(MetrolabError):
    """Several located errors at once, so a user fixes a file in one pass."""

    exit_code = EXIT_SPEC

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class LabError(MetrolabError):
    exit_code = EXIT_LAB


class CapabilityError(MetrolabError):
    exit_code = EXIT_CAPABILITY


class GuestRunError(MetrolabError):
    """The command failed inside the guest kernel; it printed why (streamed to our stderr)."""

    def __init__(self, what: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(f"{what} failed in the guest kernel (exit {exit_code}; its messages are above)")
