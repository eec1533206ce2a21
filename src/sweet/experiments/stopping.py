"""Stopping a grid launch.

SIGTERM stops it at once (:func:`stop_signals_interrupt`): each run in flight keeps its last periodic training
checkpoint (every 200 steps by default) and loses the steps since. So does Ctrl-C on the Ray back-end; on the
local back-end the run in training first saves its step in progress (:func:`sweet.checkpoint.interrupt_after_step`).

A stop request loses nothing on either back-end (:func:`request_stop`): it creates the file ``GRID_DIR/STOP``
(``sweet grid --output GRID_DIR --stop``); no further run starts, each run in training saves a checkpoint at its
current step within one optimizer step and stops (:class:`sweet.checkpoint.TrainingStopped`), a run already past
training finishes, and the launch ends as "stopped" (exit code 0) and removes the file. The next launch
continues every stopped run from its checkpoint, with the result of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from ..checkpoint import STOP_FILE
from ..errors import SweetError
from ..io import atomic_write_text
from .store import LAUNCHES_FILE, launch_running, now


@contextlib.contextmanager
def stop_signals_interrupt():
    """While a grid runs, SIGTERM (and SIGINT where the process started with it ignored, as a background job of a
    script does) stop it as Ctrl-C does: a KeyboardInterrupt, so that the launch record is closed as "interrupted"
    and the process ends with code 130. Without it a grid stopped at a deadline by a signal kept "running" in
    launches.json. Only in the main thread (signal handlers cannot be set elsewhere); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    sigs = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else [])
    previous = {sig: signal.signal(sig, interrupt) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def request_stop(grid_dir: str | Path) -> Path:
    """Ask the launch running on ``grid_dir`` to stop without losing training progress (module docstring):
    writes ``GRID_DIR/STOP`` and returns its path. The launch answers within one optimizer step per run in
    training; a run past training finishes first."""
    grid_dir = Path(grid_dir)
    if not (grid_dir / LAUNCHES_FILE).is_file():
        raise SweetError(f"{grid_dir} is not a grid directory that was launched (no {LAUNCHES_FILE}); nothing to stop")
    if launch_running(grid_dir.resolve()) is False:
        raise SweetError(f"no 'sweet grid' launch is running on {grid_dir}; nothing to stop")
    path = grid_dir / STOP_FILE
    atomic_write_text(path, f"stop requested {now()}\n")
    return path
