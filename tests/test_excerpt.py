"""Tests for d2lopt.lab.excerpt: short excerpts and diffs of the source that runs (10_ddp)."""

from __future__ import annotations

import pytest

from d2lopt.lab.excerpt import diff, excerpt


def _sample(a: int, b: int = 2) -> int:
    """A docstring the excerpt leaves out.

    Over two lines.
    """
    total = a + b
    if total > 3:
        total -= 1
    return total


def test_excerpt_of_an_object_skips_signature_and_docstring_and_names_the_module():
    header, *body = excerpt(_sample).splitlines()
    # the module's name depends on how pytest imported this file; the header names both
    assert header.startswith("# ") and "test_excerpt._sample (" in header
    assert header.endswith("test_excerpt.py)")
    assert body == [
        "total = a + b",
        "if total > 3:",
        "    total -= 1",
        "return total",
    ]


def test_excerpt_between_markers_dedents_and_stops_before_or_at_a_line():
    assert excerpt(_sample, start="if total", stop="return").splitlines()[1:] == [
        "if total > 3:",
        "    total -= 1",
    ]
    assert excerpt(_sample, start="total =", last="if total").splitlines()[1:] == [
        "total = a + b",
        "if total > 3:",
    ]


def test_excerpt_of_text_needs_a_name_and_reports_missing_markers():
    assert excerpt("a\nb\nc\n", name="f.py", start="b") == "# f.py\nb\nc"
    with pytest.raises(ValueError, match="name"):
        excerpt("a\nb\n")
    with pytest.raises(ValueError, match="start: 'zzz'"):
        excerpt("a\nb\n", name="f.py", start="zzz")
    with pytest.raises(ValueError, match="stop, last"):
        excerpt("a\nb\n", name="f.py", stop="b", last="b")


def test_diff_shows_only_the_changed_lines():
    before = "a = 1\nb = 2\nc = 3\n"
    after = "a = 1\nb = 20\nc = 3\n"
    assert diff(before, after, before_name="old.py", after_name="new.py").splitlines() == [
        "--- old.py",
        "+++ new.py",
        "@@ -2 +2 @@",
        "-b = 2",
        "+b = 20",
    ]
