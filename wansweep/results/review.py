"""Blind side-by-side review: `wansweep review STORE --sweep NAME` serves a page only its user
can drive.

Two videos of the same pair (same image, prompt and seed; two arms) play in sync, sides
randomised and arm names hidden until the vote, with the prompt and the input image beside
them. Votes (left / right / tie, or skip, by key or click) are written to the archive as they
are cast, one object each (``sweeps/<name>/votes/<rater>/<id>.json``): append-only, any number
of raters and sessions, nothing lost when the server is killed. A rater is not shown a pair
they already voted on; a skipped pair comes back in a later session. Videos are streamed
through this server from the store (local or S3), with ``Range`` requests, so both players
seek. :func:`read_votes` gives the votes to the report (:func:`wansweep.results.stats.vote_table`,
:func:`wansweep.results.stats.bradley_terry`).

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
import math
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from wansweep.store import Store
from wansweep.store.layout import VIDEO, job_file, vote_key, vote_keys

RATER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_VOTE = 4096  # bytes of a vote's body
CHOICES = ("left", "right", "tie", "skip")


@dataclass(frozen=True)
class Pair:
    pair_id: str  # stable: the two job keys, sorted
    jobs: tuple[str, str]
    arms: tuple[str, str]
    prompt: str | None = None
    row_id: str | None = None
    seed: int | None = None
    image_uri: str | None = None


def review_pairs(frame: pd.DataFrame) -> list[Pair]:
    """Every pair of archived jobs of two arms that share image, prompt and seed (the first
    job of each arm in a group), groups in key order, arms in name order. One pass over
    the rows: per-group pandas calls cost seconds at 100,000 rows."""
    done = frame[frame["status"] == "succeeded"]
    columns = ["image_sha256", "prompt", "seed_requested", "arm", "job_key"]
    extra = [c for c in ("row_id", "image_uri") if c in done.columns]
    groups: dict[tuple, dict[str, str]] = {}
    about: dict[tuple, dict[str, Any]] = {}
    for values in done[columns + extra].itertuples(index=False, name=None):
        image, prompt, seed, arm, key = values[:5]
        group = tuple(None if _missing(v) else v for v in (image, prompt, seed))
        groups.setdefault(group, {}).setdefault(arm, key)
        about.setdefault(group, dict(zip(extra, values[5:])))
    pairs = []
    for group in sorted(groups, key=lambda g: tuple((v is None, 0 if v is None else v) for v in g)):
        by_arm = sorted(groups[group].items())
        info = about[group]
        seed = None if group[2] is None else int(group[2])
        for (arm_x, job_x), (arm_y, job_y) in combinations(by_arm, 2):
            jobs = (job_x, job_y)
            pairs.append(
                Pair(
                    "-".join(sorted(jobs)),
                    jobs,
                    (arm_x, arm_y),
                    group[1],
                    _text(info.get("row_id")),
                    seed,
                    _text(info.get("image_uri")),
                )
            )
    return pairs


def _missing(value: object) -> bool:
    """None or NaN (NaN is not equal to itself: it cannot be a dict key)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: object) -> str | None:
    return None if _missing(value) else str(value)


def read_votes(store: Store, sweep: str) -> pd.DataFrame:
    """Every vote of a sweep: pair, arms, winner (an arm, "tie" or "skip"), rater, time."""
    columns = ["pair_id", "arm_a", "arm_b", "winner", "rater", "at"]
    rows = []
    for key in vote_keys(store, sweep):
        vote = store.get_json(key)
        if isinstance(vote, dict) and all(c in vote for c in columns):
            rows.append({c: vote[c] for c in columns})
    return pd.DataFrame(rows, columns=columns)


