"""The controller's log: lines with time and level, written in batches (Ryu wrote each line
with its own system calls, a tenth of the controller's thread in a burst of moves)."""

from __future__ import annotations

import io
import logging
import re
import time

from lisp_ryu.glue.compat import LOG_FORMAT, BatchedStreamHandler
from support.ryu_process import RyuProcess


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler_and_logger():
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger(f"test-batching-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return stream, handler, logger


def test_info_lines_wait_for_the_flush_and_leave_in_one_write():
    stream, handler, logger = handler_and_logger()
    for k in range(50):
        logger.info("dc2: dynamic EID 10.1.0.%d arrived", k)
    assert stream.getvalue() == ""
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 50 and stream.writes == 1
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO test-batching-\d+: dc2: dynamic EID 10.1.0.0 arrived$",
                    lines[0])


def test_a_warning_goes_at_once_with_the_lines_before_it_in_order():
    stream, handler, logger = handler_and_logger()
    logger.info("first")
    logger.warning("Map-Server unreachable")
    assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == ["first", "Map-Server unreachable"]
    assert " WARNING " in stream.getvalue().splitlines()[1]


def test_a_long_batch_is_written_without_waiting_for_the_flush():
    stream, handler, logger = handler_and_logger()
    for k in range(300):
        logger.info("line %d", k)
    assert len(stream.getvalue().splitlines()) == 256  # LOG_BATCH_LINES
    handler.flush()
    assert len(stream.getvalue().splitlines()) == 300


def test_the_controller_logs_time_and_level_and_its_lines_come_out_without_an_event(tmp_path):
    """The real controller: its INFO lines reach the log within the flush interval, idle."""
    ryu = RyuProcess(tmp_path, "rest: {token: t0ken}\n")
    try:
        ryu.wait_listening(ryu.rest_port)
        deadline = time.monotonic() + 5.0
        while "INFO" not in ryu.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in ryu.log().splitlines() if " INFO " in line]
        assert lines, ryu.log()[-2000:]
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", line) for line in lines), lines
    finally:
        ryu.stop()


def test_sigterm_writes_the_waiting_lines_then_terminates_as_before(monkeypatch):
    """SIGTERM's default action runs no Python code: the lines waiting for the flush would be lost."""
    import signal

    from lisp_ryu.glue import compat

    stream, handler, logger = handler_and_logger()
    logger.info("the last line before the stop")
    calls = []
    monkeypatch.setattr(compat.signal, "signal", lambda signum, action: calls.append(("signal", signum, action)))
    monkeypatch.setattr(compat.os, "kill", lambda pid, signum: calls.append(("kill", pid, signum)))
    compat.flush_then_terminate([handler])(signal.SIGTERM, None)
    assert stream.getvalue().endswith("the last line before the stop\n")
    assert calls == [("signal", signal.SIGTERM, signal.SIG_DFL), ("kill", compat.os.getpid(), signal.SIGTERM)]


def test_the_controller_stopped_by_sigterm_still_dies_of_it(tmp_path):
    import signal

    ryu = RyuProcess(tmp_path, "rest: {token: t0ken}\n")
    try:
        ryu.wait_listening(ryu.rest_port)
        ryu.proc.send_signal(signal.SIGTERM)
        assert ryu.proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        ryu.stop()
