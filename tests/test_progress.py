"""Progress in a log file: plain lines, throttled, with the final count even when a phase fails."""

import io

import pytest
from rich.console import Console

from seal.core.progress import RichReporter, _LineTask


def test_line_task_throttles_and_estimates_time_left():
    clock, lines = [100.0], []
    task = _LineTask(lines.append, "trials", 4, every=60, now=lambda: clock[0])
    clock[0] += 30
    task.advance(info="reward 0.4")  # 30 s since the last line: nothing yet
    assert lines == ["trials: started, 4 to do"]
    clock[0] += 30
    task.advance()
    assert lines[-1] == "trials: 2/4, 0:01:00 elapsed, ~0:01:00 left, reward 0.4"
    clock[0] += 3600
    task.advance(2)
    task.close()
    assert lines[-2:] == ["trials: 2/4, 0:01:00 elapsed, ~0:01:00 left, reward 0.4", "trials: 4/4, 1:01:00 elapsed, reward 0.4"]
    task.close()  # the final count is written once
    assert len(lines) == 3


def test_reporter_writes_lines_when_not_a_terminal():
    buf = io.StringIO()
    rep = RichReporter(Console(file=buf, width=40), line_every=0)
    with pytest.raises(RuntimeError):
        with rep.task("SFT of the generator on many, many self-edits [bold]", 3) as task:
            task.advance(info="loss 1.2")
            raise RuntimeError("killed")
    out = buf.getvalue().splitlines()
    assert out[0] == "SFT of the generator on many, many self-edits [bold]: started, 3 to do"  # no wrap, no markup
    assert out[-1].startswith("SFT of the generator on many, many self-edits [bold]: 1/3, 0:00:00 elapsed")
    assert out[-1].endswith("loss 1.2")
