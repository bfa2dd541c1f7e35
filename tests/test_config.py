"""The config loader: valid files, interpolation, and one line with exit 2 for each mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.config import AdaptiveEvery, load_config, parse_config, parse_duration
from bridge.errors import ConfigError
from tests.conftest import TEST_SECRET
from tests.helpers import REPO, run_cli

POLL = """
sources:
  orders:
    poll:
      url: https://api.example.com/orders
      every: 30s
      id: id
"""


def check(path: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", "-c", str(path)], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("databse: x.db\n", 1, "databse: is not a known key"),
        ("database: a.db\ndatabase: b.db\n", 2, "database: duplicate key"),
        (POLL.replace("every: 30s", "every: 5x"), 5,
         'sources.orders.poll.every: "5x" is not a duration'),
        (POLL.replace("every: 30s", "every: 30s\n      timeout: soon"), 6,
         'sources.orders.poll.timeout: "soon" is not a duration'),
        (POLL.replace("orders:", "Orders:"), 2, 'sources.Orders: "Orders" is not a valid name'),
        (POLL + "compare:\n  - {poll: orders, push: github}\n", 8,
         'compare.0.push: "github" is not a source'),
        (POLL.replace("      id: id\n", ""), 3, "sources.orders.poll.id: is required"),
        ("server:\n  listen: 8080\n", 2, 'server.listen: "8080" is not HOST:PORT'),
        ("targets:\n  t:\n    url: http://127.0.0.1:9/\n    secret: " + TEST_SECRET
         + "\n    concurrency: lots\n", 5, 'targets.t.concurrency: "lots" is not a whole number'),
        ("targets:\n  t:\n    url: http://127.0.0.1:9/\n    secret: " + TEST_SECRET
         + "\n    sources: [nope]\n", 5, 'targets.t.sources.0: "nope" is not a source'),
        ("sources:\n  gh:\n    webhook: {verify: gitlab2, secrets: [x]}\n", 3,
         'sources.gh.webhook.verify: "gitlab2" is not one of'),
        ("sources: [a, b]\n", 1, "sources: is not a mapping"),
        (POLL.replace("id: id", "id: id\n      budget: gh"), 7,
         'sources.orders.poll.budget: "gh" is not a budget'),
        (POLL.replace("id: id", "id: id\n      budget: gh")
         + "budgets:\n  gh: {requests: 5, per: 1h}\n  Big: {requests: 5, per: 1h}\n", 10,
         'budgets.Big: "Big" is not a valid name'),
        ("budgets:\n  gh: {requests: 0, per: 1h}\n", 2, "budgets.gh.requests:"),
        ("budgets:\n  gh: {requests: 5, per: 0s}\n", 2, "budgets.gh.per:"),
        ("budgets:\n  gh: {requests: 5}\n", 2, "budgets.gh.per: is required"),
        ("server: {listen: [\n", 2, "not valid YAML"),
    ],
)  # fmt: skip
def test_each_mistake_gets_one_line_and_status_2(
    write_config, text: str, line: int, message: str
) -> None:
    path = write_config(text)
    code, out, err = check(path)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}:{line}: "), lines[0]
    assert message in lines[0]
    assert "Traceback" not in err


def test_missing_environment_variable(write_config) -> None:
    path = write_config("server:\n  admin_token: ${BRIDGE_TEST_UNSET_VAR}\n")
    code, _, err = check(path, env={"BRIDGE_TEST_UNSET_VAR": None})  # type: ignore[dict-item]
    assert code == 2
    assert err.strip() == (
        f"{path}:2: server.admin_token: ${{BRIDGE_TEST_UNSET_VAR}}: the environment variable "
        "BRIDGE_TEST_UNSET_VAR is not set"
    )


def test_missing_file_and_credential(write_config, tmp_path: Path) -> None:
    path = write_config(f"server:\n  admin_token: ${{file:{tmp_path}/nope.txt}}\n")
    code, _, err = check(path)
    assert code == 2 and "server.admin_token" in err and "cannot read the file" in err
    path = write_config("server:\n  admin_token: ${credential:token}\n")
    code, _, err = check(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert code == 2 and "no such credential" in err


def test_missing_config_file(tmp_path: Path) -> None:
    code, _, err = check(tmp_path / "absent.yaml")
    assert code == 2
    assert err.strip() == f"{tmp_path / 'absent.yaml'}: no such file"


def test_bad_secret_is_masked_in_the_error(write_config) -> None:
    path = write_config(
        "targets:\n  t:\n    url: http://127.0.0.1:9/\n    secret: hunter2-secret\n"
    )
    code, _, err = check(path)
    assert code == 2
    assert "targets.t.secret" in err and "is not a whsec_ secret" in err
    assert "hunter2" not in err


def test_interpolation_of_every_kind(write_config, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "token.txt").write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hook").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("BRIDGE_TEST_PORT", "9999")
    monkeypatch.delenv("BRIDGE_TEST_MISSING", raising=False)
    path = write_config(
        f"""
        database: ${{BRIDGE_TEST_MISSING:-state}}/bridge.db
        server:
          listen: 127.0.0.1:${{BRIDGE_TEST_PORT}}
          admin_token: ${{file:{tmp_path}/token.txt}}
        sources:
          gh:
            webhook:
              verify: github
              secrets: ["${{credential:hook}}", "plain"]
        """
    )
    config = load_config(path)
    assert config.server.port == 9999
    assert config.database_path == str(tmp_path / "state" / "bridge.db")
    assert config.server.admin_token is not None
    assert config.server.admin_token.get_secret_value() == "from-file"
    hook = config.sources["gh"].webhook
    assert hook is not None
    assert [s.get_secret_value() for s in hook.secrets] == ["from-credential", "plain"]
    # Secrets never show in a repr.
    assert "from-file" not in repr(config) and "from-credential" not in repr(config)


def test_defaults_and_durations(write_config) -> None:
    config = load_config(write_config(POLL.replace("every: 30s", "every: {min: 250ms, max: 2m}")))
    poll = config.sources["orders"].poll
    assert poll is not None
    assert poll.every == AdaptiveEvery(min=0.25, max=120.0)
    assert poll.timeout_s == 10.0 and poll.method == "GET" and poll.baseline == "silent"
    assert config.server.listen == "127.0.0.1:8080"
    assert config.database_path.endswith("bridge.db")
    assert [parse_duration(v) for v in ("250ms", "5s", "2m", "1h", 7, "1.5")] == [
        0.25, 5.0, 120.0, 3600.0, 7.0, 1.5,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_config_from_environment_then_current_folder(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("server:\n  listen: 127.0.0.1:1234\n")
    (tmp_path / "other.yaml").write_text("server:\n  listen: 127.0.0.1:4321\n")
    here = run_cli("check", cwd=tmp_path, env={"BRIDGE_CONFIG": ""})
    assert here.returncode == 0, here.stderr
    assert "127.0.0.1:1234" in here.stdout
    there = run_cli("check", cwd=tmp_path, env={"BRIDGE_CONFIG": str(tmp_path / "other.yaml")})
    assert there.returncode == 0 and "127.0.0.1:4321" in there.stdout


def test_check_prints_a_summary_with_secrets_masked(write_config) -> None:
    path = write_config(
        POLL
        + f"""
