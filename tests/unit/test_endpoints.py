"""Endpoint profiles (configs/endpoints): each maps wansweep's settings onto fal's own fields,
refuses what its endpoint cannot honour, and prices a request as its source says."""

from __future__ import annotations

import pytest

from tests.helpers import FLASH, STANDARD
from wansweep.errors import SpecError
from wansweep.plan.endpoints import PACKAGED, load_profile, profile, registry
from wansweep.plan.spec import Job, job_key

FAMILIES = {"wan", "kling", "veo", "ltx", "seedance", "hailuo"}


def test_every_packaged_profile_loads_and_states_every_default():
    profiles = registry().profiles
    assert len(profiles) == len(list(PACKAGED.glob("*.yaml"))) >= 9
    assert FAMILIES <= {p.family for p in profiles}
    for p in profiles:
        # what fal leaves without a documented default must be stated (Wan 2.2's resolution)
        must = {x.field: x.msg.rsplit(": state one of ", 1)[1] for x in p.refusals({})}
        given = {s: values.split(", ")[0] for s, values in must.items()}
        settings = p.complete(given)
        assert not p.refusals(settings), p.alias
        fields = p.request_fields("a prompt", settings, 7)
        body = {**fields, p.field_of("image"): "https://x/i.png"}
        assert [x for x in p.check(body) if x.severity == "error"] == [], p.alias
        # every field fal would default is stated, so nothing is left to fal
        stated = {f for f, spec in p.input.items() if spec.has_default}
        assert stated <= set(body), (p.alias, stated - set(body))
        assert p.estimate(settings) > 0 and p.sources and p.checked


@pytest.mark.parametrize(
    "alias, settings, field, value",
    [
        ("veo3", {"duration": "8"}, "duration", "8s"),  # "4s"/"6s"/"8s"
        ("ltx-2", {"duration": 8}, "duration", 8),  # an integer
        ("kling-2.5-turbo-pro", {"duration": "10s"}, "duration", "10"),  # "5"/"10"
        ("hailuo-02", {"enable_prompt_expansion": False}, "prompt_optimizer", False),
        ("seedance-v1-pro", {"aspect_ratio": "9:16"}, "aspect_ratio", "9:16"),
    ],
)
def test_the_shared_vocabulary_becomes_each_endpoints_own_field(alias, settings, field, value):
    from wansweep.plan.settings import normalise_settings

    p = profile(alias)
    given = normalise_settings(settings)
    assert not p.refusals(given)
    assert p.request_fields("x", p.complete(given), None)[field] == value


@pytest.mark.parametrize(
    "alias, settings, says",
    [
        ("kling-2.5-turbo-pro", {"resolution": "720p"}, "has no such setting; it takes duration"),
        ("veo3", {"duration": "5"}, "'5': veo3 takes 4, 6, 8 s"),
        ("standard", {"resolution": "4k"}, "'4k': standard takes 720p, 1080p"),
        ("standard", {"generate_audio": False}, "standard has no such setting"),
        ("hailuo-02-pro", {"duration": "10"}, "takes 6 s"),
        ("wan-2.1", {"num_frames": 100}, "is held at its default (the price assumes it)"),
        ("kling-2.5-turbo-pro", {"cfg_scale": 2}, "takes number >= 0 and <= 1"),
    ],
)
def test_a_setting_an_endpoint_cannot_honour_is_refused_saying_what_it_takes(alias, settings, says):
    problems = profile(alias).refusals(settings)
    assert problems and says in problems[0].msg, problems


def test_an_arm_that_cannot_be_run_is_refused_naming_arm_setting_and_values(tmp_path):
    from wansweep.plan.spec import load_spec

    (tmp_path / "s.yaml").write_text(
        "name: x\narms:\n  - {name: k720, endpoint: kling-2.5-turbo-pro, "
        "settings: {resolution: 720p}}\n"
    )
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "s.yaml").expand_arms()
    text = str(err.value)
    assert "arm k720 (fal-ai/kling-video/v2.5-turbo/pro/image-to-video)" in text
    assert (
        "resolution: kling-2.5-turbo-pro has no such setting; it takes duration (5, 10 s)" in text
    )


@pytest.mark.parametrize(
    "alias, settings, usd",
    [
        ("standard", {"resolution": "720p", "duration": "15"}, 1.5),  # $0.10/s
        ("flash", {"resolution": "1080p", "generate_audio": False}, 0.1875),  # half of $0.075/s
        ("kling-2.1-standard", {"duration": "10"}, 0.56),  # $0.28 + 5 x $0.056
        ("veo3", {"duration": "8", "generate_audio": False}, 1.6),  # $0.20/s silent
        ("ltx-2", {"resolution": "2160p", "duration": "10"}, 2.4),  # $0.24/s
        ("hailuo-02-pro", {}, 0.48),  # "A single 6 second video will cost $0.48"
        ("wan-2.1", {"resolution": "480p"}, 0.20),  # per video
    ],
)
def test_prices_of_a_few_requests_checked_by_hand_against_the_sources(alias, settings, usd):
    p = profile(alias)
    assert p.estimate(p.complete(settings)) == pytest.approx(usd)


def test_wan_26_job_keys_are_those_of_archives_made_before_profiles():
    """Keys were made of the request fields (fal's defaults stated) and seed; flash's
    generate_audio, added since, stays out at its default: an archive is not paid again."""
    old = {
        "prompt": "a cat",
        "resolution": "720p",
        "duration": "5",
        "negative_prompt": "",
        "enable_prompt_expansion": True,
        "multi_shots": False,
        "enable_safety_checker": True,
        "seed": 3,
    }
    for endpoint in (STANDARD, FLASH):
        p = profile(endpoint)
        job = Job(
            "", "a", endpoint, 1, "r", "a cat", p.complete({"resolution": "720p"}), 3, "i", "h"
        )
        assert job.key() == job_key(endpoint, old, "h", None)
    loud = Job("", "a", FLASH, 1, "r", "a cat", profile(FLASH).complete({}), 3, "i", "h")
    quiet = Job(
        "", "a", FLASH, 1, "r", "a cat", {**loud.settings, "generate_audio": False}, 3, "i", "h"
    )
    assert loud.key() != quiet.key()


