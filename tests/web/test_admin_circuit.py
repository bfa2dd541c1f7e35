"""An open circuit on the admin pages of the real daemon: the Targets page shows until when
and a "Retry now" button (guarded like every button), the event page's next attempt is
that time, never one already past, and the Redeliver button's notice names the circuit;
and an operator clicks "Retry now" in a real Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from bridge.web.views import event_href
from tests.helpers import serve_app, wait_until
from tests.web.admin_parts import TOKEN, Receiver, config_text, csrf_of, log_in
from tests.web.browser import chromium, screenshot

BEARER = {"authorization": f"Bearer {TOKEN}", "accept": "application/json"}


def notice_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["notice"][0]


def test_an_open_circuit_is_shown_named_and_retried_now(daemon) -> None:
    receiver = Receiver()
    with serve_app(receiver.app()) as peer:
        text = config_text(peer).replace(
            "{failures: 100}", "{failures: 2, cooldown: 1h, max_cooldown: 2h}"
        )
        proc = daemon(text)
        body = {"id": "ord_c", "type": "order.paid", "subject": "order-1"}
        answer = httpx.post(proc.url + "/hooks/orders", json=body, timeout=10)
        assert answer.status_code in (200, 202), answer.text
        event_id = answer.json()["id"]
        with log_in(proc.url) as client:
            until = wait_until(
                lambda: re.search(r"open until (\S+Z)", client.get("/admin/targets").text),
                timeout_s=20,
            ).group(1)
            targets = client.get("/admin/targets").text
            assert "Retry now</button>" in targets
            csrf = csrf_of(targets)
            # The event waits for the circuit, not for a retry time already past.
            event = client.get(event_href(event_id)).text
            shown = re.search(r'<dd class="next">([^<]*)', event)
            assert (
                shown and shown.group(1) == f"{until} (circuit open: Retry now on the Targets page)"
            )
            receiver.fixed = True

            form = {"csrf": csrf, "event_id": event_id, "target": ""}
            notice = notice_of(client.post("/admin/redeliver", data=form))
            assert notice.startswith("queued 1 deliveries to every target. ")
            assert f"target sink: circuit open until {until}; 'bridge target reset sink'" in notice
            scripted = httpx.post(proc.url + "/admin/redeliver", data=form, headers=BEARER)
            assert scripted.json() == {
                "queued": 1,
                "circuit": [{"target": "sink", "state": "open", "until": until}],
            }
            attempts = client.get(event_href(event_id)).text
            assert "<dt>attempts</dt><dd>2</dd>" in attempts  # both failed ones, still counted

            # "Retry now" is a button like the others: without the CSRF token it is refused.
            refused = client.post(
                "/admin/target/reset", data={"name": "sink"}, headers={"origin": "null"}
            )
            assert refused.status_code == 403 and receiver.received == 2
            reset = client.post("/admin/target/reset", data={"csrf": csrf, "name": "sink"})
            notice = notice_of(reset)
            assert notice.startswith(f"target sink: its circuit was open until {until} and is now")
            wait_until(
                lambda: 'data-status="delivered"' in client.get(event_href(event_id)).text,
                timeout_s=20,
            )
            done = client.get(event_href(event_id)).text
            assert "<dt>attempts</dt><dd>3</dd>" in done and receiver.received == 3
            assert "Retry now</button>" not in client.get("/admin/targets").text
        wait_until(lambda: "target sink: circuit closed by reset" in proc.log(), timeout_s=5)
        log = proc.log()
        assert re.search(r"admin: session \S+ reset target sink: its circuit was open until", log)
        assert "target sink: circuit opened until " in log


def test_an_operator_retries_now_in_a_browser(daemon, tmp_path: Path) -> None:
    receiver = Receiver()
    with serve_app(receiver.app()) as peer, chromium(tmp_path / "profile") as browser:
        text = config_text(peer).replace("{failures: 100}", "{failures: 2, cooldown: 1h}")
        proc = daemon(text)
        body = {"id": "ord_b", "type": "order.paid", "subject": "order-2"}
        assert httpx.post(proc.url + "/hooks/orders", json=body, timeout=10).status_code < 300
        wait = WebDriverWait(browser, 30)
        browser.get(proc.url + "/admin/targets")
        wait.until(ec.presence_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()

        def circuit_cell() -> str:
            browser.get(proc.url + "/admin/targets")
            return str(browser.find_element(By.CSS_SELECTOR, "#targets td.circuit").text)

        wait_until(lambda: circuit_cell().startswith("open until "), timeout_s=20, interval_s=0.2)
        screenshot(browser, "admin-targets-circuit-open")
        receiver.fixed = True
        browser.find_element(By.ID, "reset-1").click()
        notice = wait.until(ec.presence_of_element_located((By.ID, "notice"))).text
        assert notice.startswith("target sink: its circuit was open until ")
        assert "is now closed: its backlog is sent now" in notice
        screenshot(browser, "admin-targets-retried")
        wait_until(lambda: receiver.received == 3, timeout_s=20)
        assert circuit_cell() == "closed" and not browser.find_elements(By.ID, "reset-1")
