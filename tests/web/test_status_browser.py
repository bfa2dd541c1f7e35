"""The status page in a real Chromium (Selenium, see browser.py) against the real daemon, as
it redraws itself: a push source without upstream times joins the chart by its receive
count, and a refused reload shows on the page until a good one applies."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from urllib.parse import quote

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import TEST_SECRET
from tests.helpers import github_headers, serve_app, wait_until
from tests.web.browser import chromium, console_errors, screenshot
from tests.web.test_status_page import upstream_app

GITHUB_SECRET = "status-page-github-secret"
ROW = 'g.chart-row[data-source="{}"]'


def config_text(peer: str) -> str:
    """A polled source and a GitHub source: GitHub's hooks carry no upstream time."""
    return f"""
database: page.db
sources:
  items-poll:
    poll: {{url: "{peer}/items", every: 1h, items: items, id: id}}
  github:
    webhook: {{verify: github, secrets: "{GITHUB_SECRET}"}}
targets:
  sink: {{url: "{peer}/hook", secrets: "{TEST_SECRET}"}}
"""


def push_github(base: str, number: int) -> None:
    """One signed GitHub `issues` webhook, as GitHub sends it."""
    body = json.dumps({"action": "opened", "issue": {"number": number}}).encode()
    answer = httpx.post(
        base + "/hooks/github",
        content=body,
        headers=github_headers(GITHUB_SECRET, body),
        timeout=10,
    )
    assert answer.status_code == 202, answer.text


def chart_source(base: str, name: str) -> dict | None:
    """The chart's entry for source `name` in `/api/status`, if it has one."""
    chart = httpx.get(base + "/api/status", timeout=10).json()["chart"]["sources"]
    return next((s for s in chart if s["source"] == name), None)


def chart_row(browser, source: str) -> dict | None:
    """What the chart draws for `source`, read at once (each refresh draws its rows anew)."""
    return browser.execute_script(
        """const g = document.querySelector(arguments[0]);
        return g && {origin: g.dataset.origin, bars: g.querySelectorAll("rect.bar").length,
                     text: Array.from(g.querySelectorAll("text"), (t) => t.textContent)};""",
        ROW.format(source),
    )


def refreshes(browser) -> int:
    """How often the page has redrawn itself from `/api/status` since it loaded."""
    return int(browser.execute_script("return Number(document.body.dataset.refreshes || 0)"))


def test_a_push_source_without_upstream_times_shows_in_the_chart_by_its_count(
    daemon, tmp_path: Path
) -> None:
    with serve_app(upstream_app()) as peer, chromium(tmp_path / "profile") as browser:
        proc = daemon(config_text(peer))
        wait = WebDriverWait(browser, 30, poll_frequency=0.1)
        browser.get(proc.url + "/")
        chart = browser.find_element(By.ID, "chart")
        assert "no events with an upstream time" in chart.text
        assert chart_row(browser, "github") is None

        for number in (1, 2):
            push_github(proc.url, number)

        def counted() -> bool:
            found = chart_source(proc.url, "github")
            return found is not None and found["events"] == 2

        wait_until(counted, timeout_s=20)
        found = chart_source(proc.url, "github")
        assert found and found["origin"] == "push" and found["count"] == 0  # no upstream time

        # The open page picks the source up on one of its own refreshes.
        def drawn(b) -> dict | None:
            row = chart_row(b, "github")
            return row if row and any("2 received" in t for t in row["text"]) else None

        row = wait.until(drawn)
        assert row == {
            "origin": "push",
            "text": ["github (push)", "2 received, none with an upstream time"],
            "bars": 0,  # no times: no bars
        }
        assert "no events with an upstream time" not in chart.text
        screenshot(browser, "status-page-count-only")
        assert console_errors(browser) == []
    assert proc.terminate() == 0


