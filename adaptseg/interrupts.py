"""Ctrl-C and SIGTERM that take effect between training steps, never inside one.

A signal that lands inside a step would leave a half-done iteration behind: BatchNorm running
statistics already moved by the source pass, a G step without its D steps. Saving a checkpoint
there makes the resumed run differ from an uninterrupted one. So the first signal only asks the
loop to stop; the loop finishes the step (and its log, evaluation and checkpoint) and stops at
the next clean point. A second signal stops at once, without a checkpoint (the run then resumes
from its last periodic one).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """Raised by the loop at a clean point after a deferred signal (exit 130)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class DeferredInterrupts:
    """``with DeferredInterrupts() as stop: ... if stop.requested: ...``

    Outside the main thread (where signal handlers cannot be installed) it does nothing and
    ``requested`` stays None.
    """

    def __init__(self, message: str = "stopping after the current step") -> None:
        self.message = message
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
        self.requested = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: {self.message} (send it again to stop at once)", file=sys.stderr)

    def check(self) -> None:
        """Raise ``StopRequested`` if a signal arrived; call it only at a clean point."""
        if self.requested is not None:
            raise StopRequested(self.requested)

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
