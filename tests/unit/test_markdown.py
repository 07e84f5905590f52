"""What people open: CSV cells that a spreadsheet would run as formulas are quoted."""

from __future__ import annotations

import pandas as pd

from wansweep.results.markdown import safe_csv


def test_csv_cells_cannot_run_as_formulas_but_parquet_keeps_them():
    frame = pd.DataFrame(
        {"row_id": ['=HYPERLINK("x")', "+1", "-2", "@a", "ok"], "n": [1, 2, 3, 4, -5]}
    )
    out = safe_csv(frame)
    assert list(out["row_id"]) == ['\'=HYPERLINK("x")', "'+1", "'-2", "'@a", "ok"]
    assert list(out["n"]) == [1, 2, 3, 4, -5] and frame["row_id"][0].startswith("=")


def test_a_sweep_measured_by_two_metric_versions_says_so_and_one_version_says_nothing():
    from wansweep.results.markdown import _versions_note

    mixed = pd.DataFrame({"quality_version": [1, 2, 2, None]})
    note = _versions_note(mixed)
    assert "2 versions of the metrics" in note and "(1, 2)" in note and "not like for like" in note
    assert _versions_note(pd.DataFrame({"quality_version": [2, 2, None]})) == ""
    assert _versions_note(pd.DataFrame({"arm": ["a"]})) == ""  # an index before versions
