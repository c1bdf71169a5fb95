"""Progress lines for long jobs, written for someone watching a Slurm log: how much is done of how
much, at what rate, and when it will end.

    base_eval hellaswag: 400/1000 items (40%) | 12.5 items/s | 32s elapsed | ETA 48s

A line is printed each time another tenth of the work is done, and at least every `every_s`
seconds while it is not, so a short task prints about ten lines and a long one never goes quiet
for long. The rate is measured from the first count this object saw (a resumed run's earlier
steps do not make it look faster).
"""

import time


def duration(seconds):
    """Seconds as 1h02m03s, 4m05s or 6s."""
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Counts work done toward `total` and prints a progress line through `log` when one is due."""

    def __init__(self, label, total, unit="items", done=0, every_s=60.0, log=print, clock=time.monotonic):
        self.label, self.total, self.unit, self.every_s, self.log, self.clock = label, total, unit, every_s, log, clock
        self.done = self.first = done
        self.t0 = self.last_line = clock()
        self.last_tenth = self._tenth(done)

    def _tenth(self, done):
        return 10 * done // self.total if self.total else 10

    def eta(self):
        """Seconds left at the rate so far, or None before anything was done here."""
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def rate(self):
        elapsed = self.clock() - self.t0
        return (self.done - self.first) / elapsed if elapsed > 0 and self.done > self.first else None

    def timing(self):
        """'elapsed | ETA': wall time so far and what is left at the rate so far."""
        eta = self.eta()
        return f"{duration(self.clock() - self.t0)} elapsed | ETA {'-' if eta is None else duration(eta)}"

    def status(self):
        """'done/total unit (pct%) | rate | elapsed | ETA', the part of a line after its label."""
        rate = self.rate()
        pct = 100 * self.done / self.total if self.total else 100.0
        return (f"{self.done}/{self.total} {self.unit} ({pct:.0f}%) | "
                + (f"{rate:.3g} {self.unit}/s" if rate else f"- {self.unit}/s") + f" | {self.timing()}")

    def update(self, done):
        """Set the count to `done`; print a line if another tenth is done or `every_s` went by."""
        self.done = done
        now, tenth = self.clock(), self._tenth(done)
        if tenth > self.last_tenth or now - self.last_line >= self.every_s:
            self.last_tenth, self.last_line = tenth, now
            self.log(f"{self.label}: {self.status()}")

    def advance(self, n=1):
        self.update(self.done + n)
