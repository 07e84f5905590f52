"""The local store's listing: every key below a prefix, as S3 would list it, whatever the
folder's shape."""

import os

from wansweep.store import open_store


def test_list_gives_every_key_below_a_prefix_and_nothing_else(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    keys = [
        "jobs/a/meta.json",
        "jobs/a/video.mp4",
        "jobs/b/meta.json",
        "jobs/b/deeper/thumb.jpg",
        "jobsx/other.json",  # shares the prefix's letters, not its folder
        "sweeps/s/report/jobs.csv",
        "sweeps/s/report.md",
        "top.json",
    ]
    for key in keys:
        store.put_bytes(key, b"x")
    (store.root / "jobs" / "a" / ".tmp-abc123").write_bytes(b"half written")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"x")
    os.symlink(outside, store.root / "jobs" / "linked")  # a link to a folder is not followed

    assert sorted(store.list("jobs/")) == sorted(k for k in keys if k.startswith("jobs/"))
    assert sorted(store.list("jobs")) == sorted(k for k in keys if k.startswith("jobs"))
    assert sorted(store.list("sweeps/s/rep")) == ["sweeps/s/report.md", "sweeps/s/report/jobs.csv"]
    assert sorted(store.list("")) == sorted(keys)
    assert list(store.list("top.json")) == ["top.json"]
    assert list(store.list("nothing/")) == []
