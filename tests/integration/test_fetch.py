"""Worker-side input fetching against a real HTTP server on the loopback interface."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from renderfarm.core import inputs
from renderfarm.core.settings import Settings
from renderfarm.worker.errors import InvalidInput, InvalidMedia, TransientError
from renderfarm.worker.fetch import local_input

BODY = bytes(range(256)) * 64  # 16 KiB
BIG = b"\x00" * (64 * 1024)


class MediaServer:
    """A tiny HTTP server that records every request it gets."""

    def __init__(self, host: str = "127.0.0.1"):
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.redirect_to = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                if self.path == "/clip.mp4":
                    self._send(200, BODY)
                elif self.path == "/big-declared.mp4":
                    self._send(200, BIG)
                elif self.path == "/big-streamed.mp4":
                    # No Content-Length: the limit must hold while streaming.
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(16):
                        self.wfile.write(BIG[:4096])
                    self.close_connection = True
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/busy":
                    self._send(503, b"busy")
                else:
                    self._send(404, b"no")

            def _send(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> "MediaServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with MediaServer() as running:
        yield running


@pytest.fixture
def work_dir(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", **overrides)


def test_loopback_urls_are_refused_by_default_without_any_request(server, tmp_path, work_dir):
    with pytest.raises(InvalidInput, match="private or reserved"):
        local_input(server.url("/clip.mp4"), settings(tmp_path), work_dir)
    assert server.requests == []
    assert list(work_dir.iterdir()) == []


def test_with_private_fetch_allowed_the_download_lands_in_the_work_dir(server, tmp_path, work_dir):
    path = local_input(server.url("/clip.mp4"), settings(tmp_path, allow_private_fetch=True), work_dir)
    assert path.parent == work_dir
    assert path.read_bytes() == BODY
    assert [p for p, _ in server.requests] == ["/clip.mp4"]


def test_a_host_name_is_connected_to_at_its_checked_address_with_its_host_header(server, tmp_path, work_dir):
    path = local_input(server.url("/clip.mp4", host="localhost"), settings(tmp_path, allow_private_fetch=True), work_dir)
    assert path.read_bytes() == BODY
    (_, headers), = server.requests
    assert headers["Host"] == f"localhost:{server.port}"


@pytest.mark.parametrize("path", ["/big-declared.mp4", "/big-streamed.mp4"])
def test_a_body_over_the_download_limit_is_refused_and_nothing_is_left(server, tmp_path, work_dir, path):
    with pytest.raises(InvalidInput, match="limit"):
        local_input(server.url(path), settings(tmp_path, allow_private_fetch=True, http_max_download_bytes=32 * 1024), work_dir)
    assert list(work_dir.iterdir()) == []


def test_a_body_within_the_limit_is_kept_whole(server, tmp_path, work_dir):
    path = local_input(server.url("/big-declared.mp4"), settings(tmp_path, allow_private_fetch=True, http_max_download_bytes=len(BIG)), work_dir)
    assert path.stat().st_size == len(BIG)


def test_a_redirect_to_loopback_is_refused_when_private_fetch_is_disallowed(tmp_path, work_dir, monkeypatch):
    # The first hop must pass the address rules, so it is served from 127.0.0.2,
    # which this test alone treats as public; the redirect then points at 127.0.0.1.
    real_rule = inputs.is_forbidden_address
    monkeypatch.setattr(inputs, "is_forbidden_address", lambda address: address != "127.0.0.2" and real_rule(address))
    with MediaServer(host="127.0.0.2") as entry, MediaServer() as internal:
        entry.redirect_to = internal.url("/clip.mp4")
        with pytest.raises(InvalidInput, match="private or reserved"):
            local_input(entry.url("/redirect"), settings(tmp_path), work_dir)
        assert [p for p, _ in entry.requests] == ["/redirect"]
        assert internal.requests == []
    assert list(work_dir.iterdir()) == []


def test_a_redirect_is_followed_when_private_fetch_is_allowed(tmp_path, work_dir):
    with MediaServer() as entry, MediaServer() as target:
        entry.redirect_to = target.url("/clip.mp4")
        path = local_input(entry.url("/redirect"), settings(tmp_path, allow_private_fetch=True), work_dir)
        assert path.read_bytes() == BODY
        assert [p for p, _ in target.requests] == ["/clip.mp4"]


def test_a_redirect_to_another_scheme_is_refused(server, tmp_path, work_dir):
    server.redirect_to = "file:///etc/passwd"
    with pytest.raises(InvalidInput, match="scheme"):
        local_input(server.url("/redirect"), settings(tmp_path, allow_private_fetch=True), work_dir)


def test_a_redirect_loop_ends(server, tmp_path, work_dir):
    server.redirect_to = "/redirect"
    with pytest.raises(InvalidInput, match="redirects"):
        local_input(server.url("/redirect"), settings(tmp_path, allow_private_fetch=True), work_dir)
    assert 2 <= len(server.requests) <= 10


def test_server_errors_are_transient_and_missing_files_are_not(server, tmp_path, work_dir):
    allowed = settings(tmp_path, allow_private_fetch=True)
    with pytest.raises(TransientError, match="503"):
        local_input(server.url("/busy"), allowed, work_dir)
    with pytest.raises(InvalidMedia, match="404"):
        local_input(server.url("/nothing.mp4"), allowed, work_dir)
    assert list(work_dir.iterdir()) == []


def test_file_inputs_are_confined_to_the_input_roots(tmp_path, work_dir):
    conf = settings(tmp_path)
    inside = conf.input_roots[0] / "clip.mp4"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"media")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"secret")
    assert local_input(inside.as_uri(), conf, work_dir) == inside.resolve()
    with pytest.raises(InvalidInput, match="outside"):
        local_input(outside.as_uri(), conf, work_dir)
    with pytest.raises(InvalidMedia, match="does not exist"):
        local_input((inside.parent / "gone.mp4").as_uri(), conf, work_dir)
    with pytest.raises(InvalidInput, match="scheme"):
        local_input("ftp://example.com/a.mp4", conf, work_dir)


def test_earlier_outputs_are_readable_but_nothing_else_under_the_data_folder(tmp_path, work_dir):
    """A workflow step's input is an earlier job's output: the outputs folder is
    readable beside the input roots; the rest of the data folder is not."""
    conf = settings(tmp_path)
    output = conf.outputs_dir / "job-1" / "chunk_0000.mkv"
    output.parent.mkdir(parents=True)
    output.write_bytes(b"media")
    elsewhere = conf.data_dir / "logs" / "worker.log"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"log")
    assert local_input(output.as_uri(), conf, work_dir) == output.resolve()
    with pytest.raises(InvalidInput, match="outside"):
        local_input(elsewhere.as_uri(), conf, work_dir)
