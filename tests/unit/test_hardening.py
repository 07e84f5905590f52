"""Bad input is a clear error and no secret leaves: pure pieces (no server)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.helpers import make_image
from wansweep.errors import FalError, ManifestError, SpecError
from wansweep.media import fetch
from wansweep.media.fetch import FetchRefused, checked_addresses, read_local
from wansweep.plan.manifest import parse_seed, plan
from wansweep.plan.spec import load_spec
from wansweep.results.notify import chat_escape
from wansweep.results.report import safe_csv
from wansweep.run.lifecycle import LedgerEntry
from wansweep.scrub import scrub
from wansweep.store.layout import check_sweep_name

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/in/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261122%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEJr&X-Amz-Signature=0123abcd"
)


def test_secrets_are_scrubbed_from_errors_and_the_ledger(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "key-id:key-secret-value")
    text = (
        f"Failed to download the file from {PRESIGNED}; Authorization: Key key-id:key-secret-value"
    )
    for out in (
        scrub(text),
        str(FalError(text, "invalid", 422)),
        LedgerEntry("k").with_changes(error=text).error,
    ):
        assert "AKIA" not in out and "Signature" not in out and "FwoG" not in out
        assert "key-secret-value" not in out and "[redacted]" in out
        assert "https://bucket.s3.amazonaws.com/in/a.png" in out  # what failed stays readable


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


@pytest.mark.parametrize(
    "seeds",
    [[-1], [7.9], [1e30], {"range": [0, 10**9]}, {"range": [5, 5]}, [True]],
)
def test_spec_seeds_are_checked(tmp_path, seeds):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "endpoints": ["flash"], "seeds": seeds}))
    with pytest.raises(SpecError, match="seeds"):
        load_spec(spec)


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


def test_local_reads_are_regular_files_with_a_size_cap(tmp_path):
    import os

    with pytest.raises(FetchRefused, match="not a regular file"):
        read_local("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FetchRefused, match="not a regular file"):
        read_local(fifo)
    big = tmp_path / "big.png"
    big.write_bytes(b"0" * 2048)
    with pytest.raises(FetchRefused, match="limit"):
        read_local(big, limit=1024)


def test_csv_cells_cannot_run_as_formulas_but_parquet_keeps_them():
    frame = pd.DataFrame(
        {"row_id": ['=HYPERLINK("x")', "+1", "-2", "@a", "ok"], "n": [1, 2, 3, 4, -5]}
    )
    out = safe_csv(frame)
    assert list(out["row_id"]) == ['\'=HYPERLINK("x")', "'+1", "'-2", "'@a", "ok"]
    assert list(out["n"]) == [1, 2, 3, 4, -5] and frame["row_id"][0].startswith("=")


def test_chat_markup_is_escaped():
    assert chat_escape("<!channel> <https://evil|click> & co") == (
        "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co"
    )


@pytest.mark.parametrize("name", ["../../x", "a/b", "", "UPPER", "x" * 101, "-lead"])
def test_sweep_names_never_become_paths_outside_the_archive(name):
    with pytest.raises(SpecError):
        check_sweep_name(name)


def _resolver(table):
    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return [(2, 1, 6, "", (address, port)) for address in table[host]]

    return getaddrinfo


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],  # a cloud's metadata service
        ["93.184.216.34", "192.168.0.7"],  # one private among public ones is enough
        ["::1"],
        ["fe80::1%eth0"],
        ["::ffff:127.0.0.1"],
        ["0.0.0.0"],
    ],
)
def test_a_name_resolving_anywhere_private_is_refused(monkeypatch, addresses):
    monkeypatch.delenv("WANSWEEP_ALLOW_HOSTS", raising=False)
    monkeypatch.delenv("WANSWEEP_ALLOW_PRIVATE_URLS", raising=False)
    monkeypatch.delenv("WANSWEEP_LOCAL_FAL", raising=False)
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver({"media.example": addresses}))
    with pytest.raises(FetchRefused, match="media.example resolves to .*WANSWEEP_ALLOW_HOSTS"):
        checked_addresses("media.example", 443)


def test_public_addresses_are_what_a_connection_may_use(monkeypatch):
    monkeypatch.delenv("WANSWEEP_ALLOW_HOSTS", raising=False)
    monkeypatch.delenv("WANSWEEP_ALLOW_PRIVATE_URLS", raising=False)
    table = {"media.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]}
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver(table))
    assert checked_addresses("media.example", 443) == ["93.184.216.34", "2606:2800:220:1::1"]
    with pytest.raises(FetchRefused, match="cannot resolve nowhere.example"):
        checked_addresses("nowhere.example", 443)
    # a host the user allows is not looked up here: the connection resolves it as usual
    monkeypatch.setenv("WANSWEEP_ALLOW_HOSTS", "intranet.example")
    assert checked_addresses("intranet.example", 80) == ["intranet.example"]


def test_through_a_proxy_names_are_still_checked_before_each_request(monkeypatch):
    """With a proxy in the environment the proxy resolves names, so the connection cannot be
    checked here: the name is checked before each request instead (the proxy below does not
    exist, so reaching it would fail otherwise than with FetchRefused)."""
    for name in ("WANSWEEP_ALLOW_HOSTS", "WANSWEEP_ALLOW_PRIVATE_URLS", "WANSWEEP_LOCAL_FAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver({"media.example": ["10.0.0.7"]}))
    monkeypatch.setattr(fetch, "_client", None)  # restored, with _proxied, after the test
    monkeypatch.setattr(fetch, "_proxied", False)
    try:
        with pytest.raises(FetchRefused, match="media.example resolves to 10.0.0.7"):
            fetch.fetch_url("http://media.example/a.png")
        assert fetch._proxied
    finally:
        fetch._http().close()
