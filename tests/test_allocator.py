"""The service's malloc on transparent huge pages: the tunable, and a real server using it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import requests
from support import IMAGES_DIR, ServerProcess

from iweblens import allocator
from iweblens.allocator import HUGE_PAGES, TUNABLES, with_huge_pages

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_the_tunable_is_added_to_an_environment_without_it() -> None:
    assert with_huge_pages({"PATH": "/bin"}) == {"PATH": "/bin", TUNABLES: f"{HUGE_PAGES}=1"}


def test_other_tunables_are_kept() -> None:
    environ = with_huge_pages({TUNABLES: "glibc.malloc.arena_max=2"})
    assert environ == {TUNABLES: f"glibc.malloc.arena_max=2:{HUGE_PAGES}=1"}


@pytest.mark.parametrize("value", ["0", "1", "2"])
def test_an_operators_own_setting_wins(value: str) -> None:
    assert with_huge_pages({TUNABLES: f"glibc.malloc.arena_max=2:{HUGE_PAGES}={value}"}) is None


def _auxv(tmp_path: Path, secure: int) -> Path:
    # (AT_UID, 0), (AT_SECURE, secure), (AT_NULL, 0), as the kernel lays them out.
    path = tmp_path / f"auxv-{secure}"
    path.write_bytes(b"".join(struct.pack("PP", *pair) for pair in ((11, 0), (23, secure), (0, 0))))
    return path


def test_no_re_execution_in_secure_execution_mode(tmp_path: Path) -> None:
    # There glibc drops GLIBC_TUNABLES (setuid, file capabilities): re-executing would loop.
    assert allocator._secure_execution(_auxv(tmp_path, 1))
    assert not allocator._secure_execution(_auxv(tmp_path, 0))
    assert allocator._secure_execution(tmp_path / "unreadable")
    assert not allocator._secure_execution()  # this test process


def _environ(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")


def _huge_kib(pid: int) -> int:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith("AnonHugePages:"))


def test_the_server_re_executes_itself_onto_huge_pages_and_an_operator_can_refuse(
    model_paths: object,
) -> None:
    default, refused = ServerProcess(), ServerProcess(env={TUNABLES: f"{HUGE_PAGES}=0"})
    try:
        for server in (default, refused):
            server.wait_ready()
            with (IMAGES_DIR / "000000007454.jpg").open("rb") as handle:
                answer = requests.post(
                    f"{server.url}/api/object_detection", files={"image": handle}, timeout=60
                )
            assert answer.status_code == 200, answer.text
            assert "person" in {found["label"] for found in answer.json()["objects"]}
        # The same pid as the one started: a supervisor's (or a test's) handle still holds.
        assert f"{TUNABLES}={HUGE_PAGES}=1" in _environ(default.process.pid)
        assert f"{TUNABLES}={HUGE_PAGES}=0" in _environ(refused.process.pid)
        if "[never]" not in THP_MODE.read_text():
            assert _huge_kib(default.process.pid) > 64 * 1024  # most of the network's buffers
    finally:
        default.stop()
        refused.stop()
