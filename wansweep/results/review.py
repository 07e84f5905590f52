"""Blind side-by-side review: `wansweep review STORE --sweep NAME` serves a page on loopback.

Two videos of the same pair (same image, prompt and seed; two arms) play in sync, sides
randomised and arm names hidden until the vote. Votes (left / right / tie / skip, by key or
click) are written to the archive as they are cast, one object each
(``sweeps/<name>/votes/<rater>/<id>.json``): append-only, any number of raters and sessions,
nothing lost when the server is killed. A rater is not shown a pair they already voted on.
Videos are streamed through this server from the store (local or S3), so the page needs no
credentials and no public URL. :func:`read_votes` gives them to the report
(:func:`wansweep.results.stats.vote_table`, :func:`wansweep.results.stats.bradley_terry`).
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations

import pandas as pd

from wansweep.store import Store
from wansweep.store.layout import VIDEO, job_file, vote_key, vote_keys

RATER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class Pair:
    pair_id: str  # stable: the two job keys, sorted
    jobs: tuple[str, str]
    arms: tuple[str, str]


def review_pairs(frame: pd.DataFrame) -> list[Pair]:
    """Every pair of archived jobs of two arms that share image, prompt and seed (the first
    job of each arm in a group), groups in key order, arms in name order. One pass over
    the rows: per-group pandas calls cost seconds at 100,000 rows."""
    done = frame[frame["status"] == "succeeded"]
    columns = ["image_sha256", "prompt", "seed_requested", "arm", "job_key"]
    groups: dict[tuple, dict[str, str]] = {}
    for image, prompt, seed, arm, key in done[columns].itertuples(index=False, name=None):
        group = tuple(None if _missing(v) else v for v in (image, prompt, seed))
        groups.setdefault(group, {}).setdefault(arm, key)
    pairs = []
    for group in sorted(groups, key=lambda g: tuple((v is None, 0 if v is None else v) for v in g)):
        by_arm = sorted(groups[group].items())
        for (arm_x, job_x), (arm_y, job_y) in combinations(by_arm, 2):
            jobs = (job_x, job_y)
            pairs.append(Pair("-".join(sorted(jobs)), jobs, (arm_x, arm_y)))
    return pairs


def _missing(value: object) -> bool:
    """None or NaN (NaN is not equal to itself: it cannot be a dict key)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    """The state of one review server: the pairs, this rater's queue, the videos' tokens."""

    def __init__(self, store: Store, sweep: str, pairs: list[Pair], rater: str, seed=None):
        if not RATER_RE.match(rater):
            raise ValueError("rater: lowercase letters, digits, '-' or '_' (at most 40)")
        self.store, self.sweep, self.rater = store, sweep, rater
        done = set(read_votes(store, sweep).query("rater == @rater")["pair_id"])
        self.pairs = {p.pair_id: p for p in pairs}
        self.total = len(pairs)
        self.queue = [p for p in pairs if p.pair_id not in done]
        self.rng = random.Random(seed)
        self.rng.shuffle(self.queue)
        self.voted = self.total - len(self.queue)
        self.tokens: dict[str, str] = {}  # opaque token -> job key (arm names stay hidden)
        self.shown: dict[str, tuple[str, str]] = {}  # pair id -> (left job, right job)
        self.lock = threading.Lock()

    def next(self) -> dict:
        with self.lock:
            progress = {"voted": self.voted, "total": self.total}
            if not self.queue:
                return {"done": True, "progress": progress}
            pair = self.queue[0]
            if pair.pair_id not in self.shown:
                left, right = pair.jobs if self.rng.random() < 0.5 else pair.jobs[::-1]
                self.shown[pair.pair_id] = (left, right)
            left, right = self.shown[pair.pair_id]
            return {
                "done": False,
                "pair": pair.pair_id,
                "left": self._token(left),
                "right": self._token(right),
                "progress": progress,
            }

    def _token(self, job_key: str) -> str:
        token = secrets.token_urlsafe(12)
        self.tokens[token] = job_key
        return token

    def vote(self, pair_id: str, choice: str) -> dict:
        """Record a vote (written to the archive before the answer); reveals the arms."""
        if choice not in ("left", "right", "tie", "skip"):
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
                self.voted += 1
            return {"left_arm": arm[left], "right_arm": arm[right], "winner": winner}

    def video(self, token: str):
        job_key = self.tokens.get(token)
        return None if job_key is None else self.store.iter_chunks(job_file(job_key, VIDEO))


def serve(review: Review, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the review server (returned running; ``server_address`` says where)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page moved on (a new pair, a seek): votes are written before answers

        def _json(self, value, status=200):
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/":
                data = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline'")
                self.end_headers()
                self.wfile.write(data)
            elif self.path == "/api/next":
                self._json(review.next())
            elif self.path.startswith("/video/"):
                chunks = review.video(self.path.removeprefix("/video/"))
                if chunks is None:
                    return self._json({"detail": "unknown video"}, 404)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._json({"detail": "not found"}, 404)

        def do_POST(self):
            if self.path != "/api/vote":
                return self._json({"detail": "not found"}, 404)
            try:
                body = json.loads(self.rfile.read(min(int(self.headers["Content-Length"]), 4096)))
                self._json(review.vote(str(body["pair"]), str(body["choice"])))
            except (KeyError, ValueError, TypeError) as exc:
                self._json({"detail": f"bad vote: {exc}"}, 400)

    Handler.protocol_version = "HTTP/1.1"
    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>wansweep review</title>
<style>
body{font:15px system-ui,sans-serif;margin:16px;background:#111;color:#eee}
.pair{display:flex;gap:12px} .side{flex:1;text-align:center}
video{width:100%;background:#000;border-radius:6px}
button{font-size:16px;padding:8px 18px;margin:6px;border-radius:6px;border:0;cursor:pointer}
#progress{color:#aaa} #reveal{color:#8c8;min-height:1.4em} kbd{background:#333;padding:1px 5px;border-radius:3px}
</style></head><body>
<h2>Which video is better? <span id="progress"></span></h2>
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
let current = null, busy = false;
const L = document.getElementById('left'), R = document.getElementById('right');
async function next() {
  const r = await fetch('/api/next'); current = await r.json();
  const p = current.progress;
  document.getElementById('progress').textContent = `${p.voted} of ${p.total} voted`;
  if (current.done) { document.body.dataset.state = 'done'; L.removeAttribute('src'); R.removeAttribute('src');
    document.getElementById('reveal').textContent += ' All pairs voted. Thank you.'; return; }
  L.src = '/video/' + current.left; R.src = '/video/' + current.right;
  Promise.all([L.play().catch(()=>{}), R.play().catch(()=>{})]);
  document.body.dataset.state = 'ready'; document.body.dataset.pair = current.pair;
}
setInterval(() => { if (!L.paused && Math.abs(L.currentTime - R.currentTime) > 0.1) R.currentTime = L.currentTime; }, 250);
async function vote(choice) {
  if (busy || !current || current.done) return; busy = true;
  document.body.dataset.state = 'voting';
  try {
    const r = await fetch('/api/vote', {method: 'POST', headers: {'Content-Type': 'application/json'},
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
