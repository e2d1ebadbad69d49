"""Browser mode: the shop driven by Selenium in Debian's headless Chromium.

Navigation is real: a click is Selenium's click on the DOM element, a search types into the
search box and presses the Search button; the page is read back from the rendered DOM
(`pages.DOM_WALK_JS`). Chromium and chromedriver come from Debian (``make install-browser``);
nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from creditgym.envs.webshop.pages import DOM_WALK_JS, Item, Page

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
    "--no-proxy-server",  # we only ever talk to 127.0.0.1; a proxy in the environment must not
)


_NONCE_JS = (
    "if (document.readyState !== 'complete' || !document.body) return null;"
    "return document.body.dataset.nonce || 'none';"
)
#: Tries for an interaction whose elements went stale before the click (not after it).
_ATTEMPTS = 3


# A watchdog process per browser: when its stdin closes (the owner exited, however it died) or
# it is re-parented, it kills chromedriver and every Chromium process of this browser's profile
# (Chromium does not die with chromedriver, nor chromedriver with its parent).
_REAPER = r"""
import os, shutil, signal, sys, threading, time
driver, profile, parent = int(sys.argv[1]), sys.argv[2], os.getppid()
def watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.close(0)
threading.Thread(target=watch_parent, daemon=True).start()
try:
    while os.read(0, 1024):
        pass
except OSError:
    pass
def ours(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return profile.encode() in f.read()
    except OSError:
        return False
for _ in range(3):
    me = os.getpid()
    pids = [driver] + [int(p) for p in os.listdir("/proc") if p.isdigit() and ours(p)]
    pids = [pid for pid in pids if pid != me]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
shutil.rmtree(profile, ignore_errors=True)
"""


def _start_reaper(driver_pid: int, profile: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(driver_pid), profile],
        stdin=subprocess.PIPE,
        close_fds=True,
    )


def _stop_reaper(reaper: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        if reaper.stdin is not None:
            reaper.stdin.close()
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


class BrowserUnavailable(RuntimeError):
    """Chromium, chromedriver or selenium is missing (with how to install them)."""


class Browser:
    """One headless Chromium with its own profile folder; `close()` ends both."""

    def __init__(self, page_timeout: float = 30.0):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            from selenium.webdriver.common.options import BaseOptions
        except ImportError as exc:
            raise BrowserUnavailable(
                "browser mode needs selenium: pip install 'creditgym[browser]'"
            ) from exc
        for path in (CHROMIUM, CHROMEDRIVER):
            if shutil.which(path) is None:
                raise BrowserUnavailable(
                    f"browser mode needs {path}: run `make install-browser` "
                    "(apt-get install chromium chromium-driver)"
                )
        self._profile = tempfile.mkdtemp(prefix="webshop-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        # Driver commands go to 127.0.0.1: never through a proxy from the environment. (The
        # ChromeOptions override of this method only adds a deprecation warning; webdriver.Chrome
        # takes no ClientConfig, so the base method is the supported switch.)
        BaseOptions.ignore_local_proxy_environment_variables(options)
        self.driver = webdriver.Chrome(
            options=options, service=Service(executable_path=CHROMEDRIVER)
        )
        self._reaper = _start_reaper(self.driver.service.process.pid, self._profile)
        self.driver.set_page_load_timeout(page_timeout)
        self.timeout = page_timeout
        self._elements: list[Any] = []

    def alive(self) -> bool:
        try:
            _ = self.driver.current_url
            return True
        except Exception:
            return False

    def read(self) -> Page:
        """The current page, from the rendered DOM (remembers the elements for `click`)."""
        kind, has_search, reward, rows = self.driver.execute_script(DOM_WALK_JS)
        self._elements = [row[4] for row in rows]
        items = [Item(role, text, href, bool(sel)) for role, text, href, sel, _ in rows]
        return Page(
            self.driver.current_url,
            kind,
            items,
            bool(has_search),
            None if reward is None else float(reward),
        )

    def get(self, url: str) -> Page:
        self.driver.get(url)
        return self.read()

    def _page_nonce(self) -> str | None:
        """The loaded page's nonce (every shop page has a fresh one; others read "none"), or
        None while a document is still loading."""
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.execute_script(_NONCE_JS)
        except WebDriverException:  # the document is being replaced under us
            return None

    def _wait_for_new_page(self, old_nonce: str | None) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, self.timeout, poll_frequency=0.02).until(
            lambda _: (nonce := self._page_nonce()) is not None and nonce != old_nonce
        )

    def click(self, page: Page, item: Item) -> Page:
        """Click `item` of `page` (as returned by the last `read`) and read the new page."""
        from selenium.common.exceptions import WebDriverException

        index = page.items.index(item)
        for attempt in range(_ATTEMPTS):
            try:
                element = self._elements[index]
                old_nonce = self._page_nonce()
                element.click()
                break
            except WebDriverException:
                # Chromium sometimes swaps the document's nodes after load; find them again.
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.1)
                self.read()
        self._wait_for_new_page(old_nonce)
        return self.read()

    def search(self, query: str) -> Page:
        """Type `query` into the search box and press Search."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By

        for attempt in range(_ATTEMPTS):
            try:
                box = self.driver.find_element(By.ID, "search_input")
                box.clear()
                box.send_keys(query)
                button = self.driver.find_element(By.ID, "search_button")
                old_nonce = self._page_nonce()
                button.click()
                break
            except WebDriverException:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.1)
        self._wait_for_new_page(old_nonce)
        return self.read()

    def screenshot_png(self) -> bytes:
        return self.driver.get_screenshot_as_png()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()
        _stop_reaper(self._reaper)
        shutil.rmtree(self._profile, ignore_errors=True)
