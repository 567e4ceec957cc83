"""The load client against a real server on loopback, and its wire format."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
import requests
from support import API_KEYS

from iweblens import cli
from iweblens.load.client import image_id, list_images, run_load

ENDPOINT_PATH = "/api/object_detection"
# The reference client's last line, with Python's default float formatting.
REFERENCE_LINE = re.compile(
    r"^Total client script time: (\d+\.\d+(e-\d+)?), average thread time: (\d+\.\d+(e-\d+)?)$"
)


def test_list_images_takes_jpeg_and_png_in_any_case(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.jpeg", "c.png", "notes.txt", "d.gif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    assert [path.name for path in list_images(tmp_path)] == ["a.jpeg", "b.JPG", "c.png"]


def test_multipart_body_is_the_reference_clients(photos: list[Path]) -> None:
    """One part named ``image``, filename = basename, no part Content-Type, nothing else."""
    image = photos[0]
    reference = requests.Request(
        "POST", "http://127.0.0.1/", files={"image": image.open("rb")}
    ).prepare()
    ours = requests.Request(
        "POST", "http://127.0.0.1/", files={"image": (image.name, image.read_bytes())}
    ).prepare()
    boundary = reference.headers["Content-Type"].split("boundary=")[1].encode()
    our_boundary = ours.headers["Content-Type"].split("boundary=")[1].encode()
    assert ours.body.replace(our_boundary, boundary) == reference.body
    assert f'name="image"; filename="{image.name}"\r\n\r\n'.encode() in ours.body


def test_json_ids_are_deterministic_uuid5(photos: list[Path]) -> None:
    assert image_id(photos[0]) == image_id(Path(str(photos[0])))
    assert uuid.UUID(image_id(photos[0])).version == 5
    assert image_id(photos[0]) != image_id(photos[1])


@pytest.mark.parametrize(
    ("protocol", "keep_alive"), [("multipart", False), ("json", False), ("multipart", True)]
)
def test_run_load_against_live_server(
    live_server: str, photos: list[Path], protocol: str, keep_alive: bool
) -> None:
    endpoint = live_server + ENDPOINT_PATH
    result = run_load(
        photos, endpoint, 2, protocol=protocol, keep_alive=keep_alive, timeout=60, progress=False
    )
    assert (result.errors, result.timeouts) == (0, 0)
    assert result.images == len(result.latencies) == len(photos)
    assert result.per_replica == {"test-server": len(photos)}
    assert result.mean_s == pytest.approx(sum(result.latencies) / len(photos))
    assert min(result.latencies) <= result.p50_s <= result.p90_s <= result.p95_s
    assert result.p95_s <= result.p99_s <= max(result.latencies)
    assert result.throughput == pytest.approx(len(photos) / result.wall_s)


def test_failures_are_counted_not_raised(live_server: str, photos: list[Path]) -> None:
    missing = run_load(photos[:2], live_server + "/api/nowhere", 2, progress=False)
    assert (missing.errors, missing.timeouts, missing.per_replica) == (2, 0, {})
    assert missing.throughput == 0
    impatient = run_load(photos[:2], live_server + ENDPOINT_PATH, 2, timeout=1e-4, progress=False)
    assert (impatient.errors, impatient.timeouts) == (0, 2)


def test_command_line_ends_with_the_reference_line(
    live_server: str, photos: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for photo in photos[:3]:
        shutil.copy(photo, folder)
    summary, requests_csv = tmp_path / "run.json", tmp_path / "requests.csv"
    command = ["client", str(folder), live_server + ENDPOINT_PATH, "2", "--no-progress"]
    assert cli.main([*command, "--json", str(summary), "--csv", str(requests_csv)]) == 0
    last_line = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    match = REFERENCE_LINE.match(last_line)
    assert match, last_line
    assert f'"mean_s": {match.group(3)}' in summary.read_text()
    rows = requests_csv.read_text().splitlines()
    assert rows[0] == "image,seconds,status,served_by,timed_out,error"
    assert sorted(row.split(",")[0] for row in rows[1:]) == sorted(p.name for p in photos[:3])
    assert all(",200,test-server,0," in row for row in rows[1:])


def test_the_client_sends_a_key_from_the_option_or_the_environment(
    keyed_server: str,
    photos: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photos[0], folder)
    command = ["client", str(folder), keyed_server + ENDPOINT_PATH, "1", "--no-progress"]
    assert cli.main(command) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert cli.main([*command, "--api-key", API_KEYS[1]]) == 0
    monkeypatch.setenv("IWEBLENS_API_KEY", API_KEYS[0])
    assert cli.main(command) == 0
    keyed = run_load(photos, keyed_server + ENDPOINT_PATH, 2, progress=False, api_key=API_KEYS[0])
    assert (keyed.errors, keyed.timeouts) == (0, 0)
