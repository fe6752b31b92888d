"""The Keras-style progress bar printed by ``Model.fit`` / ``evaluate``.

On a terminal (verbose=1) the bar redraws in place::

    Epoch 3/10
    23/23 ━━━━━━━━━━━━━━━━━━━━ 0s 5ms/step - accuracy: 0.9612 - loss: 0.1321 - val_loss: 0.1402

When stdout is not a TTY (a log file, CI) only the finished line of each epoch
is printed, so logs stay readable. verbose=2 prints one compact line per
epoch; verbose=0 prints nothing.
"""

import sys
import time

WIDTH = 20


def format_value(value):
    """4 decimals, or scientific notation for tiny values (as Keras)."""
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.4e}"
    return f"{value:.4f}"


def format_logs(logs):
    return "".join(f" - {k}: {format_value(v)}" for k, v in logs.items())


def format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{round(seconds)}s"


def format_per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class ProgressBar:
    """One epoch's (or one evaluation's) bar over ``total`` steps."""

    def __init__(self, total, verbose=1, stream=None):
        self.total = int(total)
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.interactive = verbose == 1 and _isatty(self.stream)
        self.start = time.perf_counter()
        self._last_draw = 0.0
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "━".encode(encoding)
            self.fill, self.empty = "━", "━"
            self._dim = True
        except (UnicodeEncodeError, LookupError):
            self.fill, self.empty = "=", "."
            self._dim = False

    def _bar(self, step):
        done = int(WIDTH * step / max(self.total, 1))
        if self._dim and self.interactive:
            return self.fill * done + "\x1b[2m" + self.empty * (WIDTH - done) + "\x1b[0m"
        return self.fill * done + (self.empty if not self._dim else " ") * (WIDTH - done)

    def update(self, step, logs):
        """Redraw after ``step`` steps (terminal only; at most ~20 redraws a second)."""
        if not self.interactive:
            return
        now = time.perf_counter()
        if step < self.total and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        elapsed = now - self.start
        per_step = elapsed / max(step, 1)
        eta = per_step * (self.total - step)
        digits = len(str(self.total))
        line = (f"\r{step:>{digits}}/{self.total} {self._bar(step)} {format_time(eta)} "
                f"{format_per_step(per_step)}{format_logs(logs)}")
        self.stream.write(line + "\x1b[K")
        self.stream.flush()

    def finish(self, logs):
        """Print the final line of the epoch with its total time."""
        if self.verbose == 0:
            return
        elapsed = time.perf_counter() - self.start
        per_step = format_per_step(elapsed / max(self.total, 1))
        if self.verbose == 2:
            line = f"{self.total}/{self.total} - {format_time(elapsed)} - {per_step}"
        else:
            full = self.fill * WIDTH
            line = f"{self.total}/{self.total} {full} {format_time(elapsed)} {per_step}"
        line += format_logs(logs)
        self.stream.write(("\r" + line + "\x1b[K\n") if self.interactive else line + "\n")
        self.stream.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
