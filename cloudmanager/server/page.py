"""The node's page: ``GET /`` shows the cache, the files and the hosts to a logged-in browser.

Without a login, ``GET /`` shows a form asking for the node's token; ``POST
/login`` checks it (constant time, throttled per address) and opens a session
on the server, named by a cookie (auth.py, sessions.py); ``POST /logout`` ends
it on the server.  Server-rendered HTML from the
Jinja2 templates in templates/, everything escaped (file and host names are
other people's data); no script at all, and a Content-Security-Policy that
allows none.  Each file name is a share link that lives a day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import links
from ..config import human_size
from ..manager import CloudManager
from ..numbers import when
from . import parsing
from .auth import Access
from .settings import Settings

#: The most files listed (the newest ones); the page says how many more there are.
MAX_FILES = 500
#: The largest login form read (anyone may send one: it is refused unread beyond this).
MAX_FORM_BYTES = 8192
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the links carry their signature
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class FileView:
    """One line of the files table."""

    hash: str
    name: str
    size: str
    date: str
    cached: str
    hosts: list[str]
    link: str


@dataclass(frozen=True)
class HostView:
    """One line of the hosts table."""

    name: str
    url: str
    active: bool
    last_ok: str
    last_error: str | None
    last_error_time: str
    failures: int


class Page:
    """The page's three endpoints over one node."""

    def __init__(self, manager: CloudManager, settings: Settings, access: Access):
        self.manager = manager
        self.settings = settings
        self.access = access
        self.templates = Environment(loader=PackageLoader("cloudmanager.server", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))

    def _render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def _login(self, problem: str | None = None, status: int = 200) -> HTMLResponse:
        return self._render("login.html", status, problem=problem)

    async def show(self, request: Request) -> Response:
        """The node, to a logged-in browser; the login form otherwise."""
        if not self.access.logged_in(request):
            return self._login()
        return self._render("node.html", **await anyio.to_thread.run_sync(self._view))

    async def login(self, request: Request) -> Response:
        """Check the token from the form; log in and go to the page, or show the form again."""
        length = parsing.content_length(request)
        if length is None or length > MAX_FORM_BYTES:
            return self._login("That form is too large.", 413)
        async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
            given = form.get("token")
        if not isinstance(given, str) or not given:
            return self._login("Enter the node's token.", 401)
        try:
            right = self.access.check(request, given)
        except HTTPException as exc:  # 429: this address gave too many wrong tokens lately
            page = self._login(f"Too many wrong tokens: {exc.detail.rpartition(': ')[2]}.", exc.status_code)
            page.headers.update(exc.headers or {})
            return page
        if not right:
            return self._login("Wrong token.", 403)
        response = RedirectResponse("/", status_code=303)
        self.access.log_in(response)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (everywhere: its cookie no longer works) and go back to the form."""
        response = RedirectResponse("/", status_code=303)
        self.access.log_out(request, response)
        return response

    def _view(self) -> dict[str, Any]:
        """What the page shows, read from the node in a few queries (blocking: run in a thread)."""
        cm = self.manager
        view = cm.view(MAX_FILES)
        lifetime = min(links.PAGE_LINK_SECONDS, cm.longest_link())
        expires = int(time.time()) + lifetime
        files = [FileView(hash=f.record.hash, name=f.record.name, size=human_size(f.record.size),
                          date=when(f.record.datetime), hosts=f.holders,
                          cached="pinned" if f.entry.pinned else ("yes" if f.entry.cached else "no"),
                          link=links.link_path(self.settings.secret, f.record.hash, expires))
                 for f in view.files]
        hosts = [HostView(name=h.host.name, url=h.host.url(), active=h.host.active,
                          last_ok=when(h.health.last_ok), last_error=h.health.last_error,
                          last_error_time=when(h.health.last_error_time), failures=h.health.failures)
                 for h in view.hosts]
        used, capacity = view.used, view.capacity
        return {
            "capacity": capacity, "used": used,
            "capacity_text": human_size(capacity), "used_text": human_size(used),
            "percent": f"{(used / capacity if capacity else 0.0):.1%}",
            "files": files, "total": view.total, "hidden": max(0, view.total - len(files)),
            "hosts": hosts, "link_lifetime": links.describe_seconds(lifetime),
            "node_url": self.settings.public_url,
        }
