"""The one function that shows URLs: passwords, credential parameters and secrets masked."""

from __future__ import annotations

import pytest

from bridge.config import parse_config
from bridge.masking import is_secret_name, looks_random, mask_text, mask_url, url_secrets
from bridge.store import mask_url as store_mask_url

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "http://user:pw@127.0.0.1:9/hook?api_key=SECRET1&x=1",
            "http://user:***@127.0.0.1:9/hook?api_key=***&x=1",
        ),
        ("https://api.example/items?token=SECRET2", "https://api.example/items?token=***"),
        ("https://h/p?ACCESS_TOKEN=a&Signature=b&sig=c", "https://h/p?ACCESS_TOKEN=***&Signature=***&sig=***"),
        ("https://h/p?X-Amz-Credential=a&page=2", "https://h/p?X-Amz-Credential=***&page=2"),
        ("https://h/p?password=a&passwd=b&auth=c", "https://h/p?password=***&passwd=***&auth=***"),
        ("https://h/p?flag&token=", "https://h/p?flag&token=***"),
        ("https://h/p#access_token=abc", "https://h/p#access_token=***"),
        ("postgresql://bridge:s3cret@127.0.0.1:1/db", "postgresql://bridge:***@127.0.0.1:1/db"),
        ("https://user@h/p", "https://***@h/p"),
        ("https://h:8080/p?q=1", "https://h:8080/p?q=1"),
        ("/var/lib/bridge/bridge.db", "/var/lib/bridge/bridge.db"),
        ("http://u:pw@h:99999/p?token=x", "http://u:***@h:99999/p?token=***"),
        ("http://[::1/p?token=x", "http://***"),
        ("https://ghp_abc123@api.github.com/repos", "https://***@api.github.com/repos"),
        ("https://h/cb?code=abc&state=1", "https://h/cb?code=***&state=1"),
        ("https://hooks.slack.com/services/T0A/B0C/abcdefGHIJKLmnop1234",
         "https://hooks.slack.com/services/***/***/***"),
        ("https://discord.com/api/webhooks/123/tok-en", "https://discord.com/api/webhooks/***/***"),
        ("https://x.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d",
         "https://x.webhook.office.com/webhookb2/***/***/***/***"),
        ("https://h/in/Zx81KqP0mB3nV7cR2tY9wL4s/", "https://h/in/***/"),
        ("https://h/v1/customer-subscriptions/page-2", "https://h/v1/customer-subscriptions/page-2"),
    ],
)  # fmt: skip
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_values_equal_to_a_configured_secret_are_masked_anywhere_in_the_url() -> None:
    secrets = {"abcdefghijkl", "tok"}
    url = "https://tok@h/abcdefghijkl/x?state=abcdefghijkl&q=tok&v=prefix-abcdefghijkl"
    assert mask_url(url, secrets) == "https://***@h/***/x?state=***&q=***&v=prefix-***"
    # A percent-encoded secret is recognised too.
    assert mask_url("https://h/p?q=a%20b", {"a b"}) == "https://h/p?q=***"


def test_is_secret_name() -> None:
    for name in ("token", "api_key", "APIKEY", "client_secret", "Password", "sig", "auth"):
        assert is_secret_name(name)
    for name in ("page", "limit", "state", "since", "per_page"):
        assert not is_secret_name(name)


def test_url_secrets_gives_the_password_and_credential_parameters() -> None:
    url = "http://user:p%40ss@h/p?api_key=K%2B1&page=2"
    assert set(url_secrets(url)) == {"p%40ss", "p@ss", "K%2B1", "K+1"}
    assert list(url_secrets("http://h:bad/")) == []


def test_mask_text_masks_every_url_in_a_message() -> None:
    text = "InvalidURL: http://u:pw@127.0.0.1:99999/x?token=abc, also URL('https://h/?key=k')"
    assert mask_text(text) == (
        "InvalidURL: http://u:***@127.0.0.1:99999/x?token=***, also URL('https://h/?key=***')"
    )
    assert mask_text("the token is abcdefghijkl", {"abcdefghijkl"}) == "the token is ***"


def test_the_store_shows_database_urls_with_the_same_function() -> None:
    assert store_mask_url is mask_url


def test_config_reprs_and_errors_show_urls_masked() -> None:
    config = parse_config(
        f"""
sources:
  api:
    poll: {{url: "https://h/items?token=SECRET2", every: 1s, id: id}}
targets:
  t: {{url: "http://user:pw@127.0.0.1:9/hook?api_key=SECRET1", secret: {SECRET}}}
"""
    )
    shown = repr(config)
    assert "SECRET1" not in shown and "SECRET2" not in shown and ":pw@" not in shown
    assert "api_key=***" in shown and "token=***" in shown
    with pytest.raises(Exception) as caught:
        parse_config(f"targets:\n  t: {{url: 'ftp://u:pw@h/?token=SECRET3', secret: {SECRET}}}\n")
    assert "SECRET3" not in str(caught.value) and ":pw@" not in str(caught.value)
    assert "is not an http(s) URL" in str(caught.value)


def test_an_attempts_error_names_the_exception_and_its_message_without_secrets() -> None:
    from bridge.deliver.worker import describe

    exc = ValueError("Cannot combine AUTHORIZATION header with credentials encoded in URL")
    assert describe(exc) == (
        "ValueError: Cannot combine AUTHORIZATION header with credentials encoded in URL"
    )
    assert describe(KeyError()) == "KeyError"
    leaky = RuntimeError("sent Bearer abcdefghijkl to http://u:pw@h/x?api_key=k " + "x" * 400)
    shown = describe(leaky, {"abcdefghijkl"})
    assert shown.startswith("RuntimeError: sent Bearer *** to http://u:***@h/x?api_key=*** xx")
    assert shown.endswith("...") and len(shown) < 330


def test_looks_random_tells_generated_keys_from_words_and_short_ids() -> None:
    for segment in ("abcdefGHIJKLmnop1234", "0123456789abcdef0123456789abcdef01234567"):
        assert looks_random(segment), segment
    for segment in ("customer-subscriptions", "evt_123", "abcdefghijklmnopqrstuvwxyz", "v1"):
        assert not looks_random(segment), segment


def test_a_user_without_a_password_is_a_secret_when_it_is_as_long_as_a_token() -> None:
    token = "ghp_abcdefghijklmnopqrstuvwx0123456789"
    assert set(url_secrets(f"https://{token}@api.github.com/")) == {token}
    assert list(url_secrets("postgresql://postgres@127.0.0.1:5432/test")) == []
