"""The admin pages in a real Chromium against the real daemon: an operator logs in, finds an
event by its subject, sees its failed attempts, fixes the receiver, redelivers and sees the
new attempt succeed; and events made of HTML and script payloads are shown, never run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from bridge.events import Event, now_ms
from bridge.store import NewEvent
from bridge.store.deliveries import AttemptRecord
from bridge.store.sqlite import SQLiteStore
from tests.helpers import serve_app, wait_until
from tests.web.admin_parts import TOKEN, Receiver, config_text
from tests.web.browser import chromium, console_errors, screenshot

BEARER = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}


def post_orders(url: str) -> None:
    """A few orders pushed to the bridge; the one the customer asks about is order-4711."""
    for i, subject in enumerate(["order-4709", "order-4710", "order-4711", "order-4712"]):
        body = {"id": f"ord_{i}", "type": "order.paid", "subject": subject, "total": 40 + i}
        answer = httpx.post(url + "/hooks/orders", json=body, timeout=10)
        assert answer.status_code in (200, 202), answer.text


def dead_count(url: str) -> int:
    page = httpx.get(url + "/admin/events?delivery=dead", headers=BEARER, timeout=10)
    return page.text.count('class="badge dead"')


def test_find_an_event_see_its_failures_fix_the_receiver_and_redeliver(
    daemon, tmp_path: Path
) -> None:
    receiver = Receiver()
    with serve_app(receiver.app()) as peer, chromium(tmp_path / "profile") as browser:
        proc = daemon(config_text(peer))
        post_orders(proc.url)
        # One attempt and two retries 0.1 s apart: every delivery dies.
        wait_until(lambda: dead_count(proc.url) == 4, timeout_s=30, interval_s=0.2)
        wait = WebDriverWait(browser, 30)

        browser.get(proc.url + "/admin/events")
        wait.until(ec.presence_of_element_located((By.ID, "token")))
        screenshot(browser, "admin-login")
        browser.find_element(By.ID, "token").send_keys("not the token")
        browser.find_element(By.ID, "login").click()
        assert (
            "not the admin token"
            in wait.until(ec.presence_of_element_located((By.ID, "login-error"))).text
        )
        # The refusal is a 401, which the console reports; nothing else may be there.
        assert all("401" in line for line in console_errors(browser))
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "filters")))
        assert browser.current_url == proc.url + "/admin/events"
        screenshot(browser, "admin-events")

        browser.find_element(By.ID, "subject").send_keys("order-4711")
        browser.find_element(By.ID, "find").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#events tbody tr")) == 1)
        row = browser.find_element(By.CSS_SELECTOR, "#events tbody tr")
        assert "order-4711" in row.text and "dead" in row.text
        row.find_element(By.TAG_NAME, "a").click()

        wait.until(ec.presence_of_element_located((By.ID, "cloudevent")))
        assert browser.find_element(By.ID, "event-subject").text == "order-4711"
        failed = browser.find_elements(By.CSS_SELECTOR, 'tr.attempt[data-code="500"]')
        assert len(failed) == 3
        assert "database is down" in failed[0].text
        screenshot(browser, "admin-event-failed")

        receiver.fixed = True
        browser.find_element(By.ID, "redeliver-1").click()
        notice = wait.until(ec.presence_of_element_located((By.ID, "notice")))
        assert notice.text == "queued 1 deliveries to sink"
        # The page redraws itself while the delivery waits; the new attempt succeeds.
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '[data-status="delivered"]')))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr.attempt[data-code="204"]')))
        screenshot(browser, "admin-event-redelivered")
        assert receiver.received == 4 * 3 + 1  # 4 orders, 3 attempts each, 1 redelivery
        wait_until(lambda: "redelivered evt_" in proc.log() and "queued 1" in proc.log(), 5)

        browser.get(proc.url + "/admin/targets")
        wait.until(ec.presence_of_element_located((By.ID, "redeliver-dead-1")))
        screenshot(browser, "admin-targets")
        browser.find_element(By.ID, "redeliver-dead-1").click()
        notice = wait.until(ec.presence_of_element_located((By.ID, "notice")))
        assert notice.text == "queued 3 dead deliveries to sink again"
        wait_until(lambda: dead_count(proc.url) == 0, timeout_s=30, interval_s=0.2)

        browser.get(proc.url + "/admin/sources")
        poll_now = 'tr[data-source="items"] button'
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, poll_now))).click()
        assert wait.until(ec.presence_of_element_located((By.ID, "notice"))).text == (
            "polling items now"
        )
        screenshot(browser, "admin-sources")
        assert console_errors(browser) == []
    log = proc.log()
    assert "admin: session " in log and TOKEN not in log


PAYLOAD = (
    '"\'><script>window.__xss=1;alert(1)</script><img src=x onerror="window.__xss=2">'
    "</pre></textarea>{{7*7}}"
)


def fill_with_payloads(db: Path) -> Event:
    """An event whose every field, and its attempt's answer and error, is a payload."""
    event = Event(
        id="evt_" + PAYLOAD,
        source=PAYLOAD,
        type=PAYLOAD,
        origin=PAYLOAD,  # type: ignore[arg-type]
        data={PAYLOAD: PAYLOAD},
        recorded_ms=now_ms() - 5_000,
        subject=PAYLOAD,
        time_ms=now_ms() - 6_000,
        change=PAYLOAD,  # type: ignore[arg-type]
        upstream_id=PAYLOAD,
    )
    store = SQLiteStore(db)
    store.open()

    async def record() -> None:
        await store.record_events([NewEvent(event, ["sink"])])
        [delivery] = await store.list_deliveries(event_id=event.id)
        attempt = AttemptRecord(delivery.id, event.id, "sink", now_ms(), 12, 500, PAYLOAD,
                                PAYLOAD, "dead", now_ms())  # fmt: skip
        await store.record_attempts([attempt])

    try:
        asyncio.run(record())
    finally:
        store.close()
    return event


def test_payloads_in_every_field_are_shown_and_never_run(daemon, tmp_path: Path) -> None:
    event = fill_with_payloads(tmp_path / "admin.db")
    with serve_app(Receiver().app()) as peer, chromium(tmp_path / "profile") as browser:
        proc = daemon(config_text(peer))
        wait = WebDriverWait(browser, 30)
        browser.get(proc.url + "/admin/login")
        wait.until(ec.presence_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "filters")))
        from urllib.parse import quote

        for path in (
            "/admin/events",
            "/admin/events?subject=" + quote(PAYLOAD),
            "/admin/events/" + quote(event.id, safe=""),
            "/admin/targets",
        ):
            browser.get(proc.url + path)
            wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
            if "/admin/events/" in path:
                screenshot(browser, "admin-event-payloads")
            try:
                alert = browser.switch_to.alert.text
            except NoAlertPresentException:
                alert = None
            assert alert is None, path
            assert browser.execute_script("return window.__xss") is None, path
            assert console_errors(browser) == [], path
            assert "<script>window.__xss" not in browser.page_source, path
            assert (
                "<script>window.__xss=1;alert(1)</script>"
                in browser.find_element(By.TAG_NAME, "main").text
            ), path
            raw = httpx.get(proc.url + path, headers=BEARER, timeout=10).text
            assert PAYLOAD not in raw and "<img src=x" not in raw, path
            assert "&lt;script&gt;window.__xss=1" in raw, path
            assert "{{7*7}}" in raw, path  # data is never a template
