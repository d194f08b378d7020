"""The project's exception classes: which errors are the user's to fix.

`UserError` (and every error class of the package, all subclasses of it):
an argument, binding, flag, file or dataset that cannot be used; its message
is one line naming what was wrong and what is accepted. The commands print
it as `error: ...` and exit 2. Anything else (a bug here, in Keras or in
TensorFlow) keeps its traceback and exits 1. `UserError` is a `ValueError`
too, so Python callers can catch either.
"""


class AsmnasError(Exception):
    """Base of every exception asmnas_tf raises on purpose."""


class UserError(AsmnasError, ValueError):
    """Bad input: the message is one line, naming the input and what is accepted."""
