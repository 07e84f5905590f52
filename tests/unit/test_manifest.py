"""Planning: every validation rule caught before any submit, with row, id, field, rule and value."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.helpers import data_uri, make_image, make_wav
from wansweep.errors import ManifestError, PlanInvalid
from wansweep.plan.manifest import parse_seed
from wansweep.plan.planner import plan
from wansweep.plan.spec import SweepSpec, load_spec


@pytest.fixture
def case(tmp_path):
    (tmp_path / "a.png").write_bytes(make_image(640, 360))
    (tmp_path / "copy-of-a.png").write_bytes(make_image(640, 360))
    (tmp_path / "b.jpg").write_bytes(make_image(480, 640, fmt="JPEG"))
    (tmp_path / "spec.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "u",
                "endpoints": ["flash"],
                "grid": {"resolution": ["720p"]},
                "seeds": [1, 2],
                "defaults": {"duration": 5},
            }
        )
    )
    return tmp_path


def run_plan(case, rows, suffix=".csv", **kw):
    frame = pd.DataFrame(rows)
    path = case / f"m{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    return plan(load_spec(case / "spec.yaml"), str(path), **kw)


def ok(**extra):
    return {"id": "ok", "image": "a.png", "prompt": "fine", **extra}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats_and_extra_columns(case, suffix):
    p = run_plan(
        case,
        [ok(scene="beach"), {"id": "two", "image": "b.jpg", "prompt": "also", "scene": "x"}],
        suffix,
    )
    assert not p.problems and len(p.jobs) == 4
    assert p.jobs[0].extra == {"scene": "beach"} and p.jobs[0].image_uri == str(case / "a.png")


RULES = {
    "prompt length": ({"prompt": "p" * 10_001}, "prompt", "string_too_long"),
    "negative prompt length": (
        {"negative_prompt": "n" * 501},
        "negative_prompt",
        "string_too_long",
    ),
    "duration enum": ({"duration": "7"}, "duration", "enum"),
    "resolution enum": ({"resolution": "4k"}, "resolution", "enum"),
    "missing file": ({"image": "nope.png"}, "image", "file_missing"),
    "unreadable image": ({"image": data_uri(b"junk")}, "image", "image_unreadable"),
    "format": ({"image": data_uri(make_image(fmt="GIF"), "image/gif")}, "image", "image_format"),
    "too small": ({"image": data_uri(make_image(200, 300))}, "image", "image_dimensions"),
    "too large": (
        {"image": data_uri(make_image(7700, 260, fmt="JPEG"))},
        "image",
        "image_dimensions",
    ),
    "audio too short": ({"audio": data_uri(make_wav(1.0), "audio/wav")}, "audio", "audio_duration"),
    "audio format": ({"audio": data_uri(make_image(), "audio/wav")}, "audio", "audio_format"),
    "bad seed": ({"seed": "abc"}, "seed", "seed_range"),
    "fractional seed": ({"seed": "7.9"}, "seed", "seed_range"),
    "negative seed": ({"seed": "-1"}, "seed", "seed_range"),
    "huge seed": ({"seed": "1e30"}, "seed", "seed_range"),
    "truncated image": (
        {"image": data_uri(make_image(fmt="JPEG")[:2000], "image/jpeg")},
        "image",
        "image_truncated",
    ),
    "unreachable s3": ({"image": "s3://no-such-bucket-here/x.png"}, "image", "file_unreadable"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_names_row_id_field_rule_and_value(case, rule, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # no S3 here: unreachable
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    change, field, code = RULES[rule]
    p = run_plan(case, [ok(), {**ok(), "id": "bad", **change}])
    errors = [e for e in p.errors if e.row == 2]
    assert errors, p.problems
    e = errors[0]
    assert (e.id, e.field, e.rule) == ("bad", field, code)
    assert f"row 2 (id bad): {field}:" in str(e) and "value" in str(e)
    assert {j.row_id for j in p.jobs} == {"ok"}  # the bad row yields no job


def test_all_errors_are_reported_at_once(case):
    p = run_plan(
        case,
        [
            ok(prompt="p" * 10_001, negative_prompt="n" * 600),
            {**ok(), "id": "x", "image": "nope.png"},
        ],
    )
    assert {(e.row, e.field) for e in p.errors} == {
        (1, "prompt"),
        (1, "negative_prompt"),
        (2, "image"),
    }


def test_warnings_do_not_block(case):
    (case / "rgba.png").write_bytes(make_image(300, 300, mode="RGBA"))
    p = run_plan(case, [ok(image="rgba.png", multi_shots="true", enable_prompt_expansion="false")])
    assert not p.errors and len(p.jobs) == 2
    assert {w.rule for w in p.warnings} == {"image_alpha", "image_dimensions_advised", "inactive"}


def test_duplicate_ids(case):
    p = run_plan(case, [ok(), ok()])
    assert [(e.row, e.rule) for e in p.errors] == [(2, "duplicate_id")]


def test_row_overrides_and_row_seed(case):
    p = run_plan(case, [ok(resolution="1080p", duration=10, seed=77)])
    assert len(p.jobs) == 1
    job = p.jobs[0]
    assert (job.settings["resolution"], job.settings["duration"], job.seed) == ("1080p", "10", 77)
    assert job.estimated_usd == pytest.approx(0.075 * 10)


def test_job_keys_ignore_row_order_and_paths_but_not_prompt_whitespace(case):
    a = run_plan(case, [ok(id="1"), {"id": "2", "image": "b.jpg", "prompt": "other"}])
    b = run_plan(
        case, [{"id": "2", "image": "b.jpg", "prompt": "other"}, ok(id="1", image="copy-of-a.png")]
    )
    assert {j.job_key for j in a.jobs} == {j.job_key for j in b.jobs}
    c = run_plan(case, [ok(id="1", prompt="fine ")])
    assert not {j.job_key for j in c.jobs} & {j.job_key for j in a.jobs}


def test_estimate_is_the_sum_of_job_estimates(case):
    p = run_plan(case, [ok()])
    assert p.estimated_usd == pytest.approx(2 * 0.05 * 5)


def test_unreadable_manifest_is_one_clear_error(case):
    (case / "m.csv").write_text("name,what\nx,y\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['image', 'prompt'\]"):
        plan(load_spec(case / "spec.yaml"), str(case / "m.csv"))
    with pytest.raises(ManifestError, match="not found"):
        plan(load_spec(case / "spec.yaml"), str(case / "missing.csv"))
    with pytest.raises(ManifestError, match="unknown format"):
        plan(load_spec(case / "spec.yaml"), str(case / "spec.yaml"))


def test_seeds_are_whole_numbers_in_fals_range_never_truncated():
    assert [parse_seed(v) for v in ("7", 7, 7.0, " 42 ", 0, 4294967295)] == [
        7,
        7,
        7,
        42,
        0,
        4294967295,
    ]
    for bad in ("7.9", 7.9, -1, "-1", 1e30, "1e30", True, "true", "seven", 2**32, None, [7]):
        assert parse_seed(bad) is None, bad


def write(tmp_path, text: str, name="m.csv"):
    (tmp_path / "i.png").write_bytes(make_image())
    (tmp_path / name).write_text(text)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "manifest": name, "endpoints": ["flash"]}))
    cfg = load_spec(spec)
    return cfg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("image,prompt,prompt\ni.png,a,b\n", "line 1: column(s) ['prompt'] appear more than once"),
        ("image,prompt\ni.png,a,extra\n", "line 2: 3 cells for 2 columns"),
        ("image,prompt,id\ni.png,a\n", "line 2: 2 cells for 3 columns"),
    ],
)
def test_csv_header_and_row_shape_problems_name_the_line(tmp_path, text, needle):
    cfg = write(tmp_path, text)
    with pytest.raises(ManifestError) as err:
        plan(cfg, cfg.manifest)
    assert needle in str(err.value)


def test_typed_columns_are_checked_not_stringified(tmp_path):
    (tmp_path / "i.png").write_bytes(make_image())
    rows = [
        {"image": "i.png", "prompt": 12345},
        {"image": "i.png", "prompt": "ok", "seed": True},
        {"image": "i.png", "prompt": "ok", "seed": 7.9},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = write(tmp_path, "", name="unused.csv").model_copy(
        update={"manifest": str(tmp_path / "m.jsonl")}
    )
    problems = {(p.row, p.field, p.rule) for p in plan(cfg, cfg.manifest).errors}
    assert problems == {
        (1, "prompt", "string_type"),
        (2, "seed", "seed_range"),
        (3, "seed", "seed_range"),
    }


def test_a_truncated_jpeg_is_refused(tmp_path):
    jpeg = make_image(640, 360, fmt="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    cfg = write(tmp_path, "image,prompt\ncut.jpg,a\n")
    assert [(p.field, p.rule) for p in plan(cfg, cfg.manifest).errors] == [
        ("image", "image_truncated")
    ]


def test_fals_own_example_prompt_plans_with_a_warning_only(tmp_path):
    from tests.fal_examples import FAL_EXAMPLE_PROMPT

    cfg = write(
        tmp_path,
        pd.DataFrame([{"image": "i.png", "prompt": FAL_EXAMPLE_PROMPT}]).to_csv(index=False),
    )
    result = plan(cfg, cfg.manifest)
    assert not result.errors and len(result.jobs) == 1
    assert [p.rule for p in result.warnings] == ["string_long"]


def test_cells_of_every_shape_a_table_holds_are_used_or_refused_by_row_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "i.png").write_bytes(make_image())
    none = [None] * 5
    table = pa.table(
        {
            "id": ["list-seed", "list-res", "bytes", "nul", "fine"],
            "image": ["i.png"] * 5,
            "prompt": ["a", "a", "a", "a\x00b", "a"],
            "seed": pa.array([[1, 2], *none[:4]], pa.list_(pa.int64())),
            "resolution": pa.array([None, ["720p"], None, None, None], pa.list_(pa.string())),
            "blob": pa.array([None, None, b"\x00\x01", None, None], pa.binary()),
            "tags": pa.array([None, None, None, None, ["beach", "dusk"]], pa.list_(pa.string())),
            "shot": pa.array(
                [None, None, None, None, {"lens": 35}], pa.struct([("lens", pa.int64())])
            ),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    cfg = write(tmp_path, "", name="unused.csv")
    planned = plan(cfg, str(tmp_path / "m.parquet"))
    assert {(p.row, p.id, p.field, p.rule) for p in planned.errors} == {
        (1, "list-seed", "seed", "not_one_value"),
        (2, "list-res", "resolution", "not_one_value"),
        (3, "bytes", "blob", "bytes"),
        (4, "nul", "prompt", "control_character"),
    }
    (job,) = planned.jobs
    assert job.row_id == "fine" and json.loads(job.extra["tags"]) == ["beach", "dusk"]
    assert json.loads(job.extra["shot"]) == {"lens": 35}

    lines = [
        {"id": "struct", "image": "i.png", "prompt": {"text": "a"}},
        {"id": "nul\x00id", "image": "i.png", "prompt": "a"},
        {"id": "ok", "image": "i.png", "prompt": "a", "seed": [7]},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    planned = plan(cfg, str(tmp_path / "m.jsonl"))
    assert {(p.row, p.id, p.field, p.rule) for p in planned.errors} == {
        (1, "struct", "prompt", "not_one_value"),
        (2, "row2", "id", "control_character"),  # a bad id is not shown as the row's id
        (3, "ok", "seed", "not_one_value"),
    }


def test_csv_and_jsonl_errors_name_the_line(tmp_path):
    cfg = write(tmp_path, 'image,prompt\ni.png,a\ni.png,"' + "x" * (5 * 2**20) + '"\n')
    with pytest.raises(ManifestError, match=r"line 3: field larger than field limit"):
        plan(cfg, cfg.manifest)
    (tmp_path / "m.jsonl").write_text('{"image": "i.png", "prompt": "a"}\n\n{"image": oops}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl line 3: not JSON"):
        plan(cfg, str(tmp_path / "m.jsonl"))
    (tmp_path / "m.jsonl").write_text('{"image": "i.png", "prompt": "a"}\n[1, 2]\n')
    with pytest.raises(ManifestError, match=r"line 2: a line must be a JSON object"):
        plan(cfg, str(tmp_path / "m.jsonl"))


def test_a_grid_too_large_is_refused_before_a_job_is_built(tmp_path):
    import tracemalloc

    rows = "\n".join(f"i.png,p{i}" for i in range(1000))
    base = write(tmp_path, "image,prompt\n" + rows + "\n").model_dump()
    grid = {"negative_prompt": [f"n{i}" for i in range(1000)]}
    cfg = SweepSpec.model_validate({**base, "grid": grid, "seeds": {"range": (0, 1000)}})
    tracemalloc.start()
    try:
        with pytest.raises(
            PlanInvalid, match=r"1,000,000,000 jobs \(1,000 rows x 1,000 arms"
        ) as err:
            plan(cfg, cfg.manifest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "parts of at most 0" not in str(err.value) and "one row alone" in str(err.value)
    assert peak < 50 * 2**20  # nothing of the billion jobs was built
    small = SweepSpec.model_validate({**base, "grid": grid, "seeds": [1, 2], "max_jobs": 400_000})
    with pytest.raises(PlanInvalid, match="parts of at most 200 rows"):
        plan(small, small.manifest)
