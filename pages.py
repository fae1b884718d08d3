"""The web pages: the customer chat at ``/chat``, the L2 desk at ``/desk``, the lead's insights, assets at ``/static``.

``/insights`` is both the lead's JSON (api/routes/lead.py) and, for a browser asking for HTML, the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

# The pages ship in the source tree beside this module, as the bundled runbook pack does.
WEB_DIR = Path(__file__).resolve().parent / "web"

# Everything the pages load comes from this origin: no CDN, no inline script, no framing by other sites.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def wants_page(accept: str | None) -> bool:
    """A browser navigating (HTML before JSON in Accept), not a program reading data."""
    accept = (accept or "").lower()
    return "text/html" in accept and "application/json" not in accept


def page(name: str, web_dir: Path = WEB_DIR) -> FileResponse:
    """One of the pages, with the same-origin policy headers."""
    return FileResponse(web_dir / name, media_type="text/html", headers=_PAGE_HEADERS)


def mount_pages(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """Serve the chat and desk pages and their assets from ``web_dir``.

    Raises:
        FileNotFoundError: ``web_dir`` lacks a page (an install without the ``web/`` folder).
    """
    for page in ("chat.html", "desk.html", "insights.html"):
        if not (web_dir / page).is_file():
            raise FileNotFoundError(f"{web_dir / page} is missing; the web pages ship in the source tree's web/ folder")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/chat", status_code=307)

    @app.get("/chat", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(web_dir / "chat.html", media_type="text/html", headers=_PAGE_HEADERS)

    @app.get("/desk", include_in_schema=False)
    def desk_page() -> FileResponse:
        return FileResponse(web_dir / "desk.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=web_dir), name="static")
