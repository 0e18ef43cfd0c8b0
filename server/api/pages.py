"""HTML pages (the UI, the API docs): served with a local-only content policy."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse, Response

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# The pages load nothing from outside, and the browser is told to refuse
# anything that tries (Redoc, for one, asks a CDN for its logo).
LOCAL_ONLY_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def local_page(name: str) -> Response:
    html = (TEMPLATES / name).read_text()
    return HTMLResponse(html, headers={"Content-Security-Policy": LOCAL_ONLY_CSP})
