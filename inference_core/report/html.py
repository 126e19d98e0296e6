"""Self-contained HTML pages: one file, inline CSS/JS/data, nothing fetched, all data escaped.

Data goes into the page as JSON inside <script type="application/json"> with `<`, `>` and `&`
written as \\u003c, \\u003e, \\u0026, so no string in it can close the element; the page's own
script reads it with JSON.parse and puts it into the DOM with textContent only. Server-side HTML
is built with html.escape. A Content-Security-Policy allows no network at all and only the page's
own script (by its SHA-256), so even a mistake in escaping could not run injected code.
"""
from __future__ import annotations

import base64
import hashlib
import html
from importlib import resources
from typing import Any, Iterable, Iterator

import orjson

ASSET_PACKAGE = "inference_core.report"
ASSET_DIR = "assets"
_JSON_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"))


def esc(value: Any) -> str:
    """Text for HTML element content or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def asset(name: str) -> str:
    """A CSS or JS file shipped in inference_core/report/assets/."""
    return resources.files(ASSET_PACKAGE).joinpath(ASSET_DIR, name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> bytes:
    """JSON that is safe inside a <script type="application/json"> element, as UTF-8."""
    raw = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    for needle, replacement in _JSON_ESCAPES:
        raw = raw.replace(needle, replacement)
    return raw


def _script_hash(code: str) -> str:
    digest = hashlib.sha256(code.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def page(title: str, body: str, scripts: tuple[str, ...] = (), data: Any = None,
         data_id: str = "page-data") -> str:
    """A whole HTML document: shared CSS, `body` (already escaped HTML), data, then scripts."""
    return b"".join(page_parts(title, body, scripts, data, data_id)).decode("utf-8")


def page_parts(title: str, body: str, scripts: tuple[str, ...] = (), data: Any = None,
               data_id: str = "page-data", data_parts: Iterable[bytes] | None = None,
               ) -> Iterator[bytes]:
    """page() as UTF-8 pieces to write one after the other: a run's report carries tens of MB
    of data, never joined into one string. `data_parts`: the data as JSON already made safe
    for the page (json_for_script), in pieces made as they are written."""
    code = [asset(name) for name in scripts]
    allowed = " ".join(_script_hash(c) for c in code) or "'none'"
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src {allowed}; base-uri 'none'; form-action 'none'")
    head = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{asset('report.css')}</style>",
        "</head>",
        "<body>",
        body,
        "",
    ])
    yield head.encode("utf-8")
    if data is not None or data_parts is not None:
        yield f'<script type="application/json" id="{esc(data_id)}">'.encode("utf-8")
        yield from [json_for_script(data)] if data_parts is None else data_parts
        yield b"</script>\n"
    tail = [f"<script>{c}</script>" for c in code] + ["</body>", "</html>", ""]
    yield "\n".join(tail).encode("utf-8")
