"""Browser-test set-up: headless Debian Chromium through dash[testing]'s ``dash_duo``.

Runs with ``pytest -m ui tests/ui`` (headless is forced here; no flags needed).
Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (apt: chromium chromium-driver).
"""
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")


def pytest_configure(config):
    """Always headless: there is no display on CI or on the dev machine."""
    if hasattr(config.option, "headless"):
        config.option.headless = True


def pytest_setup_options():
    """Chrome options for dash_duo (dash adds --no-sandbox, --disable-gpu and downloads)."""
    from selenium.webdriver.chrome.options import Options
    options = Options()
    for arg in ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--enable-unsafe-swiftshader", "--window-size=1500,1000",
                "--disable-extensions", "--disable-component-update"):
        options.add_argument(arg)
    return options


def pytest_collection_modifyitems(config, items):
    """Skip the browser tests when Chromium or its driver is missing."""
    if shutil.which("chromedriver") and os.path.exists(os.environ["DASH_TEST_CHROMEPATH"]):
        return
    skip = pytest.mark.skip(reason="needs chromium and chromedriver")
    for item in items:
        if "ui" in item.keywords:
            item.add_marker(skip)


README_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: the README's folder only when asked (SCMM_UPDATE_SCREENSHOTS=1)."""
    folder = README_SHOTS if os.environ.get("SCMM_UPDATE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