def test_a_refused_reload_shows_on_the_page_until_a_good_reload_applies(
    daemon, tmp_path: Path
) -> None:
    with serve_app(upstream_app()) as peer, chromium(tmp_path / "profile") as browser:
        proc = daemon(config_text(peer))
        good = proc.config_path.read_text()
        wait = WebDriverWait(browser, 30, poll_frequency=0.1)
        browser.get(proc.url + "/")
        notice = browser.find_element(By.ID, "reload")
        assert not notice.is_displayed()

        # A typo in config.yaml, then a reload: the daemon refuses it and keeps its config.
        proc.config_path.write_text(good.replace("every: 1h", "evry: 1h"))
        proc.proc.send_signal(signal.SIGHUP)
        wait.until(lambda b: notice.is_displayed())
        shown = notice.text
        assert shown.startswith("last reload refused (the config in force is the one before)")
        assert "sources.items-poll.poll" in shown and 'did you mean "every"?' in shown
        screenshot(browser, "status-page-reload-refused")

        # It stays through the page's refreshes, and a page loaded now has it at once.
        seen = refreshes(browser)
        wait.until(lambda b: refreshes(b) >= seen + 2)
        assert notice.is_displayed() and notice.text == shown
        browser.get(proc.url + "/")
        notice = browser.find_element(By.ID, "reload")
        assert notice.is_displayed() and notice.text == shown

        # A good reload applies: the refusal leaves the page on its next refresh.
        proc.config_path.write_text(good)
        proc.proc.send_signal(signal.SIGHUP)
        wait.until(lambda b: not notice.is_displayed())
        assert notice.text == ""
        assert httpx.get(proc.url + "/api/status", timeout=10).json()["reload_error"] is None
        assert console_errors(browser) == []
    assert proc.terminate() == 0


LONG = "missing" * 14  # one word of 98 letters: nowhere to break it but anywhere


def test_recent_events_link_to_their_pages_and_a_long_error_stays_in_its_card(
    daemon, tmp_path: Path
) -> None:
    broken = f"""sources:
  broken-poll:
    poll: {{url: "{{peer}}/{LONG}", every: 1h, id: id}}
"""
    config = config_text("{peer}").replace("sources:\n", broken, 1)
    with serve_app(upstream_app()) as peer, chromium(tmp_path / "profile") as browser:
        proc = daemon(config.replace("{peer}", peer))
        push_github(proc.url, 7)

        def failing() -> str | None:
            sources = httpx.get(proc.url + "/api/status", timeout=10).json()["sources"]
            return next(s for s in sources if s["name"] == "broken-poll")["last_error"]

        error = wait_until(failing, timeout_s=20)
        assert LONG in error
        (event,) = httpx.get(proc.url + "/api/status", timeout=10).json()["events"]
        wait = WebDriverWait(browser, 30, poll_frequency=0.1)
        browser.get(proc.url + "/")

        # The sources card's error wraps inside the card instead of running past it.
        row = wait.until(
            lambda b: b.find_element(By.CSS_SELECTOR, '#sources tr[data-name="broken-poll"]')
        )
        assert LONG in row.find_element(By.CSS_SELECTOR, "td.error").text.replace("\n", "")
        overflow = browser.execute_script(
            """const card = document.getElementById("sources").closest("section");
            const edge = card.getBoundingClientRect().right;
            const cell = document.querySelector('#sources tr[data-name="broken-poll"] td.error');
            return {table: document.getElementById("sources").getBoundingClientRect().right - edge,
                    cell: cell.getBoundingClientRect().right - edge,
                    hidden: cell.scrollWidth - cell.clientWidth};"""
        )
        assert overflow["table"] <= 0 and overflow["cell"] <= 0 and overflow["hidden"] <= 0
        screenshot(browser, "status-page-long-error")

        # A recent event links to its own page.
        link = browser.find_element(By.CSS_SELECTOR, "#events tbody a")
        assert (
            link.get_attribute("href") == f"{proc.url}/admin/events/{quote(event['id'], safe='')}"
        )
        link.click()
        wait.until(lambda b: "/admin/events/" in b.current_url)
        assert event["id"] in browser.find_element(By.TAG_NAME, "main").text
        assert console_errors(browser) == []
    assert proc.terminate() == 0
