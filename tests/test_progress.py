"""Progress lines with an ETA (snakechat.runtime.progress): when they come and what they say, on a
clock the test sets. The stages' own lines are read from short runs' logs in test_train.py,
test_core_eval.py and test_chat_eval.py, with `progress_lines` below."""

import re

from snakechat.runtime.progress import Progress, duration

LINE = re.compile(r"^(?P<label>.+?): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\) \| (?P<rate>[-\d.e+]+) \w+/s "
                  r"\| (?P<elapsed>[\dhms]+) elapsed \| ETA (?P<eta>[-\dhms]+)$")


def progress_lines(log, label):
    """[(done, total, eta)] of the progress lines for `label` in a log's text."""
    found = [LINE.match(line) for line in log.splitlines()]
    return [(int(m["done"]), int(m["total"]), m["eta"]) for m in found if m and m["label"] == label]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_each_tenth_with_the_rate_and_what_is_left():
    clock, lines = Clock(), []
    p = Progress("hellaswag", 1000, log=lines.append, clock=clock)
    for _ in range(25):
        clock.now += 2.0
        p.advance(40)  # 20 items/s
    assert len(lines) == 10  # 40, 120, 200, ... cross each tenth once; no line twice for a tenth
    assert lines[0] == "hellaswag: 120/1000 items (12%) | 20 items/s | 6s elapsed | ETA 44s"
    assert lines[3] == "hellaswag: 400/1000 items (40%) | 20 items/s | 20s elapsed | ETA 30s"
    assert lines[-1] == "hellaswag: 1000/1000 items (100%) | 20 items/s | 50s elapsed | ETA 0s"
    assert [progress_lines("\n".join(lines), "hellaswag")[i] for i in (3, -1)] == [(400, 1000, "30s"), (1000, 1000, "0s")]


def test_a_slow_job_still_prints_every_every_s_seconds():
    clock, lines = Clock(), []
    p = Progress("train", 100_000, unit="steps", every_s=60, log=lines.append, clock=clock)
    for _ in range(10):
        clock.now += 30.0
        p.advance(10)  # a tenth takes 5 minutes
    assert len(lines) == 5 and lines[0].startswith("train: 20/100000 steps (0%) | 0.333 steps/s | 1m00s elapsed | ETA 83h")


def test_the_rate_counts_only_what_this_run_did():
    """A resumed run starting at step 900 of 1000 is not 900 steps fast."""
    clock = Clock()
    p = Progress("base", 1000, unit="steps", done=900, log=lambda line: None, clock=clock)
    assert p.eta() is None and p.timing() == "0s elapsed | ETA -"
    clock.now = 10.0
    p.update(910)
    assert p.rate() == 1.0 and p.eta() == 90.0


def test_durations_read_as_a_clock():
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0s", "1m00s", "1m01s", "1h00m00s", "1h02m05s"]
