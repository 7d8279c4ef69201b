"""`climb report --serve`: the HTML report on a local http:// address.

A browser refuses file:// links from the Dagster UI's http:// page, so the report is served
over HTTP instead. Only the report page is served (every other path is a 404), on the loopback
interface by default, so the rest of the output folder stays private.
"""

from __future__ import annotations

import http.server
from collections.abc import Callable
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def report_handler(report: Path) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler serving `report` at / and /<its name>; read on each request, so a
    rewritten report shows on reload."""

    class ReportHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path.split("?")[0] not in ("/", f"/{report.name}"):
                self.send_error(404, f"only the report is served: /{report.name}")
                return
            body = report.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request would bury the address printed at start

    return ReportHandler


def report_server(
    report: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> http.server.ThreadingHTTPServer:
    """A server for `report` bound to host:port (port 0: any free port)."""
    return http.server.ThreadingHTTPServer((host, port), report_handler(report))


def serve_report(
    report: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve `report` until Ctrl-C, after printing its address."""
    with report_server(report, host, port) as server:
        bound_host, bound_port = server.server_address[:2]
        echo(
            f"serving the report on http://{bound_host}:{bound_port}/{report.name}  (Ctrl-C stops)"
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            echo("stopped serving the report")
