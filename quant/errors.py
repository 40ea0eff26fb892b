"""The one exception type that reaches users as a single line."""


class MixDQError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``mixdq: error: <message>`` and exits with status 2; no traceback. Library
    callers can catch it like any other exception. The message must name the offending thing
    (file, layer, bit width, component) and, where possible, say what to do about it.
    """
