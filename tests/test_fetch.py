"""Fetching a source_url from a real nginx: parallel byte ranges, a server without ranges, a
server stopped mid-fetch, the allow-list, redirects, the size limit and file:// folders."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reviewscore.core.errors import SourceFetchError, UploadTooLargeError, URLRefusedError
from reviewscore.core.fetch import fetch_to_file, fetched
from reviewscore.core.settings import Settings
from tests.conftest import wait_for
from tests.webserver import WebServer, webserver

__all__ = ["webserver"]  # the fixture, imported to be used here

KIB = 1024


def settings_for(server: WebServer, tmp_path: Path, **extra: object) -> Settings:
    # A literal-IP prefix is the operator's consent to reach loopback (see core/urls.py).
    values: dict[str, object] = {
        "url_allow": f"{server.url}/",
        "var_dir": tmp_path / "var",
        "fetch_range_bytes": 256 * KIB,
        "fetch_parallel": 4,
    }
    return Settings(**(values | extra))  # type: ignore[arg-type]


def put(server: WebServer, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (server.root / name).write_bytes(data)
    return data


def spool(settings: Settings) -> list[Path]:
    folder = settings.var_dir / "spool"
    return list(folder.iterdir()) if folder.exists() else []


def test_a_server_with_ranges_is_fetched_in_parallel_ranges_into_the_same_bytes(
    webserver: WebServer, tmp_path: Path
) -> None:
    data = put(webserver, "dump.csv", 3 * 1024 * KIB + 123)
    settings = settings_for(webserver, tmp_path)
    with fetched(f"{webserver.url}/files/dump.csv?X-Amz-Signature=abc", settings) as found:
        assert found.path.read_bytes() == data
        assert (found.size, found.ranges, found.filename) == (len(data), 13, "dump.csv")
        assert found.path.parent == settings.var_dir / "spool"
    assert spool(settings) == [], "the spooled file is deleted once the caller is done"


def test_a_server_without_ranges_is_fetched_in_one_stream(
    webserver: WebServer, tmp_path: Path
) -> None:
    data = put(webserver, "dump.csv", 1024 * KIB + 7)
    with fetched(f"{webserver.url}/noranges/dump.csv", settings_for(webserver, tmp_path)) as found:
        assert found.path.read_bytes() == data
        assert (found.ranges, found.received) == (0, len(data))


def test_a_server_stopped_mid_fetch_is_resumed_from_the_last_byte_received(
    webserver: WebServer, tmp_path: Path
) -> None:
    # /slow/ sends 256 KiB/s a connection: 4 ranges of 512 KiB take about 2 s.
    data = put(webserver, "dump.csv", 2 * 1024 * KIB)
    settings = settings_for(webserver, tmp_path, fetch_range_bytes=512 * KIB)
    received = [0]
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            outcome["found"] = fetch_to_file(
                f"{webserver.url}/slow/dump.csv",
                settings,
                tmp_path / "spool",
                on_progress=lambda n: received.__setitem__(0, n),
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=fetch)
    thread.start()
    wait_for(lambda: received[0] > len(data) // 4, 20, "a quarter of the file")
    webserver.stop()  # fast shutdown: every open connection is dropped
    cut_at = received[0]
    webserver.start()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    found = outcome["found"]
    assert cut_at < len(data), "the server was stopped before the end"
    assert found.path.read_bytes() == data  # type: ignore[attr-defined]
    assert found.resumes >= 1  # type: ignore[attr-defined]
    assert found.received < 1.5 * len(data)  # type: ignore[attr-defined]


def test_a_url_outside_the_allow_list_is_refused_before_any_request(
    webserver: WebServer, tmp_path: Path
) -> None:
    put(webserver, "dump.csv", 10)
    settings = settings_for(webserver, tmp_path, url_allow=f"{webserver.url}/files/")
    with pytest.raises(URLRefusedError, match="REVIEWSCORE_URL_ALLOW"):
        fetch_to_file(f"{webserver.url}/noranges/dump.csv", settings, tmp_path / "spool")
    assert webserver.requests() == []


def test_a_redirect_to_another_origin_is_refused_naming_it(
    webserver: WebServer, tmp_path: Path
) -> None:
    put(webserver, "dump.csv", 10)
    settings = settings_for(webserver, tmp_path)
    with pytest.raises(URLRefusedError, match=r"127\.0\.0\.2.*another origin"):
        fetch_to_file(f"{webserver.url}/away/dump.csv", settings, tmp_path / "spool")
    assert spool(settings) == []


def test_a_redirect_within_the_origin_is_followed(webserver: WebServer, tmp_path: Path) -> None:
    data = put(webserver, "dump.csv", 1000)
    with fetched(f"{webserver.url}/here/dump.csv", settings_for(webserver, tmp_path)) as found:
        assert found.path.read_bytes() == data


@pytest.mark.parametrize("location", ["files", "noranges"])
def test_a_file_over_the_size_limit_is_refused_before_its_bytes_are_fetched(
    webserver: WebServer, tmp_path: Path, location: str
) -> None:
    put(webserver, "big.csv", 600 * KIB)
    settings = settings_for(webserver, tmp_path, max_upload_bytes=500 * KIB)
    with pytest.raises(UploadTooLargeError, match="614,400 bytes, over the limit of 512,000"):
        fetch_to_file(f"{webserver.url}/{location}/big.csv", settings, tmp_path / "spool")
    assert len(webserver.requests()) == 1, "only the first request, answered by its size"
    assert list((tmp_path / "spool").iterdir()) == []


def test_an_error_answer_names_the_url_without_its_query(
    webserver: WebServer, tmp_path: Path
) -> None:
    with pytest.raises(SourceFetchError) as refused:
        fetch_to_file(
            f"{webserver.url}/files/none.csv?sig=s3cret",
            settings_for(webserver, tmp_path),
            tmp_path / "spool",
        )
    assert refused.value.status_code == 422
    assert refused.value.message == f"{webserver.url}/files/none.csv?...: answered 404 Not Found"


def test_file_urls_are_read_in_place_under_listed_folders_only(tmp_path: Path) -> None:
    listed, other = tmp_path / "dumps", tmp_path / "other"
    listed.mkdir()
    other.mkdir()
    (listed / "a.csv").write_text("text\nfine\n")
    (other / "b.csv").write_text("text\nfine\n")
    settings = Settings(url_allow="http://127.0.0.1/", url_file_dirs=str(listed))
    with fetched(f"file://{listed}/a.csv", settings) as found:
        assert (found.path, found.spooled, found.size) == (listed / "a.csv", False, 10)
    assert (listed / "a.csv").exists(), "a local source is never deleted"
    with pytest.raises(URLRefusedError, match="REVIEWSCORE_URL_FILE_DIRS"):
        fetch_to_file(f"file://{other}/b.csv", settings, tmp_path / "spool")


def test_a_file_replaced_mid_fetch_fails_clearly_rather_than_splicing_two_files(
    webserver: WebServer, tmp_path: Path
) -> None:
    put(webserver, "dump.csv", 2 * 1024 * KIB)
    settings = settings_for(webserver, tmp_path, fetch_range_bytes=512 * KIB)
    received = [0]
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            fetch_to_file(
                f"{webserver.url}/slow/dump.csv",
                settings,
                tmp_path / "spool",
                on_progress=lambda n: received.__setitem__(0, n),
            )
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    thread = threading.Thread(target=fetch)
    thread.start()
    wait_for(lambda: received[0] > 256 * KIB, 20, "the fetch to be under way")
    webserver.stop()
    replaced = webserver.root / "dump.csv.new"
    replaced.write_bytes(os.urandom(2 * 1024 * KIB))
    stat = replaced.stat()
    os.utime(replaced, (stat.st_atime, stat.st_mtime + 60))  # nginx's ETag is mtime and size
    replaced.replace(webserver.root / "dump.csv")
    webserver.start()
    thread.join(60)
    error = outcome.get("error")
    assert isinstance(error, SourceFetchError) and "changed during the fetch" in error.message
    assert list((tmp_path / "spool").iterdir()) == []


def test_requests_go_to_the_checked_address_with_the_url_host_named() -> None:
    from reviewscore.core.byte_ranges import Target
    from reviewscore.core.urls import CheckedURL

    target = Target.of(CheckedURL("https://data.example.com:8443/a.csv?sig=x", ("203.0.113.9",)))
    assert target.url == "https://203.0.113.9:8443/a.csv?sig=x"
    assert target.headers == {"Host": "data.example.com:8443"}
    assert target.extensions == {"sni_hostname": "data.example.com"}
    assert target.shown == "https://data.example.com:8443/a.csv?..."


def test_a_source_slower_than_the_minimum_rate_is_given_up(
    webserver: WebServer, tmp_path: Path
) -> None:
    # /slow/ sends 256 KiB/s: under a minimum of 1 MiB/s once the 1 s grace is over.
    put(webserver, "dump.csv", 4 * 1024 * KIB)
    settings = settings_for(
        webserver,
        tmp_path,
        fetch_parallel=1,
        upload_min_bytes_per_s=1024 * KIB,
        upload_idle_timeout_s=1,
    )
    with pytest.raises(SourceFetchError, match="UPLOAD_MIN_BYTES_PER_S"):
        fetch_to_file(f"{webserver.url}/slow/dump.csv", settings, tmp_path / "spool")
    assert list((tmp_path / "spool").iterdir()) == []
