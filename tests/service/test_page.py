"""The try-it page, end to end: a real headless Chromium on a real server on loopback.

The browser picks files through the page's own file input, the page posts them to the API, and the
tests compare what the page lists and draws with what the API answers for the same bytes.
Screenshots land in ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import base64
import math
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pytest
import requests
from PIL import Image
from support import API_KEYS, TESTS_DIR

from iweblens.config import Settings

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = TESTS_DIR.parent / "test-artifacts"
STATIC = resources.files("iweblens.service") / "static"
# The flags FACTS.md lists for this machine; a fresh profile each run keeps runs independent.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
DESKTOP = (1280, 900)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
# Generous: the first request may wait for the model, and the machine is shared.
SETTLE_TIMEOUT_S = 90
PHOTO = "000000473528.jpg"  # a dog, a frisbee, a car and three small people: six boxes
SAMPLE_LIMIT_BYTES = 100_000


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/install-system-deps.sh installs it)")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module, driven through the system chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = _tool("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=_tool("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, live_server: str) -> WebDriver:
    """The page freshly loaded at desktop size, with the console log emptied."""
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(f"{live_server}/")
    browser.get_log("browser")
    return browser


@pytest.fixture(scope="module")
def photo() -> Path:
    return TESTS_DIR / "images" / PHOTO


def api_detect(base_url: str, path: Path) -> requests.Response:
    with path.open("rb") as image:
        return requests.post(
            f"{base_url}/api/object_detection", files={"image": (path.name, image)}, timeout=120
        )


def pick_file(browser: WebDriver, path: Path) -> str:
    """Choose a file with the page's file input and wait until the page has shown the answer."""
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    return wait_settled(browser)


def wait_settled(browser: WebDriver) -> str:
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, SETTLE_TIMEOUT_S).until(
        lambda _: result.get_attribute("data-state") in {"done", "error"}
    )
    return result.get_attribute("data-state")


def listed_objects(browser: WebDriver) -> list[dict[str, Any]]:
    """The objects as the page lists them: the visible name and confidence, and the box."""
    return browser.execute_script(
        """
        return [...document.querySelectorAll("#objects .object")].map((item) => ({
          label: item.querySelector(".object-name").textContent,
          accuracy: item.querySelector(".object-confidence").textContent.replace(/%$/, ""),
          rectangle: {
            left: Number(item.dataset.left), top: Number(item.dataset.top),
            width: Number(item.dataset.width), height: Number(item.dataset.height),
          },
        }));
        """
    )


def unboxed_objects(browser: WebDriver) -> list[str]:
    """Objects whose box left edge shows no box colour on the canvas (so were not drawn)."""
    return browser.execute_script(
        """
        const canvas = document.getElementById("canvas");
        const scale = canvas.width / Number(canvas.dataset.imageWidth);
        const context = canvas.getContext("2d");
        const items = [...document.querySelectorAll("#objects .object")];
        const colours = items.map((item) => getComputedStyle(item.querySelector(".swatch"))
          .backgroundColor.match(/\\d+/g).slice(0, 3).map(Number));
        const isBoxColour = ([r, g, b]) => colours.some(
          ([cr, cg, cb]) => Math.abs(r - cr) + Math.abs(g - cg) + Math.abs(b - cb) <= 12);
        return items.filter((item) => {
          const x = Math.min(Math.round(Number(item.dataset.left) * scale), canvas.width - 1);
          const top = Number(item.dataset.top), height = Number(item.dataset.height);
          // Three points down the left edge: a label tag may cover one of them.
          return ![0.25, 0.5, 0.75].some((share) => {
            const y = Math.min(Math.round((top + height * share) * scale), canvas.height - 1);
            return isBoxColour(context.getImageData(x, y, 1, 1).data);
          });
        }).map((item) => `${item.dataset.label} at ${item.dataset.left},${item.dataset.top}`);
        """
    )