def test_seeds_on_an_endpoint_without_a_seed_are_distinct_replicates():
    p = profile("kling-2.5-turbo-pro")
    jobs = [Job("", "a", p.id, 1, "r", "x", p.complete({}), s, "i", "h") for s in (1, 2)]
    assert "seed" not in jobs[0].request_fields()
    assert jobs[0].request_fields() == jobs[1].request_fields()
    assert jobs[0].key() != jobs[1].key()  # two paid jobs, never one cached


def test_a_profile_from_a_users_own_folder_is_used_and_can_replace_one(tmp_path, monkeypatch):
    text = (PACKAGED / "kling-2.5-turbo-pro.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(
        text.replace("alias: kling-2.5-turbo-pro", "alias: my-kling").replace(
            "fal-ai/kling-video/v2.5-turbo/pro/image-to-video", "my-org/kling-copy/image-to-video"
        )
    )
    monkeypatch.setenv("WANSWEEP_ENDPOINTS", str(tmp_path))
    assert profile("my-kling").id == "my-org/kling-copy/image-to-video"
    assert profile("kling-2.5-turbo-pro")  # the packaged ones stay
    (tmp_path / "bad.yaml").write_text("id: x\n")
    monkeypatch.setenv("WANSWEEP_ENDPOINTS", str(tmp_path) + "/")
    with pytest.raises(SpecError, match="bad.yaml is invalid"):
        registry()


def test_an_unknown_endpoint_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown endpoint 'kling'.*kling-2.5-turbo-pro"):
        profile("kling")


def test_a_profile_whose_map_names_no_field_of_its_input_is_refused(tmp_path):
    text = (PACKAGED / "wan-2.6.yaml").read_text().replace("  seed: seed\n", "  seed: the_seed\n")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(
        SpecError, match="Value error, map.seed: 'the_seed' is not a field of input"
    ):
        load_profile(tmp_path / "p.yaml")


def test_the_unit_price_is_the_cheapest_resolution_at_the_other_defaults():
    """What the local server's pricing API answers: a silent flash request bills fewer units
    of the same $0.05, rather than the unit being the silent price."""
    assert profile(FLASH).base_rate() == 0.05
    assert profile(STANDARD).base_rate() == 0.10
    assert profile("veo3").base_rate() == 0.40  # audio on by default


def test_a_setting_fal_gives_no_default_for_must_be_stated():
    problems = profile("wan-2.2-a14b").refusals({"aspect_ratio": "16:9"})
    assert [(p.field, p.rule) for p in problems] == [("resolution", "not_stated")]
    assert "state one of 480p, 580p, 720p" in problems[0].msg


def test_the_request_names_the_media_as_the_endpoint_does(tmp_path, monkeypatch):
    from wansweep.run.steps import request_body

    (tmp_path / "i.png").write_bytes(b"\x89PNG fake")
    folder = tmp_path / "profiles"
    folder.mkdir()
    text = (PACKAGED / "kling-2.5-turbo-pro.yaml").read_text()
    (folder / "k.yaml").write_text(
        text.replace("image_url", "start_image_url").replace(
            "alias: kling-2.5-turbo-pro", "alias: k"
        )
    )
    monkeypatch.setenv("WANSWEEP_ENDPOINTS", str(folder))
    p = profile("k")
    job = Job("", "a", p.id, 1, "r", "x", p.complete({}), 1, str(tmp_path / "i.png"), "h")
    body = request_body(job)
    assert body["start_image_url"].startswith("data:") and "image_url" not in body
    assert not [x for x in p.check(body) if x.severity == "error"]


def test_audio_for_an_endpoint_that_takes_none_is_refused_by_row_and_arm(tmp_path):
    from tests.helpers import make_image, make_wav
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec

    (tmp_path / "i.png").write_bytes(make_image(640, 360))
    (tmp_path / "a.wav").write_bytes(make_wav(5.0))
    (tmp_path / "m.csv").write_text("id,image,prompt,audio\nr1,i.png,a cat,a.wav\n")
    (tmp_path / "s.yaml").write_text(
        "name: x\nmanifest: m.csv\narms:\n"
        "  - {name: wan, endpoint: flash, settings: {resolution: 720p}}\n"
        "  - {name: kling, endpoint: kling-2.5-turbo-pro}\n"
    )
    spec = load_spec(tmp_path / "s.yaml")
    found = plan(spec, spec.manifest)
    assert [(e.field, e.rule) for e in found.errors] == [("audio", "not_taken")]
    assert "arm kling: kling-2.5-turbo-pro takes no audio file" in str(found.errors[0])
    assert found.jobs == []  # a row with an error gives no job


def test_a_profile_is_read_as_strictly_as_a_spec(tmp_path):
    text = (PACKAGED / "wan-2.6.yaml").read_text()
    (tmp_path / "twice.yaml").write_text(text + "alias: other\n")
    with pytest.raises(SpecError, match="key 'alias' is given twice"):
        load_profile(tmp_path / "twice.yaml")
    (tmp_path / "list.yaml").write_text("- id: x\n")
    with pytest.raises(SpecError, match="expected a mapping at the top level"):
        load_profile(tmp_path / "list.yaml")
