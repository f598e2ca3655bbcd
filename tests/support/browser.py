"""Debian's Chromium, headless on 127.0.0.1, for tests that look at a page the way a person would.

    view = browser.open(url, expect=["ingest", "dispatch"], screenshot="prefect-deployments")
    view.text         # the page's visible text, once every expected text is on it
    view.screenshot   # tests/output/prefect-deployments.png, kept whether the test passes or not
    browser.open(url, expect=[...], screenshot="...", measure=["#threads table"]).sizes  # {selector: {width, height}}

The session fixture `browser` starts one Chromium (fresh profile in a temporary directory, DevTools on
a free loopback port) and stops it by its PID at the end, with a watchdog that kills it if the test
process dies first. Each `open` runs tests/peers/browser/page.mjs, which drives that Chromium with
playwright-core over CDP. Nothing leaves the machine: every hostname but 127.0.0.1 resolves to
nothing, every other address goes to a proxy port where nothing listens, and page.mjs aborts (and
reports) any request for another host. tests/peers/browser/install.sh installs Chromium and playwright-core.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.network import NODE_BIN
from tests.support.scripted_model import REPO_ROOT, reap, start_watchdog, stop_group

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_DIR = REPO_ROOT / "tests" / "peers" / "browser"
PAGE_SCRIPT = BROWSER_DIR / "page.mjs"
OUTPUT_DIR = REPO_ROOT / "tests" / "output"

# Without the background-networking flags Chromium keeps trying Google's hosts; even with them it
# still asks for update.googleapis.com and accounts.google.com (seen here), which the dead proxy gets.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",  # loopback bypasses the proxy; anything else dead-ends here
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    """Chromium or the page script could not run."""


@dataclass(frozen=True)
class PageView:
    url: str
    text: str
    screenshot: Path
    blocked: list[str]
    sizes: dict[str, dict[str, float] | None]  # rendered size of what `measure` named, in CSS pixels


@dataclass
class Browser:
    process: subprocess.Popen
    cdp_url: str
    log_path: Path
    watchdog: subprocess.Popen

    def open(self, url: str, expect: Sequence[str], screenshot: str, timeout: float = 30.0,
             measure: Sequence[str] = ()) -> PageView:
        """Open `url`, wait until every text in `expect` is visible, keep a screenshot named `screenshot`, and
        measure the first element each CSS selector in `measure` finds."""
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        screenshot_path = OUTPUT_DIR / f"{screenshot}.png"
        request = {"cdp": self.cdp_url, "url": url, "expect": list(expect),
                   "screenshot": str(screenshot_path), "timeoutMs": int(timeout * 1000), "measure": list(measure)}
        page = subprocess.Popen(
            [str(NODE_BIN), str(PAGE_SCRIPT), json.dumps(request)], cwd=BROWSER_DIR,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            out, err = page.communicate(timeout=2 * timeout + 30)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"page.mjs did not finish with {url} within {2 * timeout + 30:.0f} s") from None
        finally:
            stop_group(page, grace=5)
        if page.returncode != 0:
            raise BrowserError(f"page.mjs failed on {url} (exit {page.returncode}):\n{err.decode()[-3000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        if result["missing"]:
            raise AssertionError(
                f"{url} (HTTP {result['status']}, title {result['title']!r}) did not show "
                f"{result['missing']} within {timeout:.0f} s; screenshot {screenshot_path}; "
                f"requests blocked: {result['blocked'] or 'none'}; the page showed:\n{result['text'][:3000]}"
            )
        return PageView(url, result["text"], screenshot_path, result["blocked"], result["sizes"])

    def stop(self) -> None:
        stop_group(self.process, grace=10)
        reap(self.watchdog)


def start_browser(profile_dir: Path, timeout: float = 30.0) -> Browser:
    """Start Chromium with a fresh profile in `profile_dir`; ready once its DevTools endpoint is up."""
    if not CHROMIUM.exists() or not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        raise BrowserError(f"the browser test tools are not installed: run bash {BROWSER_DIR / 'install.sh'}")
    profile_dir.mkdir(parents=True, exist_ok=True)
    log_path = profile_dir.parent / "chromium.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    watchdog = start_watchdog(process.pid)
    try:
        cdp_url = wait_for_devtools(process, profile_dir / "DevToolsActivePort", log_path, timeout)
    except BaseException:
        stop_group(process, grace=10)
        reap(watchdog)
        raise
    return Browser(process, cdp_url, log_path, watchdog)


def wait_for_devtools(process: subprocess.Popen, port_file: Path, log_path: Path, timeout: float) -> str:
    """Chromium writes the port it chose, then its DevTools path, into `port_file` once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if len(lines) >= 2:
            return f"http://127.0.0.1:{lines[0]}"
        time.sleep(0.2)
    raise BrowserError(f"chromium wrote no DevTools port within {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = start_browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield started
    finally:
        started.stop()
