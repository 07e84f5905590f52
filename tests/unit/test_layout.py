"""The archive's layout: names that become paths stay inside the archive."""

from __future__ import annotations

import pytest

from wansweep.errors import SpecError
from wansweep.store.layout import check_sweep_name


@pytest.mark.parametrize("name", ["../../x", "a/b", "", "UPPER", "x" * 101, "-lead"])
def test_sweep_names_never_become_paths_outside_the_archive(name):
    with pytest.raises(SpecError):
        check_sweep_name(name)
