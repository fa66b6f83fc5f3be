"""A sweep's progress for the terminal: the line printed as each job ends, and the live
line that keeps it last on a terminal.

:func:`progress_line` is pure, numbers in and the line out::

    sweep progress: 3/8 jobs, 0:42 elapsed, ETA 1:10, best final/val_accuracy 0.9731 (job 1)

:class:`LiveLine` shows such a line as the terminal's last line, rewritten in place
(``\\r`` and erase-line) as the next job ends, while everything else the process prints
scrolls above it.
"""

from __future__ import annotations

import atexit
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

from mnist_exp.results.metric_names import OBJECTIVE

ERASE_LINE = "\r\x1b[K"  # back to the line's start, and erase it (ANSI)
PROGRESS_LABEL = "sweep progress: "  # what starts a progress line (that has the room)


@dataclass(frozen=True)
class SweepProgress:
    """How far a sweep is, as its jobs' runs tell it."""

    done: int  # jobs ended (finished or failed), and those finished by an earlier attempt
    total: int  # jobs in the whole sweep
    elapsed_s: float  # since this attempt of the sweep started
    ran: int  # of ``done``, the jobs this attempt ran: they set the pace of the ETA
    failed: int = 0  # of ``ran``, the jobs that failed
    best: float | None = None  # the highest objective of a finished job so far
    best_job: str = ""  # that job's number


def progress_line(progress: SweepProgress, width: int | None = None) -> str:
    """One line on the sweep's ``progress``: jobs done of all, time elapsed, the time
    still needed at the pace of the jobs this attempt ran (once one has, and while jobs
    remain) and the best objective so far.

    With ``width`` (a terminal's), the line never wraps: too wide, it loses its
    ``sweep progress:`` label, then whatever is still past ``width``.
    """
    failed = f" ({progress.failed} failed)" if progress.failed else ""
    parts = [
        f"{progress.done}/{progress.total} jobs{failed}",
        f"{clock(progress.elapsed_s)} elapsed",
    ]
    remaining = progress.total - progress.done
    if progress.ran and remaining > 0:
        parts.append(f"ETA {clock(progress.elapsed_s / progress.ran * remaining)}")
    if progress.best is None:
        parts.append(f"no {OBJECTIVE} yet")
    else:
        parts.append(f"best {OBJECTIVE} {progress.best:.4f} (job {progress.best_job})")
    line = ", ".join(parts)
    if width is None or len(PROGRESS_LABEL + line) <= width:
        return PROGRESS_LABEL + line
    return line[:width]


def clock(seconds: float) -> str:
    """``seconds`` as a clock reads: ``m:ss``, or ``h:mm:ss`` from an hour on."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveLine:
    """A line kept last on a terminal while the process's other output scrolls above it.

    The first :meth:`show` puts a stand-in in front of ``sys.stdout`` (and of
    ``sys.stderr`` when that is a terminal too): a write through either first erases the
    line, and once the output is back at a line's start the line is drawn again below it.
    Output that bypasses them (another process, a library writing to the file descriptor)
    can still land on the line. :meth:`close` (run at exit too) ends the line, which stays
    as an ordinary one, and puts the streams back.
    """

    def __init__(self) -> None:
        self._text = ""
        self._shown = False
        self._at_line_start = True
        self._lock = threading.RLock()
        self._replaced: dict[str, TextIO] = {}  # sys attribute -> the stream it held

    def show(self, text: str) -> None:
        """Make ``text`` the live line: drawn at once in place of the one shown (or as
        soon as the output is at a line's start)."""
        with self._lock:
            if not self._replaced:
                self._install()
            self._text = text
            self._draw()

    def close(self) -> None:
        """End the live line with a newline and put the standard streams back."""
        with self._lock:
            if self._shown:
                self._write_terminal("\n")
                self._shown = False
            for name, stream in self._replaced.items():
                if isinstance(getattr(sys, name), _Through):
                    setattr(sys, name, stream)
            self._replaced.clear()
            self._text = ""
            atexit.unregister(self.close)

    def write(self, stream: TextIO, text: str) -> int:
        """Write ``text`` to ``stream`` below the erased line; draw the line again if
        ``text`` ends one."""
        with self._lock:
            if not self._replaced or not text:  # closed (a stand-in somebody kept), or nothing
                return stream.write(text)
            if self._shown:
                self._write_terminal(ERASE_LINE)
                self._shown = False
            written = stream.write(text)
            stream.flush()
            self._at_line_start = text.endswith("\n")
            self._draw()
            return written

    def _install(self) -> None:
        """Put the stand-ins in front of the standard streams; close at exit."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if name == "stdout" or (stream is not None and stream.isatty()):
                self._replaced[name] = stream
                setattr(sys, name, _Through(self, stream))
        self._at_line_start = True
        atexit.register(self.close)

    def _draw(self) -> None:
        """Draw the line (again) where it is shown, or below output that ended a line."""
        if self._text and (self._shown or self._at_line_start):
            self._write_terminal(ERASE_LINE + self._text)
            self._shown = True

    def _write_terminal(self, text: str) -> None:
        terminal = self._replaced["stdout"]
        terminal.write(text)
        terminal.flush()


class _Through:
    """A standard stream whose writes go through a :class:`LiveLine`."""

    def __init__(self, live: LiveLine, stream: TextIO) -> None:
        self._live = live
        self._stream = stream

    def write(self, text: str) -> int:
        return self._live.write(self._stream, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