class Review:
    """The state of one review session: the pairs, this rater's queue, the media tokens."""

    def __init__(self, store: Store, sweep: str, pairs: list[Pair], rater: str, seed=None):
        if not RATER_RE.match(rater):
            raise ValueError("rater: lowercase letters, digits, '-' or '_' (at most 40)")
        self.store, self.sweep, self.rater = store, sweep, rater
        votes = read_votes(store, sweep)
        mine = votes[(votes["rater"] == rater) & (votes["winner"] != "skip")]
        done = set(mine["pair_id"])
        self.pairs = {p.pair_id: p for p in pairs}
        self.total = len(pairs)
        self.queue = [p for p in pairs if p.pair_id not in done]
        self.rng = random.Random(seed)
        self.rng.shuffle(self.queue)
        self.voted = self.total - len(self.queue)  # decided: left, right or tie
        self.skipped = 0  # this session
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> ("video", job) | ("input", uri)
        self.shown: dict[str, tuple[str, str]] = {}  # pair id -> (left job, right job)
        self.lock = threading.Lock()
        self._inputs: OrderedDict[str, bytes] = OrderedDict()  # a few input images, read once

    def progress(self) -> dict[str, int]:
        return {"voted": self.voted, "skipped": self.skipped, "total": self.total}

    def next(self) -> dict:
        with self.lock:
            if not self.queue:
                return {"done": True, "progress": self.progress()}
            pair = self.queue[0]
            if pair.pair_id not in self.shown:
                left, right = pair.jobs if self.rng.random() < 0.5 else pair.jobs[::-1]
                self.shown[pair.pair_id] = (left, right)
            left, right = self.shown[pair.pair_id]
            shown_image = pair.image_uri and not pair.image_uri.startswith("data:")
            return {
                "done": False,
                "pair": pair.pair_id,
                "left": self._token("video", left),
                "right": self._token("video", right),
                "input": self._token("input", pair.image_uri) if shown_image else None,
                "prompt": pair.prompt,
                "row": pair.row_id,
                "seed": pair.seed,
                "progress": self.progress(),
            }

    def _token(self, kind: str, target: str) -> str:
        token = secrets.token_urlsafe(12)
        self.tokens[token] = (kind, target)
        return token

    def vote(self, pair_id: str, choice: str) -> dict:
        """Record a vote (written to the archive before the answer); reveals the arms."""
        if choice not in CHOICES:
            raise ValueError("choice must be left, right, tie or skip")
        with self.lock:
            pair = self.pairs.get(pair_id)
            if pair is None or pair_id not in self.shown:
                raise KeyError(pair_id)
            left, right = self.shown[pair_id]
            arm = dict(zip(pair.jobs, pair.arms))
            winner = {"left": arm[left], "right": arm[right]}.get(choice, choice)
            vote = {
                "pair_id": pair_id,
                "arm_a": pair.arms[0],
                "arm_b": pair.arms[1],
                "jobs": list(pair.jobs),
                "left": left,
                "right": right,
                "choice": choice,
                "winner": winner,
                "rater": self.rater,
                "at": time.time(),
            }
            vote_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            self.store.put_json(vote_key(self.sweep, self.rater, vote_id), vote)
            if self.queue and self.queue[0].pair_id == pair_id:
                self.queue.pop(0)
                if choice == "skip":
                    self.skipped += 1
                else:
                    self.voted += 1
            return {"left_arm": arm[left], "right_arm": arm[right], "winner": winner}

    def media(self, token: str) -> tuple[str, str] | None:
        return self.tokens.get(token)

    def input_image(self, uri: str) -> bytes:
        """The pair's input image (read within the bounds of every input read), kept for the
        few pairs around the one on screen."""
        from wansweep.plan.media_index import load_media

        with self.lock:
            if uri in self._inputs:
                self._inputs.move_to_end(uri)
                return self._inputs[uri]
        data = load_media(uri)
        with self.lock:
            self._inputs[uri] = data
            while len(self._inputs) > 8:
                self._inputs.popitem(last=False)
        return data


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
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    url_token = None if host in LOOPBACK else secrets.token_urlsafe(24)
    names = {host, *allow_hosts} | (set(LOOPBACK) if host in LOOPBACK else set())
    app = _app(review, token, url_token, _allowed_hosts(names, port))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="wansweep-review", daemon=True
    ).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
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
