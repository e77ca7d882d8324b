"""The one exception type users see: a problem they can fix, printed as one line."""


class NpuEpError(Exception):
    """A user-facing failure: the CLI prints `npu-ep: error: <message>` and exits with code 2.

    The message names the problem and the fix, on one line, e.g.
    ``NpuEpError("models/foo: no such model folder (export one with: npu-ep export --model tiny.en)")``.
    """


def first_line(error: BaseException) -> str:
    """The first line of an unexpected error's message (its type when it has none): the cause a
    one-line NpuEpError quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
