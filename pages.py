"""The web pages: the customer chat at ``/chat``, the L2 desk at ``/desk``, their assets at ``/static``."""

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


def mount_pages(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """Serve the chat and desk pages and their assets from ``web_dir``.

    Raises:
        FileNotFoundError: ``web_dir`` lacks a page (an install without the ``web/`` folder).
    """
    for page in ("chat.html", "desk.html"):
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
