"""The `duration` filter: waits in the units people read them in."""

from __future__ import annotations

import pytest
from django.template import Context, Template

from pipelines.templatetags.firefly_time import duration


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (None, ""),
        ("", ""),
        ("not a number", ""),
        (0, "0 ms"),
        (412, "412 ms"),
        (1000, "1 s"),
        (2500, "2.5 s"),
        (9_990, "9.9 s"),
        (59_999, "59 s"),
        (61_913, "1 min 1 s"),
        (120_000, "2 min"),
        (17 * 60_000 + 30_000, "17 min"),
        (3_600_000, "1 h"),
        (72 * 60_000 + 5_000, "1 h 12 min"),
        (86_400_000, "1 d"),
        ((2 * 24 + 3) * 3_600_000 + 59 * 60_000, "2 d 3 h"),
    ],
)
def test_duration_reads_in_the_largest_units(ms, shown):
    assert duration(ms) == shown


def test_duration_is_a_template_filter():
    rendered = Template("{% load firefly_time %}{{ wait|duration }}").render(
        Context({"wait": 4_320_000})
    )
    assert rendered == "1 h 12 min"
