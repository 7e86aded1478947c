"""Settings that carry a secret to another host refuse plain http (naming the setting); loopback is the one
exception, since it never leaves the machine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raiox.settings import SECRET_URLS, Settings


@pytest.mark.parametrize("name", list(SECRET_URLS))
@pytest.mark.parametrize("env", ["prod", "dev"])
def test_a_secret_carrying_url_must_be_https_and_the_error_names_it(name: str, env: str) -> None:
    with pytest.raises(ValidationError, match=rf"{name.upper()} must be an https:// URL") as raised:
        Settings.given(raiox_env=env, **{name: "http://api.example.com/x"})
    assert "loopback" in str(raised.value)
    with pytest.raises(ValidationError, match=name.upper()):
        Settings.given(raiox_env=env, **{name: "ftp://api.example.com/x"})
    assert getattr(Settings.given(raiox_env=env, **{name: "https://api.example.com/x"}), name)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/embed", "http://[::1]:9000/x", "http://localhost:8080/",
                                 "http://127.8.9.10/"])
def test_plain_http_to_loopback_stays_allowed(url: str) -> None:
    assert Settings.given(embed_url=url, notify_url=url, jotform_api_base=url).embed_url == url


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOTFORM_API_BASE", "http://api.jotform.com")
    with pytest.raises(ValidationError, match="JOTFORM_API_BASE must be an https:// URL"):
        Settings(_env_file=None)


def test_an_empty_url_means_unset() -> None:
    assert Settings.given(embed_url="", notify_url="").embed_url == ""
