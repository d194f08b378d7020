"""Clean stops: SIGTERM and Ctrl-C end training at a step boundary, state saved.

Schedulers send SIGTERM before they kill; a user presses Ctrl-C. Either
would otherwise land anywhere (inside a step, inside a write) and lose the
steps since the last saved state. While `fit` trains, both only set a flag;
the loop checks it after each step, saves the state at that step and raises
`RunStopped`, which the commands turn into one line and the shell's status
for the signal (143, 130). A second Ctrl-C interrupts at once, as usual.
"""

import contextlib
import signal
import threading

from asmnas_tf.errors import AsmnasError

EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunStopped(AsmnasError):
    """Training stopped on a signal; `exit_status` is the shell's for it, the message one line."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_status = EXIT_STATUS.get(signum, 1)
        self.signum = signum


class StopRequest:
    """The signal received while training, if any (`signum` is None until then)."""

    def __init__(self):
        self.signum = None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None


@contextlib.contextmanager
def stop_on_signals():
    """A `StopRequest` that SIGTERM and SIGINT set while the block runs; the old handlers after.

    Handlers can only be installed from the main thread: elsewhere (a
    thread of the caller's) the signals keep their handlers and the request
    never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_signal(signum, frame):
        if signum == signal.SIGINT and request.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        request.signum = signum

    previous = {signum: signal.signal(signum, on_signal) for signum in EXIT_STATUS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
