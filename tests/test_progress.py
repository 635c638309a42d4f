"""samkit.io.progress: the one progress display of `samkit label` (images) and `samkit train` (steps)."""
import io

import pytest

from samkit.io.progress import Progress, eta_text


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("name,unit", [("labelling", "images"), ("training", "steps")])
def test_plain_lines_name_the_job_and_its_unit(name, unit):
    out = io.StringIO()
    bar = Progress(3, stream=out, name=name, unit=unit)
    bar.advance(1)
    bar.advance(2, failed=1, note="loss 0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{name} 1/3 {unit}, ") and f"{unit}/s" in lines[0]
    assert lines[-1].startswith(f"{name} 3/3 {unit}, ") and "1 failed" in lines[-1] and "loss 0.5" in lines[-1]


def test_lines_off_writes_nothing_off_a_terminal():
    out = io.StringIO()
    bar = Progress(2, stream=out, name="training", unit="steps", lines=False)
    bar.advance(2)
    bar.close()
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar_with_rate_and_note():
    pytest.importorskip("rich")
    out = _Tty()
    bar = Progress(4, stream=out, name="training", unit="steps", lines=False)
    for _ in range(4):
        bar.advance(1, note="distill loss 0.1234")
    bar.close()
    text = out.getvalue()
    assert "training" in text and "4/4" in text and "steps/s" in text and "distill loss 0.1234" in text


@pytest.mark.parametrize("seconds,text", [(None, "?"), (5, "0:05"), (65, "1:05"), (3725, "1:02:05")])
def test_eta_text(seconds, text):
    assert eta_text(seconds) == text
