"""A real Chromium for the admin pages' tests: Debian's chromium driven through its
chromedriver by Selenium; nothing is downloaded, and every test skips, naming the missing
tool, when either is absent."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.web.admin_parts import ARTIFACTS


def tools() -> tuple[str, str]:
    """The chromium and chromedriver executables, or skip saying which is missing."""
    found = {
        "chromium": shutil.which("chromium") or shutil.which("chromium-browser"),
        "chromedriver (Debian's chromium-driver)": shutil.which("chromedriver"),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed (make test installs Debian's chromium and "
            "chromium-driver when run as root): the admin pages cannot be driven in a browser"
        )
    chromium, driver = found.values()
    assert chromium and driver
    return chromium, driver


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium session that talks to nothing but the pages it is sent to."""
    binary, driver_path = tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The console's errors and warnings since the last call (a missing favicon aside)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING") and "favicon.ico" not in entry["message"]
    ]


def screenshot(driver: Any, name: str) -> Path:
    """The whole page as `test-artifacts/<name>.png`, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(600, min(int(height) + 40, 2400)))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path
