"""darknet's letterbox: the C path, the NumPy path and the code they replaced give the same bits."""

from __future__ import annotations

import resource
import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import COCO128_DIR

import iweblens.inference.letterbox as letterbox_module
from iweblens.inference.letterbox import (
    NATIVE,
    NUMPY,
    Letterbox,
    Letterboxer,
    darknet_resize,
    letterbox,
    native_available,
)

SIZE = 416
needs_native = pytest.mark.skipif(
    not native_available(), reason="iweblens.inference._letterbox is not built (no C compiler)"
)
PATHS = [pytest.param(True, id="native", marks=needs_native), pytest.param(False, id="numpy")]


def reference_letterbox(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """``letterbox()`` as it was before the C path existed (commit a63ee6b): the oracle."""
    height, width = image_bgr.shape[:2]
    if size / width < size / height:
        new_w, new_h = size, max(1, height * size // width)
    else:
        new_w, new_h = max(1, width * size // height), size
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas = np.full((size, size, 3), 0.5, dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = darknet_resize(
        image_bgr[:, :, ::-1], new_w, new_h, scale=1 / 255
    )
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])


def assert_every_path_matches(image: np.ndarray) -> None:
    expected = reference_letterbox(image, SIZE)
    for native in (True, False) if native_available() else (False,):
        blob, _ = Letterboxer(SIZE, native=native)(image)
        assert np.array_equal(blob, expected), f"native={native} differs on {image.shape}"
        assert blob.flags.c_contiguous and blob.dtype == np.float32


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> np.ndarray:
    return cv2.imread(str(photos[0]))


def test_darknet_resize_is_corner_aligned() -> None:
    image = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)[:, :, None]
    resized = darknet_resize(image, 3, 3)[:, :, 0]
    # Corners map onto corners; the centre is the mean of the four source pixels.
    np.testing.assert_allclose(resized, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], atol=1e-6)


@pytest.mark.parametrize("native", PATHS)
def test_letterbox_keeps_aspect_and_pads_with_grey(native: bool) -> None:
    image = np.zeros((240, 640, 3), np.uint8)
    blob, box = Letterboxer(SIZE, native=native)(image)
    assert blob.shape == (1, 3, SIZE, SIZE) and blob.dtype == np.float32
    assert (box.new_width, box.new_height) == (416, 156)
    assert box.offset_y == 130
    assert blob[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5]
    assert blob[0, :, 208, 208].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("native", PATHS)
def test_letterbox_sends_rgb_to_the_network(native: bool) -> None:
    image = np.zeros((416, 416, 3), np.uint8)
    image[:, :, 2] = 255  # red in OpenCV's BGR order
    blob, _ = Letterboxer(SIZE, native=native)(image)
    assert blob[0, 0].min() == 1.0 and blob[0, 2].max() == 0.0


def test_every_path_is_bit_identical_on_the_committed_photographs(photos: list[Path]) -> None:
    for path in photos:
        assert_every_path_matches(cv2.imread(str(path)))


def test_every_path_is_bit_identical_on_the_128_photographs() -> None:
    images = sorted(COCO128_DIR.glob("*.jpg"))
    if not images:
        pytest.skip(f"{COCO128_DIR} is not here (shared/ sits beside the repository)")
    for path in images:
        assert_every_path_matches(cv2.imread(str(path)))


def gray_expanded(photo: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    return np.broadcast_to(gray[:, :, None], photo.shape)  # three channels, one stride of 0


ODD_IMAGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "1x1": lambda photo: photo[:1, :1],
    "1xN": lambda photo: photo[:1],
    "Nx1": lambda photo: photo[:, :1],
    "1x5000": lambda photo: cv2.resize(photo[:1], (5000, 1)),
    "tall 480x30": lambda photo: photo[:, 300:330],
    "wide 15x640": lambda photo: photo[200:215],
    "2x3 (upscaled)": lambda photo: photo[100:102, 100:103],
    "4096x4096": lambda photo: cv2.resize(photo, (4096, 4096), interpolation=cv2.INTER_CUBIC),
    "417x415": lambda photo: cv2.resize(photo, (415, 417)),
    "square 416": lambda photo: cv2.resize(photo, (416, 416)),
    "gray, expanded by a zero stride": gray_expanded,
    "gray, expanded by cvtColor": lambda photo: cv2.cvtColor(
        cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR
    ),
    "flipped view": lambda photo: photo[::-1, ::-1],
    "strided view": lambda photo: photo[1::3, ::2],
    "channels reversed view": lambda photo: photo[:, :, ::-1],
    "transposed view": lambda photo: photo.transpose(1, 0, 2),
    "Fortran order": np.asfortranarray,
    "float32 (NumPy on both paths)": lambda photo: photo.astype(np.float32),
}


@pytest.mark.parametrize("make", ODD_IMAGES.values(), ids=ODD_IMAGES.keys())
def test_every_path_is_bit_identical_on_odd_shapes_and_views(
    photo: np.ndarray, make: Callable[[np.ndarray], np.ndarray]
) -> None:
    assert_every_path_matches(make(photo))