def save_screenshot(browser: WebDriver, name: str) -> Path:
    """A full-page PNG (not just the viewport) under ``test-artifacts/``."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def console_errors(browser: WebDriver) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def text_of(browser: WebDriver, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def test_page_draws_the_apis_boxes_on_an_uploaded_photo(
    page: WebDriver, live_server: str, photo: Path
) -> None:
    answer = api_detect(live_server, photo)
    assert answer.status_code == 200
    expected = answer.json()["objects"]
    assert len(expected) >= 3, "the test photo must give several boxes to compare"

    assert pick_file(page, photo) == "done"

    assert listed_objects(page) == expected
    canvas = page.find_element(By.ID, "canvas")
    assert canvas.is_displayed()
    assert canvas.get_attribute("data-boxes") == str(len(expected))
    assert unboxed_objects(page) == []
    for label in {obj["label"] for obj in expected}:
        assert label in canvas.get_attribute("aria-label")
    assert text_of(page, "served-by") == answer.headers["X-Served-By"]
    assert re.fullmatch(r"\d+ ms", text_of(page, "elapsed"))
    assert f"Found {len(expected)} objects in {PHOTO}" in text_of(page, "status")
    assert not page.find_element(By.ID, "error").is_displayed()
    save_screenshot(page, "page-desktop.png")
    assert console_errors(page) == []


def test_page_explains_a_file_that_is_not_an_image(
    page: WebDriver, live_server: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: milk, eggs\n")
    answer = api_detect(live_server, notes)
    assert answer.status_code == 400

    assert pick_file(page, notes) == "error"

    error = page.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.get_attribute("role") == "alert"
    assert text_of(page, "error-title") == "This file is not an image the service can read."
    assert "JPEG, PNG" in text_of(page, "error-advice")
    assert answer.json()["error"]["message"] in text_of(page, "error-detail")
    assert "HTTP 400" in text_of(page, "error-detail")
    assert not page.find_element(By.ID, "canvas").is_displayed()
    assert listed_objects(page) == []
    save_screenshot(page, "page-not-an-image.png")


def test_page_says_when_the_service_cannot_be_reached(page: WebDriver, photo: Path) -> None:
    page.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    page.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        assert pick_file(page, photo) == "error"
    finally:
        page.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
        page.execute_cdp_cmd("Network.disable", {})

    assert text_of(page, "error-title") == "The service could not be reached."
    assert not page.find_element(By.ID, "stats").is_displayed()


def _too_many_bytes(path: Path, settings: Settings) -> None:
    path.write_bytes(b"\xff\xd8\xff" + bytes(settings.max_body_bytes))


def _too_many_pixels(path: Path, settings: Settings) -> None:
    # A real PNG, tiny on disk, whose declared size is over the pixel limit.
    side = math.isqrt(settings.max_pixels) + 1
    Image.new("1", (side, side)).save(path)


@pytest.mark.parametrize("make_file", [_too_many_bytes, _too_many_pixels], ids=["bytes", "pixels"])
def test_page_explains_an_image_that_is_too_large(
    page: WebDriver, live_server: str, tmp_path: Path, make_file: Any
) -> None:
    big = tmp_path / f"big-{make_file.__name__.strip('_')}.png"
    make_file(big, Settings.from_env())
    answer = api_detect(live_server, big)
    assert answer.status_code == 413

    assert pick_file(page, big) == "error"

    assert text_of(page, "error-title") == "This image is too large for the service."
    assert "HTTP 413" in text_of(page, "error-detail")
    assert text_of(page, "served-by") == answer.headers["X-Served-By"]


def test_samples_work_from_the_keyboard(page: WebDriver, live_server: str) -> None:
    visited = []
    for _ in range(12):
        # Key events, not send_keys: on a file input send_keys means "choose this file".
        ActionChains(page).send_keys(Keys.TAB).perform()
        focused = page.switch_to.active_element
        visited.append(focused.get_attribute("id") or focused.get_attribute("class"))
        if focused.get_attribute("id") == "file-input":
            dropzone_outline = page.execute_script(
                "return getComputedStyle(document.getElementById('dropzone')).outlineStyle"
            )
            assert dropzone_outline != "none", "the drop zone must show keyboard focus"
        if focused.get_attribute("class") == "sample":
            break
    assert visited.index("file-input") < visited.index("sample"), visited
    sample = page.switch_to.active_element
    outline = page.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth]", sample
    )
    assert outline[0] != "none" and outline[1] != "0px", "the focused sample must show it"

    ActionChains(page).send_keys(Keys.ENTER).perform()
    assert wait_settled(page) == "done"

    sample_path = Path(str(STATIC / sample.get_attribute("data-src").removeprefix("static/")))
    assert listed_objects(page) == api_detect(live_server, sample_path).json()["objects"]
    assert unboxed_objects(page) == []


@pytest.mark.parametrize("gesture", ["drop", "paste"])
def test_a_dropped_or_pasted_photo_is_detected(
    page: WebDriver, live_server: str, gesture: str
) -> None:
    sample = STATIC / "sample-street.jpg"
    # The file the user drags or pastes, built in the page from the sample's bytes.
    page.execute_async_script(
        """
        const [gesture, done] = arguments;
        fetch("static/sample-street.jpg").then((r) => r.blob()).then((blob) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "street.jpg", { type: blob.type }));
          const event = gesture === "drop"
            ? new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
            : new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true });
          document.getElementById("dropzone").dispatchEvent(event);
          done();
        });
        """,
        gesture,
    )
    assert wait_settled(page) == "done"
    assert listed_objects(page) == api_detect(live_server, Path(str(sample))).json()["objects"]
    assert unboxed_objects(page) == []


def test_page_fits_a_phone_screen(page: WebDriver, live_server: str, photo: Path) -> None:
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    page.get(f"{live_server}/")
    # Without the viewport meta tag a phone lays the page out 980 px wide and shrinks it.
    assert page.execute_script("return window.innerWidth") == PHONE["width"]

    assert pick_file(page, photo) == "done"

    overflow = page.execute_script(
        """
        const width = document.documentElement.clientWidth;
        const tooWide = [...document.querySelectorAll("body *")]
          .filter((el) => el.getBoundingClientRect().right > width + 0.5);
        return [document.documentElement.scrollWidth - width, tooWide.map((el) => el.outerHTML
          .slice(0, 80))];
        """
    )
    assert overflow == [0, []]
    canvas = page.find_element(By.ID, "canvas")
    assert int(canvas.get_attribute("width")) == 2 * canvas.size["width"], "sharp on a 2x screen"
    assert unboxed_objects(page) == []
    save_screenshot(page, "page-phone.png")


class _PageLinks(HTMLParser):
    """Every URL the page refers to, and the alt text of every image."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.alts: list[str | None] = []
        self.viewport: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.urls += [attributes[key] or "" for key in ("src", "href") if key in attributes]
        if tag == "img":
            self.alts.append(attributes.get("alt"))
        if tag == "meta" and attributes.get("name") == "viewport":
            self.viewport = attributes.get("content")


