"""Progress lines: quiet for short work, one redrawn line in a terminal, plain lines in a log."""

import io

from stages.core.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


def _run(terminal: bool, seconds_per_item: float, items: int = 100) -> str:
    clock, stream = Clock(), Stream(terminal)
    progress = Progress("features", items, stream=stream, clock=clock)
    for _ in range(items):
        clock.now += seconds_per_item
        progress.advance()
    progress.close()
    return stream.getvalue()


def test_short_work_prints_nothing():
    assert _run(terminal=False, seconds_per_item=0.01) == ""
    assert _run(terminal=True, seconds_per_item=0.01) == ""


def test_a_log_gets_a_few_plain_lines_with_rate_and_time_left():
    lines = _run(terminal=False, seconds_per_item=1.0).splitlines()  # 100 s of work
    assert 3 <= len(lines) <= 6 and "\r" not in "".join(lines)
    assert lines[0].startswith("features: 3/100 images (3%), 1.0 images/s")
    assert lines[0].endswith("1:37 left")
    assert lines[-1].startswith("features: 100/100 images (100%)")


def test_a_terminal_gets_one_line_redrawn_in_place():
    out = _run(terminal=True, seconds_per_item=1.0)
    assert out.count("\n") == 1 and out.endswith("\n") and out.count("\r") > 50
    assert out.rstrip().split("\r")[-1].startswith("features: 100/100 images (100%)")
