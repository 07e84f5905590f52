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

The page and who may drive it: :mod:`.review_server`.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from wansweep.store import Store
from wansweep.store.layout import vote_key, vote_keys

RATER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
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
