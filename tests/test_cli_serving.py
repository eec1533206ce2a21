"""`sweet serve` on a busy port and `sweet loadtest` exit codes, through the CLI (loopback only, bounded)."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from tests.test_cli_help import run

pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_a_busy_port_fails_in_one_line_before_loading_the_model(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        # the run directory does not exist: the port is checked first, so the error is about the port
        code, _, err = run(["serve", str(tmp_path / "no-run"), "--port", str(port)])
    assert code == 2
    assert err.strip() == f"error: port {port} on 127.0.0.1 is already in use; pick another with --port N (or stop the process that listens there)"


def test_loadtest_with_no_server_listening_exits_2():
    port = _free_port()
    code, _, err = run(["loadtest", f"http://127.0.0.1:{port}", "--requests", "2", "--duration-s", "5"])
    assert code == 2
    assert "no server is listening at" in err and err.count("\n") == 1


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the handler's API)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_loadtest_whose_requests_fail_exits_1():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(["loadtest", url, "--requests", "3", "--concurrency", "1", "--duration-s", "10",
                              "--timeout-s", "5"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert code == 1
    assert "0/3 requests ok" in out
    assert err.startswith("error: 3 of 3 requests failed")
