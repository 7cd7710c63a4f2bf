"""The public helpers a plugin builds on: secret references, strict JSON bodies, error replies.

The built-in triggers, the config loader and the management API use these same functions, so
each is tested here once, through ``wfsched`` as a plugin imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import wfsched
from wfsched import BadBody, Outbound, SpecError, parse_json, resolve_secret
from wfsched.config import load_settings
from wfsched.errors import ConfigError
from wfsched.secretrefs import api_refusals
from wfsched.web.requests import error_response

# --- secret references ---------------------------------------------------------------------


def test_an_env_reference_resolves_to_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPERS_TEST_SECRET", "s3cret")
    assert resolve_secret("env:HELPERS_TEST_SECRET") == "s3cret"


def test_an_unset_variable_names_the_reference_and_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HELPERS_TEST_SECRET", "s3cret")
    monkeypatch.delenv("HELPERS_TEST_UNSET", raising=False)
    with pytest.raises(SpecError) as info:
        resolve_secret("env:HELPERS_TEST_UNSET", field="auth.secret")
    assert info.value.field == "auth.secret"
    assert str(info.value) == (
        "field 'auth.secret': secret reference 'env:HELPERS_TEST_UNSET': "
        "environment variable HELPERS_TEST_UNSET is not set"
    )


def test_a_file_reference_reads_the_file_less_one_newline(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"from-file\r\n")
    assert resolve_secret(f"file:{tmp_path / 'key'}") == "from-file"


def test_a_missing_file_names_the_reference_and_the_field(tmp_path: Path) -> None:
    ref = f"file:{tmp_path / 'nope'}"
    with pytest.raises(SpecError) as info:
        resolve_secret(ref, field="password")
    assert (info.value.field, ref in str(info.value)) == ("password", True)
    assert "No such file" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_names_the_reference(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("hidden-value")
    secret.chmod(0)
    with pytest.raises(SpecError, match="Permission denied") as info:
        resolve_secret(f"file:{secret}", field="password")
    assert "hidden-value" not in str(info.value)


def test_a_literal_is_returned_unchanged() -> None:
    assert resolve_secret("plain-secret", field="auth.secret") == "plain-secret"
    assert resolve_secret("environment:X") == "environment:X"


def test_a_malformed_reference_is_refused() -> None:
    with pytest.raises(SpecError, match="does not name an environment variable"):
        resolve_secret("env:NOT A NAME", field="auth.secret")
    assert wfsched.reference_problem("file:") == "'file:' does not name a file"
    assert wfsched.reference_problem("env:OK_NAME") is None


def test_the_api_refuses_references_only_in_secret_fields() -> None:
    config = {"auth": {"secret": ["literal", "env:X"]}, "payload_hint": "env:DATA"}
    [refusal] = api_refusals(config, ["auth.secret", "auth.password"])
    assert refusal.field == "auth.secret"
    assert "not accepted over the API" in refusal.message
    assert api_refusals({"auth": {"secret": "literal"}}, ["auth.secret"]) == []


def test_a_config_secret_error_names_the_setting_and_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HELPERS_TEST_UNSET", raising=False)
    config = tmp_path / "wfsched.toml"
    config.write_text('[server]\napi_token = "env:HELPERS_TEST_UNSET"\n')
    settings = load_settings(str(config), environ={})
    with pytest.raises(ConfigError) as info:
        settings.secret("server.api_token")
    assert str(info.value) == (
        "server.api_token: secret reference 'env:HELPERS_TEST_UNSET': "
        "environment variable HELPERS_TEST_UNSET is not set"
    )


def test_a_relative_file_reference_in_the_config_is_anchored_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "token").write_text("anchored\n")
    config = tmp_path / "etc" / "wfsched.toml"
    config.write_text('[server]\napi_token = "file:token"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(str(config), environ={}).secret("server.api_token") == "anchored"


# --- strict JSON bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e400}', "1e400, beyond the range of a double"),
        (b'["\\ud800"]', "unpaired surrogate"),
        (b'{"k\\u0000": 1}', "\\u0000"),
        (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
        (b"{", "not valid JSON"),
        (b"  ", "empty"),
        (b'"\xff"', "UTF-8"),
    ],
)
def test_the_json_parser_names_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(BadBody) as info:
        parse_json(body)
    assert info.value.code == "invalid_json"
    assert words in str(info.value)


def test_the_json_parser_keeps_what_every_store_holds_exactly() -> None:
    big = 123456789012345678901234567890
    body = b'{"big": %d, "max": 1.7976931348623157e308, "emoji": "\\ud83d\\ude00"}' % big
    assert parse_json(body) == {"big": big, "max": 1.7976931348623157e308, "emoji": "😀"}
    assert parse_json(b"[" * 64 + b"]" * 64) is not None


# --- error replies -------------------------------------------------------------------------


def test_an_error_reply_has_the_shape_of_every_route() -> None:
    reply = Outbound.error(429, "rate_limited", "too many requests", {"Retry-After": "2"})
    assert reply == Outbound(
        status=429,
        body={"error": "rate_limited", "detail": "too many requests"},
        headers={"Retry-After": "2"},
    )
    assert Outbound.error(400, "bad_request", "x").headers == {}
    management = error_response(429, "rate_limited", "too many requests")
    assert json.loads(bytes(management.body)) == reply.body
