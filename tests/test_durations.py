"""One duration formatter for every printed duration (issue 34: `17351.5min` should read as days and hours)."""

from __future__ import annotations

import math

import pytest

from fmlab.durations import duration


@pytest.mark.parametrize(
    "s, text",
    [
        (0.0, "0.0 s"),
        (4.24, "4.2 s"),
        (45.2, "45 s"),
        (59.6, "1 min"),
        (200, "3 min 20 s"),
        (599.7, "10 min"),
        (754, "13 min"),
        (3600 * 3 + 600, "3 h 10 min"),
        (3599.9, "1 h"),
        (86_399, "1 d"),
        (2 * 86_400 + 4 * 3600 + 100, "2 d 4 h"),
        (17351.5 * 60, "12 d 1 h"),  # the dry-run estimate on an AVX2 EPYC
        (-3, "0.0 s"),
        (None, "?"),
        (math.nan, "?"),
    ],
)
def test_durations_read_in_the_two_largest_units(s, text):
    assert duration(s) == text
