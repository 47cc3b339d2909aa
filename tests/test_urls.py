"""The URL allow-list: prefixes compared by origin and path, private hosts, file:// folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from reviewscore.core.errors import URLRefusedError
from reviewscore.core.settings import Settings
from reviewscore.core.urls import check_url


def _settings(allow: str, file_dirs: str = "") -> Settings:
    return Settings(url_allow=allow, url_file_dirs=file_dirs)


def test_empty_allow_list_refuses_every_url_naming_the_setting() -> None:
    with pytest.raises(URLRefusedError, match="REVIEWSCORE_URL_ALLOW"):
        check_url("http://127.0.0.1:8080/a.csv", _settings(""))


def test_listed_literal_loopback_prefix_is_allowed() -> None:
    checked = check_url(
        "http://127.0.0.1:8080/data/a.csv", _settings("http://127.0.0.1:8080/data/")
    )
    assert checked.addresses == ("127.0.0.1",)


def test_prefix_compares_host_not_string() -> None:
    with pytest.raises(URLRefusedError, match="does not start"):
        check_url("http://127.0.0.1:18080/a", _settings("http://127.0.0.1:8080"))
    with pytest.raises(URLRefusedError, match="does not start"):
        check_url("http://ok.example.com.evil/a", _settings("http://ok.example.com"))


def test_prefix_path_matches_whole_segments() -> None:
    with pytest.raises(URLRefusedError, match="does not start"):
        check_url("http://127.0.0.1:8080/database", _settings("http://127.0.0.1:8080/data"))


def test_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(URLRefusedError, match="loopback"):
        check_url("http://localhost:8080/a.csv", _settings("http://localhost:8080/"))


def test_other_schemes_are_refused() -> None:
    with pytest.raises(URLRefusedError, match="only http"):
        check_url("ftp://127.0.0.1/a", _settings("ftp://127.0.0.1/"))


def test_file_url_only_under_listed_dirs(tmp_path: Path) -> None:
    ok = tmp_path / "in"
    ok.mkdir()
    (ok / "a.csv").write_text("text\nfine\n")
    settings = _settings("http://127.0.0.1/", str(ok))
    assert check_url(f"file://{ok}/a.csv", settings).file_path == ok / "a.csv"
    with pytest.raises(URLRefusedError, match="REVIEWSCORE_URL_FILE_DIRS"):
        check_url(f"file://{ok}/../a.csv", settings)
    # A folder listed is enough: file:// URLs need no network prefix in REVIEWSCORE_URL_ALLOW.
    assert check_url(f"file://{ok}/a.csv", _settings("", str(ok))).file_path == ok / "a.csv"
    with pytest.raises(URLRefusedError, match="not listed any folder in REVIEWSCORE_URL_FILE"):
        check_url(f"file://{ok}/a.csv", _settings("http://127.0.0.1/"))


def test_refusals_never_echo_the_query_or_credentials() -> None:
    # A presigned URL carries its signature in the query: messages show the URL without it.
    with pytest.raises(URLRefusedError) as refused:
        check_url("http://127.0.0.1:9/a.csv?X-Amz-Signature=s3cret", _settings("http://10.0.0.1/"))
    assert (
        "s3cret" not in refused.value.message
        and "http://127.0.0.1:9/a.csv" in refused.value.message
    )
    with pytest.raises(URLRefusedError) as refused:
        check_url("http://user:pw@127.0.0.1/a", _settings("http://127.0.0.1/"))
    assert "pw" not in refused.value.message
