"""The ``/proc`` readers and the sampler, against this process and real loopback sockets."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from iweblens.harness.procfs import (
    Sampler,
    held_connections,
    open_fds,
    rss_bytes,
    status_fields,
)
from iweblens.harness.serving import LOOPBACK


def test_the_resident_size_is_the_kernels_count_of_resident_pages() -> None:
    rss = rss_bytes(os.getpid())
    pages = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1])
    assert rss > 0
    assert abs(rss - pages * resource.getpagesize()) < 4 * 2**20  # read a moment apart
    assert int(status_fields(os.getpid())["Threads"]) >= 1


def test_a_process_that_is_gone_has_no_memory_and_no_status() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert rss_bytes(process.pid) == 0
    with pytest.raises(FileNotFoundError):
        status_fields(process.pid)


def test_an_opened_file_is_one_more_descriptor() -> None:
    before = len(open_fds(os.getpid()))
    with tempfile.TemporaryFile():
        assert len(open_fds(os.getpid())) == before + 1


def test_held_connections_count_the_accepted_not_the_backlog() -> None:
    with socket.create_server((LOOPBACK, 0), backlog=4) as listener:
        port = listener.getsockname()[1]
        first = socket.create_connection((LOOPBACK, port))
        second = socket.create_connection((LOOPBACK, port))
        accepted, _ = listener.accept()
        with first, second, accepted:
            # The second connection is established in the kernel but no process holds it yet.
            assert held_connections([os.getpid()], port) == 1
        assert held_connections([os.getpid()], port) == 0


def test_the_sampler_reads_during_the_block_and_skips_failed_readings() -> None:
    calls = 0

    def read() -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise FileNotFoundError("the process went away")
        return calls

    with Sampler(read, interval=0.01) as sampler:
        deadline = time.monotonic() + 30
        while calls < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    taken = list(sampler.readings)
    time.sleep(0.05)
    assert taken[:3] == [1, 3, 4]
    assert 2 not in taken
    assert sampler.readings == taken  # nothing read once the block ended