targets:
  sink:
    url: http://127.0.0.1:9/hook
    secret: {TEST_SECRET}
    headers: {{authorization: Bearer sekrit-token}}
"""
    )
    code, out, err = check(path)
    assert code == 0, err
    assert "orders: poll GET https://api.example.com/orders every 30s" in out
    assert "sink: http://127.0.0.1:9/hook" in out
    assert TEST_SECRET not in out and "sekrit-token" not in out


def test_the_example_config_is_valid(monkeypatch) -> None:
    text = (REPO / "config.example.yaml").read_text()
    # Give every variable it names a value of the right shape.
    for name in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text)):
        monkeypatch.setenv(name, TEST_SECRET if "SECRET" in name else "value-" + name.lower())
    config = parse_config(text, "config.example.yaml", REPO / "config.example.yaml")
    assert config.server.listen


def test_parse_config_raises_config_error_with_fields() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("server:\n  listen: nowhere\n", "c.yaml")
    assert (info.value.file, info.value.line, info.value.path) == ("c.yaml", 2, "server.listen")


@pytest.mark.parametrize("secret", ["whsec_", "whsec_c2hvcnQ="])
def test_target_secret_with_an_empty_or_short_key_is_refused(write_config, secret: str) -> None:
    path = write_config(f"targets:\n  t:\n    url: http://127.0.0.1:9/\n    secret: {secret}\n")
    code, _, err = check(path)
    assert code == 2
    assert "targets.t.secret" in err and "is not a whsec_ secret" in err


def test_poll_params_stay_out_of_reprs_and_errors(write_config) -> None:
    text = POLL + "      params: {api_key: sk-live-123, page: [bad]}\n"
    code, _, err = check(write_config(text))
    assert code == 2 and "sources.orders.poll.params" in err
    assert "sk-live-123" not in err
    config = load_config(write_config(POLL + "      params: {api_key: sk-live-123}\n"))
    assert "sk-live-123" not in repr(config)


@pytest.mark.parametrize("userinfo", ["user:pw@", "user@", ":pw@"])
@pytest.mark.parametrize("header", ["Authorization", "authorization", "AUTHORIZATION"])
def test_credentials_in_a_target_url_and_an_authorization_header_are_refused(
    userinfo: str, header: str
) -> None:
    text = (
        f"targets:\n  t:\n    url: http://{userinfo}127.0.0.1:9/\n    secret: {TEST_SECRET}\n"
        f"    headers: {{{header}: Bearer abc}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert str(info.value) == (
        "c.yaml:2: targets.t: has credentials in its url and an authorization header: "
        "keep one of them"
    )
    # Either one alone is fine.
    parse_config(text.replace(userinfo, ""), "c.yaml")
    parse_config(text.split("    headers")[0], "c.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits: {max_wait: 2d}", "limits.max_wait:"),
        ("limits: {max_wait: 0}", "limits.max_wait:"),
        (
            "sources:\n  s: {poll: {url: 'http://a/x', every: 1s, id: id,"
            " pages: {link: true, allow_origins: ['https://cdn.example.com/path']}}}",
            'sources.s.poll.pages.allow_origins.0: "https://cdn.example.com/path" is not an origin',
        ),
    ],
)
def test_limits_and_allowed_origins_are_checked(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_max_wait_defaults_to_an_hour_and_origins_are_normalized() -> None:
    config = parse_config(
        "limits: {max_wait: 10m}\nsources:\n  s: {poll: {url: 'http://a/x', every: 1s, id: id,"
        " pages: {next_url: next, allow_origins: ['HTTPS://CDN.example.com']}}}"
    )
    assert config.limits.max_wait_s == 600
    assert config.sources["s"].poll.allow_origins == ["https://cdn.example.com:443"]  # type: ignore[union-attr]
    assert parse_config("").limits.max_wait_s == 3600


def test_auth_and_credentials_are_checked_in_one_run(tmp_path: Path) -> None:
    from bridge.errors import ConfigErrors

    path = tmp_path / "c.yaml"
    path.write_text(
        "credentials:\n"
        "  graph:\n"
        "    oauth2: {token_url: 'http://127.0.0.1:1/t', client_id: x, client_secret: y}\n"
        "sources:\n"
        "  a:\n"
        "    poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id, auth: {credential: grahp}}\n"
        "  b:\n"
        "    poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id,"
        " auth: {bearer: t, header: {X-Key: k}}}\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    text = str(caught.value)
    assert 'c.yaml:6: sources.a.poll.auth.credential: "grahp" is not a credential' in text
    assert 'did you mean "graph"?' in text
    assert "c.yaml:8: sources.b.poll.auth: auth needs exactly one of" in text
    assert "(has bearer, header)" in text
    assert "'t'" not in text and "k}" not in text


def test_credentials_names_key_files_and_auth_secrets_are_checked(tmp_path: Path) -> None:
    from bridge.errors import ConfigErrors

    (tmp_path / "nokey.json").write_text('{"client_email": "a@b.test"}')
    path = tmp_path / "c.yaml"
    path.write_text(
        "credentials:\n"
        "  Graph!:\n"
        "    oauth2: {token_url: 'http://127.0.0.1:1/t', client_id: x, client_secret: y}\n"
        "  google:\n"
        "    oauth2: {grant: jwt_bearer, token_url: 'http://127.0.0.1:1/t', key_file: gone.json}\n"
        "sources:\n"
        "  a:\n"
        "    poll:\n"
        "      url: 'http://127.0.0.1:1/a'\n"
        "      every: 1m\n"
        "      id: id\n"
        "      auth: {oauth2: {grant: jwt_bearer, token_url: 'http://127.0.0.1:1/t',"
        " key_file: nokey.json}}\n"
        "  b:\n"
        "    poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id,"
        " auth: {bearer: [hidden-value]}}\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    text = str(caught.value)
    assert 'c.yaml:2: credentials.Graph!: "Graph!" is not a valid name' in text
    assert f"c.yaml:5: credentials.google.oauth2.key_file: cannot read {tmp_path}/gone.json" in text
    assert (
        f"sources.a.poll.auth.oauth2.key_file: {tmp_path}/nokey.json has no PEM private_key"
    ) in text
    assert "sources.b.poll.auth.bearer:" in text and "hidden-value" not in text


def test_auth_secrets_are_the_configs_secrets() -> None:
    from bridge.config.models import iter_secrets

    config = parse_config(
        "credentials:\n"
        "  g: {oauth2: {grant: refresh_token, token_url: 'http://127.0.0.1:1/t',"
        " client_id: x, client_secret: cs-1, refresh_token: rt-1}}\n"
        "sources:\n"
        "  a: {poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id, auth: {bearer: b-1}}}\n"
        "  b: {poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id,"
        " auth: {basic: {username: u, password: p-1}}}}\n"
        "  c: {poll: {url: 'http://127.0.0.1:1/a', every: 1m, id: id,"
        " auth: {header: {X-Key: h-1}}}}\n"
    )
    assert {"cs-1", "rt-1", "b-1", "p-1", "h-1"} <= set(iter_secrets(config))
    assert "rt-1" not in repr(config) and "cs-1" not in repr(config)