def test_page_and_its_assets_come_from_this_server_only(live_server: str) -> None:
    response = requests.get(f"{live_server}/", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    links = _PageLinks()
    links.feed(response.text)
    assert links.viewport == "width=device-width, initial-scale=1"
    assert links.alts and all(links.alts), "every image needs alt text"

    for url in links.urls:
        absolute = urljoin(f"{live_server}/", url)
        assert urlparse(absolute).netloc == urlparse(live_server).netloc, url
        if url.startswith("static/"):
            asset = requests.get(absolute, timeout=30)
            assert asset.status_code == 200, url
            if url.startswith("static/sample-"):
                assert len(asset.content) < SAMPLE_LIMIT_BYTES, f"{url} is too heavy for a sample"
    for name in ("app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), name


def test_static_folder_is_flat() -> None:
    """The package data pattern ``static/*`` does not recurse: a subfolder would not ship."""
    assert [entry.name for entry in STATIC.iterdir() if entry.is_dir()] == []


def api_detect_with(base_url: str, path: Path, **fields: Any) -> list[dict[str, Any]]:
    """The API's objects for ``path`` with form fields (lists repeat the field)."""
    data = [
        (k, v)
        for k, value in fields.items()
        for v in (value if isinstance(value, list) else [value])
    ]
    with path.open("rb") as image:
        response = requests.post(
            f"{base_url}/api/object_detection",
            files={"image": (path.name, image)},
            data=data,
            timeout=120,
        )
    assert response.status_code == 200, response.text
    return response.json()["objects"]


def wait_listed(browser: WebDriver, expected: list[dict[str, Any]]) -> None:
    """Wait until the page lists exactly ``expected`` (a new request may still be on its way)."""
    WebDriverWait(browser, SETTLE_TIMEOUT_S).until(
        lambda _: wait_settled(browser) == "done" and listed_objects(browser) == expected
    )


def test_confidence_slider_and_class_filter_use_the_api_options(
    page: WebDriver, live_server: str, photo: Path
) -> None:
    assert pick_file(page, photo) == "done"
    slider = page.find_element(By.ID, "confidence")
    for _ in range(6):  # 0.5 -> 0.8 in steps of 0.05, a new detection each time
        slider.send_keys(Keys.ARROW_RIGHT)
    assert text_of(page, "confidence-value") == "80%"
    strict = api_detect_with(live_server, photo, min_confidence="0.8")
    assert strict and len(strict) < len(api_detect(live_server, photo).json()["objects"])
    wait_listed(page, strict)
    assert unboxed_objects(page) == []

    for _ in range(12):  # down to 0.2, the lowest the model reports
        slider.send_keys(Keys.ARROW_LEFT)
    assert text_of(page, "confidence-value") == "20%"
    loose = api_detect_with(live_server, photo, min_confidence="0.2")
    wait_listed(page, loose)

    page.find_element(By.CSS_SELECTOR, "#classes summary").click()
    for label in ("dog", "frisbee"):
        page.find_element(By.CSS_SELECTOR, f"#class-list input[value='{label}']").click()
    assert text_of(page, "classes-summary") == "dog, frisbee"
    chosen = api_detect_with(live_server, photo, min_confidence="0.2", classes=["dog", "frisbee"])
    assert {o["label"] for o in chosen} == {"dog", "frisbee"}
    wait_listed(page, chosen)
    save_screenshot(page, "page-options.png")

    page.find_element(By.ID, "clear-classes").click()
    wait_listed(page, loose)
    assert console_errors(page) == []


def class_boxes(browser: WebDriver) -> list[str]:
    return [
        box.get_attribute("value")
        for box in browser.find_elements(By.CSS_SELECTOR, "#class-list input")
    ]


def test_the_model_picker_sends_the_model_and_lists_its_labels(
    page: WebDriver, live_server: str, photo: Path
) -> None:
    listing = requests.get(f"{live_server}/api/models", timeout=30).json()
    picker = Select(page.find_element(By.ID, "model"))
    WebDriverWait(page, SETTLE_TIMEOUT_S).until(lambda _: picker.options)
    served = [model["name"] for model in listing["models"] if model["loaded"]]
    assert [option.get_attribute("value") for option in picker.options] == served
    assert picker.first_selected_option.get_attribute("value") == listing["default"]
    assert pick_file(page, photo) == "done"
    assert {"car", "dog"} <= {o["label"] for o in listed_objects(page)}

    picker.select_by_value("ipcam-general")
    viewed = api_detect_with(live_server, photo, model="ipcam-general")
    assert {o["label"] for o in viewed} == {"person", "vehicle"}
    wait_listed(page, viewed)
    assert unboxed_objects(page) == []
    assert text_of(page, "model-used") == "ipcam-general"
    assert "person, vehicle" in text_of(page, "model-hint")
    assert class_boxes(page) == ["person", "vehicle"]
    save_screenshot(page, "page-model.png")

    page.find_element(By.CSS_SELECTOR, "#classes summary").click()
    page.find_element(By.CSS_SELECTOR, "#class-list input[value='vehicle']").click()
    vehicles = api_detect_with(live_server, photo, model="ipcam-general", classes="vehicle")
    assert {o["label"] for o in vehicles} == {"vehicle"}
    wait_listed(page, vehicles)

    # The default model has no class vehicle: the filter goes with the view.
    picker.select_by_value(listing["default"])
    wait_listed(page, api_detect(live_server, photo).json()["objects"])
    assert text_of(page, "classes-summary") == "all"
    assert text_of(page, "model-used") == listing["default"]
    assert console_errors(page) == []


def test_the_annotated_image_downloads(
    page: WebDriver, live_server: str, photo: Path, tmp_path: Path
) -> None:
    page.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    assert not page.find_element(By.ID, "download").is_displayed()
    assert pick_file(page, photo) == "done"
    page.find_element(By.ID, "download").click()
    saved = tmp_path / f"{photo.stem}-annotated.jpg"
    WebDriverWait(page, SETTLE_TIMEOUT_S).until(lambda _: saved.exists())
    with photo.open("rb") as image:
        expected = requests.post(
            f"{live_server}/api/object_detection",
            files={"image": (photo.name, image)},
            data={"annotate": "true"},
            timeout=120,
        )
    assert expected.headers["Content-Type"] == "image/jpeg"
    assert saved.read_bytes() == expected.content
    assert Image.open(saved).size == Image.open(photo).size


def test_the_key_field_sends_the_key(browser: WebDriver, keyed_server: str, photo: Path) -> None:
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(f"{keyed_server}/")
    assert pick_file(browser, photo) == "error"
    assert text_of(browser, "error-title") == "This server needs an API key."
    assert "HTTP 401" in text_of(browser, "error-detail")

    key_field = browser.find_element(By.ID, "api-key")
    key_field.send_keys(API_KEYS[0], Keys.TAB)  # the change event sends the photo again
    expected = requests.post(
        f"{keyed_server}/api/object_detection",
        files={"image": (photo.name, photo.read_bytes())},
        headers={"Authorization": f"Bearer {API_KEYS[0]}"},
        timeout=120,
    ).json()["objects"]
    wait_listed(browser, expected)
    assert key_field.get_attribute("type") == "password"
