"""Bad config files: `bridge check` answers each with one line naming the file and status 2,
never a traceback, never a secret; random mutations of a valid file (hypothesis) too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.cli import cli
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.reliability

ADMIN_TOKEN = "admin-token-of-the-config-tests"
POLL_TOKEN = "poll-token-of-the-config-tests"
HOOK_SECRET = "hook-secret-of-the-config-tests"
TARGET_HEADER = "target-header-of-the-config-tests"
SECRETS = (ADMIN_TOKEN, POLL_TOKEN, HOOK_SECRET, TARGET_HEADER, TEST_SECRET)

VALID = f"""\
database: bridge.db
server:
  listen: 127.0.0.1:8080
  admin_token: {ADMIN_TOKEN}
sources:
  orders:
    poll:
      url: https://api.example.com/orders
      headers:
        Authorization: Bearer {POLL_TOKEN}
      params: {{state: open}}
      every: {{min: 5s, max: 2m}}
      timeout: 10s
      id: id
      version: updated_at
      ignore: [etag]
      pages: {{cursor: meta.next, param: after}}
      on_push: gh
  gh:
    webhook:
      path: /hooks/github
      verify: github
      secrets: [{HOOK_SECRET}]
      max_body: 64KiB
targets:
  sink:
    url: http://127.0.0.1:9/hook
    secret: {TEST_SECRET}
    headers: {{X-Token: {TARGET_HEADER}}}
    events: ["orders.*", "issues.*"]
    retry: [1s, 5s]
    circuit: {{failures: 3, cooldown: 10s}}
compare:
  - {{poll: orders, push: gh}}
"""


def check(path: Path) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, result.stderr, exc


def assert_clean_answer(path: Path) -> int:
    """`bridge check` exits 0 with a summary, or 2 with one line per mistake naming the file."""
    code, out, err, exc = check(path)
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in out + err
    for secret in SECRETS:
        assert secret not in out + err, "a secret in the answer"
    if code == 2:
        lines = err.strip("\n").splitlines()
        assert lines, err
        for line in lines:
            assert line.startswith(f"{path}:"), line
        assert out == ""
    else:
        assert out.startswith(f"{path}: ok"), out
    return code


def test_the_valid_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    assert assert_clean_answer(path) == 0


# -- each kind of mistake, beyond tests/test_config.py ------------------------------------------

MISTAKES = [
    ("url: https://api.example.com/orders", "url: ftp://example.com/x",
     "sources.orders.poll.url: \"ftp://example.com/x\" is not an http(s) URL"),
    ("version: updated_at", "version: 'a[?'", "sources.orders.poll.version"),
    ("ignore: [etag]", "ignore: ['length(x)']", "sources.orders.poll.ignore"),
    ("every: {min: 5s, max: 2m}", "every: {min: 5m, max: 2s}", "needs 0 < min <= max"),
    ("every: {min: 5s, max: 2m}", "every: 0", "sources.orders.poll.every"),
    ("timeout: 10s", "timeout: -3s", "\"-3s\" is not a duration"),
    ("path: /hooks/github", "path: hooks/github", "must start with /"),
    ("on_push: gh", "on_push: orders", '"orders" is not a webhook source'),
    ("verify: github", "verify: hmac", "verify: hmac needs header"),
    ("max_body: 64KiB", "max_body: lots", "sources.gh.webhook.max_body"),
    ("retry: [1s, 5s]", "retry: [1s, soon]", "targets.sink.retry.1"),
    ("circuit: {failures: 3, cooldown: 10s}", "circuit: {failures: 0}",
     "targets.sink.circuit.failures"),
    # A single string is a list of one (`events: "*"`); a mapping is not.
    ("events: [\"orders.*\", \"issues.*\"]", "events: {a: 1}", "targets.sink.events"),
    ("  gh:\n    webhook:", "  gh:\n    poll: {url: 'http://x/', every: 1s, id: id}\n    webhook:",
     "needs exactly one of poll or webhook"),
    ("  - {poll: orders, push: gh}", "  - {poll: gh, push: gh}", '"gh" is not a poll source'),
    ("listen: 127.0.0.1:8080", "listen: 127.0.0.1:99999", "is not HOST:PORT"),
    ("database: bridge.db", "database: bridge.db\n\tserver: {}", "not valid YAML"),
    ("database: bridge.db", "database: ${1PATH}", "is not a valid reference"),
    ("database: bridge.db", "database: [a, b]", "database"),
    ("database: bridge.db", "? [a, b]\n: c\ndatabase: bridge.db", "keys must be text"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "message"), MISTAKES)
def test_each_kind_of_mistake_is_one_line_and_status_2(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in VALID
    path = tmp_path / "config.yaml"
    path.write_text(VALID.replace(old, new, 1))
    _, _, err, _ = check(path)
    assert assert_clean_answer(path) == 2
    assert message in err, err


def test_a_quote_left_open_does_not_show_the_secrets_it_swallowed(tmp_path: Path) -> None:
    # Found by the mutation test below: the value of `path` runs to the next quote, over the
    # `secrets` line, and the message used to quote it.
    text = VALID.replace("path: /hooks/github", "path: 'hooks/github")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("max_body: 64KiB", "max_body: '"))
    assert assert_clean_answer(path) == 2
    assert "sources.gh.webhook.path: this value must start with /" in check(path)[2]


@pytest.mark.parametrize(
    "content",
    [
        b"",  # an empty file is a valid, empty config
        b"- just\n- a list\n",
        b"\xff\xfe not utf-8",
        b"a: &a [*a]\n",  # a recursive alias
        b"[" * 5000 + b"]" * 5000,  # nested deeper than any parser's stack
        # A billion laughs: nine levels of nine aliases would be 387 million strings.
        b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n".encode()
            for i in range(8)
        ),
        b"database: !!python/object/apply:os.system [echo hi]\n",
        b"\x00\x01\x02",
    ],
    ids=["empty", "list", "not-utf8", "recursive-alias", "deep", "alias-bomb", "tag", "binary"],
)
def test_hostile_files_get_one_line_or_pass(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert assert_clean_answer(path) in (0, 2)


def test_a_folder_or_unreadable_path_is_one_line(tmp_path: Path) -> None:
    assert assert_clean_answer(tmp_path) == 2


# -- random mutations of the valid file --------------------------------------------------------

LINES = VALID.splitlines()
NASTY = st.sampled_from(
    ["", "~", "null", "[]", "{}", "-1", "0", "1e999", "yes", "'", '"', ":", "- x", "&a", "*a",
     "!!binary AA==", "${", "${X", "${file:/nonexistent}", "%", "@", "`", "|", ">", "\t",
     "😀", "\\x00", "[[[[", "{a: {b: {c: [", "9" * 40, "-" * 10]
)  # fmt: skip
VALUES = NASTY | st.text(max_size=20)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "value", "char"])
        )
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = re.sub(r"^  ", "", lines[i])
        elif op == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(VALUES)}"
        elif op == "char" and lines[i]:
            at = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:at] + draw(st.characters()) + lines[i][at + 1 :]
    return "\n".join(lines) + "\n"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=mutated())
def test_mutated_configs_get_a_clean_answer(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_clean_answer(path)
