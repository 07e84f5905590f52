"""The local server's generation step: validate as fal does, fetch the media, render a clip
(cached by its inputs), and shape fal's result."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any
from urllib.parse import unquote

import httpx

from wansweep.localfal.queue import FalRequest
from wansweep.localfal.video import render_clip
from wansweep.media.frames import decode_data_uri
from wansweep.plan import schema
from wansweep.plan.endpoints import profile

FETCH_LIMIT = 64 * 2**20  # bytes read of one input URL at most


class GenerateMixin:
    """Part of :class:`~wansweep.localfal.server.LocalFal`: what a runner would do."""

    async def _generate(self, job: FalRequest, base_url: str) -> None:
        payload, prof = job.payload, profile(job.endpoint)
        problems = [p for p in prof.check(payload) if p.severity == "error"]
        image = audio = None
        image_field, audio_field = prof.field_of("image"), prof.field_of("audio")
        if not any(p.field == image_field for p in problems):
            image = await self._input(payload[image_field], image_field, "image", problems)
        if audio_field and payload.get(audio_field):
            if not any(p.field == audio_field for p in problems):
                audio = await self._input(payload[audio_field], audio_field, "audio", problems)
        if problems:
            job.error = {"status_code": 422, "body": {"detail": [p.fal_detail() for p in problems]}}
            return
        if self._fault("flagged"):
            job.error = {
                "status_code": 422,
                "body": {
                    "detail": [
                        {
                            "loc": ["body", image_field],
                            "msg": "Image was flagged by the safety checker",
                            "type": "content_policy_violation",
                        }
                    ]
                },
                "gpu_time": True,  # refused after the run: fal says such a 422 may be billed
            }
            return
        if self._fault("failed"):
            job.error = {
                "status_code": 500,
                "body": {"detail": "Generation failed on the runner", "error_type": "runner_error"},
            }
            return

        settings = prof.settings_of(payload)  # the endpoint's defaults filled in
        seed = payload.get(prof.field_of("seed")) if prof.takes_seed else None
        if seed is None:
            seed = random.randrange(2**31)
        expand = bool(settings.get("enable_prompt_expansion", False))
        multi_shots = expand and bool(settings.get("multi_shots", False))
        resolution, aspect = settings.get("resolution"), settings.get("aspect_ratio")
        duration = str(prof.seconds(settings))
        tiny = self.config.media == "tiny"
        key = hashlib.sha256(
            json.dumps(
                [
                    hashlib.sha256(image).hexdigest(),
                    hashlib.sha256(audio or b"").hexdigest(),
                    payload["prompt"],
                    seed,
                    resolution,
                    aspect,
                    duration,
                    multi_shots,
                    tiny,
                ],
                sort_keys=True,
            ).encode()
        ).hexdigest()[:24]
        name = f"{key}.mp4"
        path = self.media_dir / name
        meta_path = path.with_suffix(".json")
        if meta_path.exists() and path.exists():
            meta = json.loads(meta_path.read_text())
        else:
            clip = await asyncio.get_running_loop().run_in_executor(
                self.pool,
                lambda: render_clip(
                    image,
                    prompt=payload["prompt"],
                    seed=seed,
                    resolution=resolution,
                    duration=duration,
                    aspect_ratio=aspect,
                    multi_shots=multi_shots,
                    audio=audio,
                    fps=4 if tiny else 16,
                    short_side=64 if tiny else None,
                ),
            )
            tmp = path.with_suffix(".part")
            tmp.write_bytes(clip.data)
            tmp.replace(path)
            meta = {
                "width": clip.width,
                "height": clip.height,
                "fps": clip.fps,
                "duration": clip.duration,
                "num_frames": clip.num_frames,
                "file_size": len(clip.data),
            }
            meta_path.write_text(json.dumps(meta))
        output: dict[str, Any] = {
            prof.output: {
                "url": f"{base_url}/_local/media/{name}",
                "content_type": "video/mp4",
                "file_name": name,
                **meta,
            },
        }
        if prof.takes_seed:  # an endpoint without a seed does not answer one
            output["seed"] = seed
        if expand:
            output["actual_prompt"] = _expand(payload["prompt"], seed)
        job.output = output

    async def _input(self, url: str, field: str, kind: str, problems: list) -> bytes | None:
        """An input's bytes (``kind``: image or audio), checked as fal checks them; what is
        wrong goes to ``problems`` under the endpoint's ``field``."""
        try:
            data = await self._fetch(url)
        except Exception as exc:
            why = f"Failed to download the file ({_why(exc)})"
            problems.append(schema.Problem(field, "file_download_error", why))
            return None
        found = (
            schema.check_image(data, field)[1]
            if kind == "image"
            else schema.check_audio(data, field)
        )
        problems += [p for p in found if p.severity == "error"]
        return data

    async def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url)
        if url.startswith(("http://", "https://")):
            if self._fault("fetch_fail"):
                raise ValueError(f"could not fetch {url}: answered 403")
            own = "/_local/files/"
            if own in url:
                return self.own_file(unquote(url.split(own, 1)[1].split("?")[0])).read_bytes()
            async with httpx.AsyncClient(
                verify=self._ssl(), timeout=30, follow_redirects=True
            ) as client:
                async with client.stream("GET", url) as response:
                    response.raise_for_status()
                    data = b""
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > FETCH_LIMIT:
                            raise ValueError("the file is larger than fal accepts")
                    return data
        raise ValueError("URL must be https://, http:// or a data URI")

    def own_file(self, name: str):
        """A file uploaded to this server (PUT /_local/files/NAME), never anything outside
        its folder: the name is resolved, then checked to stay inside."""
        folder = (self.media_dir / "files").resolve()
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            raise FileNotFoundError("no such file")
        return path


def _expand(prompt: str, seed: int) -> str:
    flavour = ["cinematic lighting", "smooth camera motion", "rich detail", "natural colours"]
    return (
        f"{prompt.strip()} ({flavour[seed % len(flavour)]}, {flavour[(seed // 4) % len(flavour)]})"
    )


def _why(exc: Exception) -> str:
    """What a failed download tells the client: the HTTP status, or the kind of failure,
    never a path or other text of this host."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"answered {exc.response.status_code}"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, ValueError) and ("larger" in str(exc) or "could not fetch" in str(exc)):
        return str(exc)  # the URL is the client's own (fal quotes it, presigned or not)
    return type(exc).__name__
