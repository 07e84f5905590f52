"""Sweep specs: grid, zip, named arms, seeds, explicit defaults, clear errors."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers import FLASH, STANDARD
from wansweep.errors import SpecError
from wansweep.plan.spec import Seeds, job_key, load_spec


def spec_file(tmp_path, **cfg):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", **cfg}, sort_keys=False))
    return path


def test_grid_is_a_product_and_names_its_arms(tmp_path):
    spec = load_spec(
        spec_file(
            tmp_path,
            endpoints=["standard", "flash"],
            grid={"resolution": ["720p", "1080p"], "duration": [5, 10]},
        )
    )
    arms = spec.expand_arms()
    assert len(arms) == 8
    assert arms[0].name == "standard-720p-5s" and arms[0].settings["duration"] == "5"
    assert {a.endpoint for a in arms} == {STANDARD, FLASH}


def test_zip_pairs_values_instead_of_crossing_them(tmp_path):
    spec = load_spec(
        spec_file(
            tmp_path,
            endpoints=["flash"],
            zip={"resolution": ["720p", "1080p"], "duration": [10, 5]},
        )
    )
    assert [(a.settings["resolution"], a.settings["duration"]) for a in spec.expand_arms()] == [
        ("720p", "10"),
        ("1080p", "5"),
    ]


def test_named_arms_and_explicit_defaults(tmp_path):
    spec = load_spec(
        spec_file(
            tmp_path,
            defaults={"resolution": "720p"},
            arms=[
                {
                    "name": "standard-1080p",
                    "endpoint": "standard",
                    "settings": {"resolution": "1080p"},
                },
                {"name": "flash-720p", "endpoint": "wan/v2.6/image-to-video/flash"},
            ],
        )
    )
    a, b = spec.expand_arms()
    assert (a.name, a.settings["resolution"], b.settings["resolution"]) == (
        "standard-1080p",
        "1080p",
        "720p",
    )
    # every setting is explicit in the request: nothing is left to fal's defaults
    assert {
        "resolution",
        "duration",
        "negative_prompt",
        "enable_prompt_expansion",
        "multi_shots",
        "enable_safety_checker",
    } <= set(b.settings)


def test_default_resolution_is_stated_not_silent(tmp_path):
    spec = load_spec(spec_file(tmp_path, endpoints=["flash"]))
    assert spec.expand_arms()[0].settings["resolution"] == "1080p"  # explicit, and priced as such


def test_per_endpoint_overrides(tmp_path):
    spec = load_spec(
        spec_file(
            tmp_path,
            endpoints=["standard", "flash"],
            per_endpoint={"flash": {"resolution": "720p"}},
        )
    )
    got = {a.endpoint: a.settings["resolution"] for a in spec.expand_arms()}
    assert got == {STANDARD: "1080p", FLASH: "720p"}


def test_seed_forms():
    assert Seeds(values=[3, 3, 4]).expand() == [3, 4]
    assert Seeds(range=(10, 13)).expand() == [10, 11, 12]
    drawn = Seeds(random=3, master_seed=9).expand()
    assert drawn == Seeds(random=3, master_seed=9).expand() and len(set(drawn)) == 3
    with pytest.raises(ValueError):
        Seeds(values=[1], random=2)


@pytest.mark.parametrize(
    "cfg,needle",
    [
        ({"endpoints": ["fast"]}, "endpoints: Value error, unknown endpoint 'fast'"),
        (
            {"endpoints": ["flash"], "grid": {"sharpness": [1]}},
            "grid: Value error, grid: unknown setting(s) ['sharpness']",
        ),
        (
            {"endpoints": ["flash"], "concurrency": 0},
            "concurrency: Input should be greater than or equal to 1",
        ),
        ({"endpoints": ["flash"], "budget_usd": -1}, "budget_usd: Input should be greater than 0"),
        ({}, "give endpoints (with an optional grid) or named arms"),
        (
            {"endpoints": ["flash"], "zip": {"duration": [5], "resolution": ["720p", "1080p"]}},
            "same length",
        ),
        ({"endpoints": ["flash"], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, cfg, needle):
    with pytest.raises(SpecError) as err:
        load_spec(spec_file(tmp_path, **cfg))
    assert needle in str(err.value)


def test_job_key_is_stable_and_content_addressed():
    body = {"prompt": "a cat", "resolution": "720p", "duration": "5", "seed": 1}
    k = job_key(FLASH, body, "abc", None)
    assert k == job_key(FLASH, dict(reversed(list(body.items()))), "abc", None)
    assert k != job_key(FLASH, {**body, "prompt": "a cat "}, "abc", None)  # whitespace counts
    assert k != job_key(STANDARD, body, "abc", None)
    assert k != job_key(FLASH, body, "abd", None)
    assert len(k) == 24 and all(c in "0123456789abcdef" for c in k)


@pytest.mark.parametrize(
    "seeds",
    [[-1], [7.9], [1e30], {"range": [0, 10**9]}, {"range": [5, 5]}, [True]],
)
def test_spec_seeds_are_checked(tmp_path, seeds):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "endpoints": ["flash"], "seeds": seeds}))
    with pytest.raises(SpecError, match="seeds"):
        load_spec(spec)


def test_a_specs_own_paths_are_read_from_its_folder_the_commands_from_where_it_runs(
    tmp_path, monkeypatch
):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / "s.yaml"
    spec.write_text("name: s\nmanifest: data/m.csv\nstore: ./archive\nendpoints: [flash]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_spec(spec)
    assert loaded.manifest == str(folder / "data" / "m.csv")
    assert loaded.store == str(folder / "archive")
    overridden = load_spec(spec, store="mine", manifest="s3://b/m.csv")
    assert overridden.store == "mine" and overridden.manifest == "s3://b/m.csv"
    spec.write_text("name: s\nmanifest: s3://b/m.csv\nstore: s3://b/p\nendpoints: [flash]\n")
    assert load_spec(spec).store == "s3://b/p"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: s\nbudget_usd: 0.01\nendpoints: [flash]\nbudget_usd: 1000\n", "lines 2 and 4"),
        ("name: s\nendpoints: [flash]\npoll:\n  first: 1\n  first: 2\n", "lines 4 and 5"),
        ("name: s\nendpoints: [flash]\nbudget_usd: .inf\n", "budget_usd"),
        ("name: s\nendpoints: [flash]\nbudget_usd: .nan\n", "budget_usd"),
        ("name: s\nendpoints: [flash]\nreconcile: {grace: .nan}\n", "reconcile.grace"),
    ],
)
def test_a_spec_is_read_strictly(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=re.escape(needle)):
        load_spec(path)


def test_the_primary_measure_must_be_one_the_report_can_judge(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nendpoints: [flash]\nprimary_measure: q_flicker\n")
    assert load_spec(spec).primary_measure == "q_flicker"
    spec.write_text("name: x\nendpoints: [flash]\nprimary_measure: q_cuts\n")  # no direction
    with pytest.raises(SpecError, match="primary_measure: Value error, 'q_cuts' is not a measure"):
        load_spec(spec)
