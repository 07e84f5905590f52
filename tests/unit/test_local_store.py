"""The local store: its listing (every key below a prefix, as S3 would list it, whatever the
folder's shape), and the errors it names."""

import errno
import os
import tempfile

import pytest

from wansweep.errors import StoreRefused
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


@pytest.mark.parametrize(
    "code, says",
    [
        (errno.ENOSPC, "is full"),
        (errno.EDQUOT, "is over its disk quota"),
        (errno.EROFS, "is on a read-only file system"),
        (errno.EACCES, "denies this user access"),
    ],
)
def test_an_error_every_write_would_meet_names_the_archive(tmp_path, monkeypatch, code, says):
    """What no job's write could get past (a full disk, a quota, a read-only mount) is
    StoreRefused naming the archive, which stops a run's submits; the real full disk is in
    tests/integration/test_fail_fast.py."""
    store = open_store(str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(StoreRefused, match=f"the archive {tmp_path} {says}"):
        store.put_bytes("jobs/a/meta.json", b"{}")
    with pytest.raises(StoreRefused):
        store.create_exclusive("ledger/a.json", b"{}")


def test_an_error_of_one_file_stays_what_it_is(tmp_path, monkeypatch):
    store = open_store(str(tmp_path))
    (tmp_path / "jobs").write_text("a file where a folder should be")
    with pytest.raises(NotADirectoryError):
        store.put_bytes("jobs/a/meta.json", b"{}")