@pytest.mark.parametrize("native", PATHS)
def test_a_reused_blob_keeps_nothing_of_the_previous_image(native: bool, photo: np.ndarray) -> None:
    letterboxer = Letterboxer(SIZE, native=native)
    wide, tall, small = photo[200:215], photo[:, 300:330], photo[:40, :50]
    for image in (wide, tall, small, wide, photo):
        blob, box = letterboxer(image)
        assert blob is letterboxer.blob
        assert np.array_equal(blob, reference_letterbox(image, SIZE))
        assert box == Letterbox.fit(image.shape[1], image.shape[0], SIZE)


def test_letterbox_returns_a_new_blob_each_time(photo: np.ndarray) -> None:
    first, _ = letterbox(photo, SIZE)
    second, _ = letterbox(photo[:, :100], SIZE)
    assert first is not second
    assert np.array_equal(first, reference_letterbox(photo, SIZE))


def test_both_paths_can_be_chosen_and_say_which_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Letterboxer(SIZE, native=False).implementation == NUMPY
    assert Letterboxer(SIZE).implementation == (NATIVE if native_available() else NUMPY)
    # A machine without a C compiler: the default is NumPy, and asking for C is an error.
    monkeypatch.setattr(letterbox_module, "_native", None)
    assert Letterboxer(SIZE).implementation == NUMPY
    with pytest.raises(RuntimeError, match="not built"):
        Letterboxer(SIZE, native=True)


def test_the_extension_is_built_wherever_a_compiler_can_build_it() -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if compiler is None or not headers.exists():
        pytest.skip("no C compiler or no Python headers: the NumPy path is the right one here")
    assert native_available(), (
        f"{compiler} and {headers} are here, yet iweblens.inference._letterbox was not built: "
        "reinstall the package (make install, or pip install -e .)"
    )


@needs_native
def test_the_extension_refuses_buffers_it_cannot_fill(photo: np.ndarray) -> None:
    from iweblens.inference import _letterbox

    blob = np.empty((1, 3, SIZE, SIZE), np.float32)
    with pytest.raises(TypeError, match="uint8"):
        _letterbox.letterbox_into(photo[:, :, :2], blob, SIZE, 0, 0, SIZE, SIZE, 1.0)
    with pytest.raises(TypeError, match="float32"):
        _letterbox.letterbox_into(photo, blob.astype(np.float64), SIZE, 0, 0, SIZE, SIZE, 1.0)
    with pytest.raises(ValueError, match="fit"):
        _letterbox.letterbox_into(photo, blob, SIZE, 1, 0, SIZE, SIZE, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        _letterbox.letterbox_into(photo, blob[:, :, ::2], SIZE, 0, 0, SIZE, SIZE, 1.0)
    # A side past 2**24 pixels: float32 rounding puts the last row's index past the edge, where
    # NumPy raises IndexError; the C path raises it too, before reading a pixel.
    tall = np.zeros((2**24 + 4, 1, 3), np.uint8)
    with pytest.raises(IndexError):
        Letterboxer(SIZE, native=True)(tall)


@needs_native
def test_the_native_path_makes_no_page_faults_per_image(photos: list[Path]) -> None:
    images = [cv2.imread(str(path)) for path in photos]
    letterboxer = Letterboxer(SIZE, native=True)
    for image in images:  # the first touch of the blob and of the allocator's arena
        letterboxer(image)
    rounds = 10
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(rounds):
        for image in images:
            letterboxer(image)
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    # The pass mark is 100 a image; nothing here should need a new page at all.
    assert faults / (rounds * len(images)) < 100


MAX = 2**63 - 1
BLOB_ITEMS = 3 * SIZE * SIZE
HOSTILE_CALLS = {
    # (blob items, size, left, top, width, height): each sum or product past 64 bits.
    "left + width wraps": (BLOB_ITEMS, SIZE, MAX, 0, 1, 1),
    "top + height wraps": (BLOB_ITEMS, SIZE, 0, MAX, 1, 1),
    "a negative size squares to the blob's size": (BLOB_ITEMS, -SIZE, MAX, MAX, 1, 1),
    "3 * size * size * 4 wraps to 0": (0, 2**31, 0, 0, 1, 1),
    "the blob and the plan's allocation sums wrap": (0, 2**62, 0, 0, 2**62, 2**62),
    "a blob of 3 items too few": (BLOB_ITEMS - 3, SIZE, 0, 0, SIZE, SIZE),
}
REFUSALS = ("ValueError", "TypeError", "MemoryError", "OverflowError")


@needs_native
@pytest.mark.parametrize("arguments", HOSTILE_CALLS.values(), ids=HOSTILE_CALLS.keys())
def test_hostile_arguments_raise_instead_of_writing_past_the_blob(
    arguments: tuple[int, ...],
) -> None:
    """Called directly in a child process, so a heap overflow fails this test instead of
    killing pytest: the extension must refuse with a Python exception, before touching memory."""
    import subprocess
    import sys

    items, *numbers = arguments
    script = (
        "import numpy as np\n"
        "from iweblens.inference import _letterbox\n"
        "image = np.zeros((8, 8, 3), np.uint8)\n"
        f"blob = np.zeros({items}, np.float32)\n"
        "try:\n"
        f"    _letterbox.letterbox_into(image, blob, {', '.join(map(str, numbers))}, 1 / 255)\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
        "else:\n"
        "    print('returned')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"the child died (status {done.returncode}): {done.stderr}"
    assert done.stdout.split(" ", 1)[0] in REFUSALS, done.stdout
