"""The review page's server (starlette on uvicorn): a page only its user can drive.

Who can drive it (votes are the A/B answer, so a vote nobody cast must be impossible):

- it binds loopback and a free port by default; a request whose ``Host`` is not the bound
  address (or a name the user allowed) is refused, so a web page that rebinds its own name to
  127.0.0.1 reaches nothing;
- reading a pair and voting need the session's token, which only the page holds (a header a
  page of another origin cannot send without a CORS answer it never gets), votes a JSON body,
  and a foreign ``Origin`` is refused: a cross-site form posts nothing;
- bound beyond loopback, the URL carries a secret token (as Jupyter's does), kept in a cookie
  after the first visit; without it nothing is served;
- the page may not be framed, and loads nothing from elsewhere (its CSP).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from wansweep.results.review import Review
from wansweep.serve import bind, serve_in_thread
from wansweep.store import Store
from wansweep.store.layout import VIDEO, job_file

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_VOTE = 4096  # bytes of a vote's body


class ReviewServer:
    """A running review page: ``url`` is what the user opens (whole, with its token when the
    page is reachable beyond loopback)."""

    def __init__(self, server: Any, host: str, port: int, token: str, url_token: str | None):
        self._server, self.host, self.port = server, host, port
        self.token, self.url_token = token, url_token
        shown = f"[{host}]" if ":" in host else host
        self.base = f"http://{shown}:{port}"
        self.url = f"{self.base}/" + (f"?token={url_token}" if url_token else "")

    def shutdown(self) -> None:
        self._server.should_exit = True


def serve(
    review: Review, host: str = "127.0.0.1", port: int = 0, allow_hosts: tuple[str, ...] = ()
) -> ReviewServer:
    """Start the review server (returned running; ``url`` says where)."""
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    url_token = None if host in LOOPBACK else secrets.token_urlsafe(24)
    names = {host, *allow_hosts} | (set(LOOPBACK) if host in LOOPBACK else set())
    app = _app(review, token, url_token, _allowed_hosts(names, port))
    server = serve_in_thread(app, sock, "wansweep-review")
    return ReviewServer(server, host, port, token, url_token)


def _allowed_hosts(names: set[str], port: int) -> set[str]:
    """The ``Host`` headers the page answers: the bound name (and loopback's) with its port."""
    allowed = set()
    for name in names:
        shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
        allowed |= {f"{shown}:{port}".lower()}
    return allowed


def _app(review: Review, token: str, url_token: str | None, hosts: set[str]):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    cookie = "wansweep_review"

    def refused(request: Request) -> Response | None:
        """Why a request is not this page's user's (None: it is)."""
        if request.headers.get("host", "").lower() not in hosts:
            return JSONResponse({"detail": "unknown host"}, 421)
        if url_token and not secrets.compare_digest(request.cookies.get(cookie, ""), url_token):
            return JSONResponse({"detail": "open the URL wansweep printed"}, 403)
        return None

    def api_refused(request: Request) -> Response | None:
        """What reads pairs and votes also needs: the page's token, and no foreign Origin."""
        if (answer := refused(request)) is not None:
            return answer
        origin = request.headers.get("origin")
        if origin is not None and origin.lower().split("://", 1)[-1] not in hosts:
            return JSONResponse({"detail": "foreign origin"}, 403)
        if not secrets.compare_digest(request.headers.get("x-review-token", ""), token):
            return JSONResponse({"detail": "no session token"}, 403)
        return None

    async def page(request: Request) -> Response:
        if url_token and secrets.compare_digest(request.query_params.get("token", ""), url_token):
            answer = RedirectResponse("/", 303)  # the token leaves the URL for a cookie
            answer.set_cookie(cookie, url_token, httponly=True, samesite="strict")
            return answer
        if (answer := refused(request)) is not None:
            return answer
        html = PAGE.replace("{{TOKEN}}", token)
        return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def next_pair(request: Request) -> Response:
        if (answer := api_refused(request)) is not None:
            return answer
        return JSONResponse(await run_in_threadpool(review.next), headers=NO_STORE)

    async def vote(request: Request) -> Response:
        if (answer := api_refused(request)) is not None:
            return answer
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"detail": "votes are JSON"}, 415)
        body = await request.body()
        if len(body) > MAX_VOTE:
            return JSONResponse({"detail": "too large"}, 413)
        try:
            asked = json.loads(body)
            result = await run_in_threadpool(review.vote, str(asked["pair"]), str(asked["choice"]))
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"detail": f"bad vote: {exc}"}, 400)
        return JSONResponse(result, headers=NO_STORE)

    async def media(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        found = review.media(request.path_params["token"])
        if found is None:
            return JSONResponse({"detail": "unknown media"}, 404)
        kind, target = found
        if kind == "input":
            try:
                data = await run_in_threadpool(review.input_image, target)
            except Exception:  # noqa: BLE001 (an input that cannot be read is not shown)
                return JSONResponse({"detail": "input image not readable"}, 404)
            return Response(data, media_type="image/*", headers=NO_STORE)
        return await run_in_threadpool(_video, review.store, target, request.headers.get("range"))

    def _video(store: Store, job_key: str, asked: str | None) -> Response:
        key = job_file(job_key, VIDEO)
        size = store.size(key)
        if size is None:
            return JSONResponse({"detail": "video not in the archive"}, 404)
        span = _byte_range(asked, size)
        if span is None:  # no Range (or one we cannot serve): the whole video
            body = store.iter_range(key, 0, size - 1)
            headers = {"Accept-Ranges": "bytes", "Content-Length": str(size), **NO_STORE}
            return StreamingResponse(body, 200, headers=headers, media_type="video/mp4")
        start, end = span
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Range": f"bytes {start}-{end}/{size}",
            "Content-Length": str(end - start + 1),
            **NO_STORE,
        }
        body = store.iter_range(key, start, end)
        return StreamingResponse(body, 206, headers=headers, media_type="video/mp4")

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/api/next", next_pair, methods=["GET"]),
            Route("/api/vote", vote, methods=["POST"]),
            Route("/media/{token}", media, methods=["GET"]),
        ]
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range: bytes=a-b`` header asks for (a suffix ``-n`` too), within
    ``size``; None when there is none or it cannot be served as one range."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not match or size == 0 or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(size - 1, int(last) if last else size - 1)
    return (start, end) if start <= end else None


NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self'; media-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="review-token" content="{{TOKEN}}"><title>wansweep review</title>
<style>
*{box-sizing:border-box}
body{font:15px system-ui,sans-serif;margin:0;padding:10px 14px;background:#111;color:#eee}
h2{font-size:17px;margin:4px 0 8px}
#about{display:flex;gap:10px;align-items:flex-start;margin-bottom:8px}
#input{max-height:72px;max-width:128px;border-radius:4px;object-fit:contain;background:#000}
#prompt{color:#ccc;font-size:13px;max-height:72px;overflow:auto;overflow-wrap:anywhere;flex:1}
.pair{display:flex;gap:10px;flex-wrap:wrap}
.side{flex:1 1 300px;min-width:0;text-align:center}
video{width:100%;max-height:52vh;object-fit:contain;background:#000;border-radius:6px}
button{font-size:15px;padding:8px 14px;margin:4px;border-radius:6px;border:0;cursor:pointer}
button:disabled{opacity:.35;cursor:default}
#progress{color:#aaa;font-weight:normal} #reveal{color:#8c8;min-height:1.4em}
kbd{background:#333;padding:1px 5px;border-radius:3px}
body[data-state=done] .pair, body[data-state=done] #about{display:none}
@media (max-width:700px){video{max-height:30vh} .side{flex-basis:100%}}
</style></head><body>
<h2>Which video is better? <span id="progress"></span></h2>
<div id="about"><img id="input" alt="the input image" hidden><div id="prompt"></div></div>
<div class="pair">
 <div class="side"><video id="left" muted loop playsinline></video><br>
  <button id="vote-left">Left is better <kbd>&larr;</kbd></button></div>
 <div class="side"><video id="right" muted loop playsinline></video><br>
  <button id="vote-right">Right is better <kbd>&rarr;</kbd></button></div>
</div>
<p style="text-align:center"><button id="vote-tie">Tie <kbd>&darr;</kbd> <kbd>t</kbd></button>
<button id="vote-skip">Skip <kbd>&uarr;</kbd> <kbd>s</kbd></button></p>
<p id="reveal"></p>
<script>
const TOKEN = document.querySelector('meta[name=review-token]').content;
const H = {'X-Review-Token': TOKEN};
let current = null, busy = false;
const L = document.getElementById('left'), R = document.getElementById('right');
const buttons = [...document.querySelectorAll('button')];
function show(p) {
  const skipped = p.skipped ? `, ${p.skipped} skipped` : '';
  document.getElementById('progress').textContent = `${p.voted} of ${p.total} voted${skipped}`;
}
async function next() {
  const r = await fetch('/api/next', {headers: H}); current = await r.json();
  show(current.progress);
  if (current.done) {
    document.body.dataset.state = 'done'; L.pause(); R.pause();
    L.removeAttribute('src'); R.removeAttribute('src'); L.load(); R.load();
    buttons.forEach(b => b.disabled = true);
    document.getElementById('reveal').textContent += ' All pairs seen. Thank you.'; return;
  }
  const img = document.getElementById('input');
  if (current.input) { img.src = '/media/' + current.input; img.hidden = false; } else img.hidden = true;
  const caption = [current.row && `row ${current.row}`, current.seed != null && `seed ${current.seed}`]
    .filter(Boolean).join(', ');
  document.getElementById('prompt').textContent = (caption ? caption + ': ' : '') + (current.prompt || '');
  L.src = '/media/' + current.left; R.src = '/media/' + current.right;
  Promise.all([L.play().catch(()=>{}), R.play().catch(()=>{})]);
  document.body.dataset.state = 'ready'; document.body.dataset.pair = current.pair;
}
function follow(a, b) {  // one seek moves both players; playback keeps them in step
  a.addEventListener('seeked', () => { if (Math.abs(b.currentTime - a.currentTime) > 0.05) b.currentTime = a.currentTime; });
}
follow(L, R); follow(R, L);
setInterval(() => { if (!L.paused && !L.seeking && !R.seeking && Math.abs(L.currentTime - R.currentTime) > 0.1) R.currentTime = L.currentTime; }, 250);
async function vote(choice) {
  if (busy || !current || current.done) return; busy = true;
  document.body.dataset.state = 'voting';
  try {
    const r = await fetch('/api/vote', {method: 'POST', headers: {...H, 'Content-Type': 'application/json'},
      body: JSON.stringify({pair: current.pair, choice})});
    const a = await r.json();
    document.getElementById('reveal').textContent = r.ok
      ? `Left was ${a.left_arm}, right was ${a.right_arm}: ${choice}.` : `Not recorded: ${a.detail}`;
    await next();
  } finally { busy = false; }
}
for (const c of ['left', 'right', 'tie', 'skip']) document.getElementById('vote-' + c).onclick = () => vote(c);
document.addEventListener('keydown', e => {
  const c = {ArrowLeft: 'left', ArrowRight: 'right', ArrowDown: 'tie', t: 'tie', ArrowUp: 'skip', s: 'skip'}[e.key];
  if (c) { e.preventDefault(); vote(c); }
});
next();
</script></body></html>"""
