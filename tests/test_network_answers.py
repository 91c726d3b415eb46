"""core/network.py's unreachable() against a server run here: an HTTP error page is a reason, not a success (some
networks answer every address with one), and a url without a port is probed on its scheme's port."""

import http.server
import socket
import threading

from core import network


class ErrorPage(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(status):
    server = http.server.HTTPServer(('127.0.0.1', 0), ErrorPage)
    server.status = status
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_http_error_page_is_named_and_a_success_is_none():
    for status, expected in ((404, 'HTTP 404'), (503, 'HTTP 503'), (200, None)):
        server = serve(status)
        try:
            url = f'http://127.0.0.1:{server.server_address[1]}/api/datasets/x'
            got = network.unreachable(url, timeout=5, http=True)
            assert (got is None) if expected is None else (got == f'{expected} from {url}'), (status, got)
        finally:
            server.shutdown()
            server.server_close()


def test_a_url_without_a_port_is_probed_on_443_for_https_and_80_for_http(monkeypatch):
    seen = []

    class Closed:
        def close(self):
            pass

    def connect(address, timeout=None):
        seen.append(address)
        return Closed()
    monkeypatch.setattr(socket, 'create_connection', connect)
    assert network.unreachable('https://example.org/a', timeout=5) is None
    assert network.unreachable('http://example.org/a', timeout=5) is None
    assert network.unreachable('https://example.org:8443/a', timeout=5) is None
    assert seen == [('example.org', 443), ('example.org', 80), ('example.org', 8443)]
