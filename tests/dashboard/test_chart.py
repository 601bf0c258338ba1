"""The outcome chart, a pure function: daily counts in, SVG text out (no I/O, parsed as XML here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

from lightkeeper.store import DailyOutcomes
from lightkeeper.web.chart import SERIES, describe, outcome_chart

SVG = "{http://www.w3.org/2000/svg}"
FIRST = date(2026, 5, 19)


def fortnight(**on_day: DailyOutcomes) -> list[DailyOutcomes]:
    """14 days from FIRST, zeros except the days given by their ``d<index>`` name."""
    return [on_day.get(f"d{n}", DailyOutcomes(FIRST + timedelta(days=n))) for n in range(14)]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # our own output, parsed to check that it is well-formed


def bars(root: ET.Element, field: str) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == f"bar-{field}"]


def texts(root: ET.Element) -> list[str]:
    return [text.text or "" for text in root.iter(f"{SVG}text")]


def test_the_chart_is_an_accessible_image_with_title_description_axes_and_legend() -> None:
    days = fortnight(d3=DailyOutcomes(FIRST + timedelta(days=3), refreshed=7, expired=1, errors=2, skipped=0))

    root = parse(outcome_chart(days, title="Refresh outcomes, last 14 days", ident="outcomes"))

    assert root.get("role") == "img" and root.get("aria-labelledby") == "outcomes-title outcomes-desc"
    assert root.find(f"{SVG}title").text == "Refresh outcomes, last 14 days"  # type: ignore[union-attr]
    description = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert description == "14 days from 2026-05-19 to 2026-06-01 (UTC): 7 refreshed, 0 skipped, 2 errors, 1 expired."
    labels = texts(root)
    assert "connections" in labels and "day (UTC)" in labels  # both axes are named
    words = [word for _, word, _ in SERIES]
    assert [label for label in labels if label in words] == words  # the legend, in stacking order
    assert [label for label in labels if label.startswith("05-") or label.startswith("06-")][:2] == ["05-19", "05-20"]
    assert len([label for label in labels if len(label) == 5 and label[2] == "-"]) == 14  # one date per bar


def test_bars_stack_each_outcome_in_proportion_on_a_round_axis() -> None:
    day = FIRST + timedelta(days=5)
    root = parse(outcome_chart(fortnight(d5=DailyOutcomes(day, refreshed=6, expired=2, errors=1, skipped=0))))

    [refreshed], [expired], [errors] = bars(root, "refreshed"), bars(root, "expired"), bars(root, "errors")
    assert bars(root, "skipped") == []  # a zero draws nothing
    heights = {name: float(rect.get("height", "0")) for name, rect in [("r", refreshed), ("x", expired), ("e", errors)]}
    assert heights["r"] == 3 * heights["x"] == 6 * heights["e"]
    # Stacked: refreshed at the bottom, errors on it, expired on top, all in the same column.
    assert float(errors.get("y", "0")) + heights["e"] == float(refreshed.get("y", "0"))
    assert float(expired.get("y", "0")) + heights["x"] == float(errors.get("y", "0"))
    assert refreshed.get("x") == errors.get("x") == expired.get("x")
    assert refreshed.find(f"{SVG}title").text == "2026-05-24: 6 refreshed"  # type: ignore[union-attr]
    assert {"0", "2", "4", "6", "8", "10"} <= set(texts(root))  # 9 handled: an axis up to 10, by 2


def test_days_without_runs_say_so_instead_of_drawing_an_empty_frame() -> None:
    root = parse(outcome_chart(fortnight()))

    assert not any(rect.get("class", "").startswith("bar-") for rect in root.iter(f"{SVG}rect"))
    assert "No refresh runs in these days" in texts(root)
    assert describe([]) == "No days to show."
    assert "No refresh runs in these days" in texts(parse(outcome_chart([])))


def test_every_text_is_escaped() -> None:
    svg = outcome_chart(fortnight(), title='</title><script>alert("x")</script>&', ident='a"b')

    root = parse(svg)  # still well-formed XML
    assert "<script>" not in svg and root.find(f"{SVG}title").text == '</title><script>alert("x")</script>&'  # type: ignore[union-attr]
    assert root.get("aria-labelledby") == 'a"b-title a"b-desc'
    assert not list(root.iter(f"{SVG}script"))


def test_large_counts_keep_a_round_axis_and_bars_inside_the_plot() -> None:
    days = [DailyOutcomes(FIRST + timedelta(days=n), refreshed=1000 * n) for n in range(14)]

    root = parse(outcome_chart(days))

    assert "20000" in texts(root) and "13000" not in texts(root)  # a 1-2-5 ceiling above the 13000 peak
    for rect in bars(root, "refreshed"):
        top, height = float(rect.get("y", "0")), float(rect.get("height", "0"))
        assert top >= 16 and top + height <= 216.05  # within the plot area's margins
