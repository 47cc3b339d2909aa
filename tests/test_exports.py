"""The CSV formula guard on its own: what counts as a formula, and that a number never does."""

from __future__ import annotations

import pytest

from reviewscore.core.exports import kept_names, neutralise


@pytest.mark.parametrize(
    "cell", ["-1", "+44", "-3.5e2", "1E3", ".5", "-.5", "007", "12", "", "text", "a=b", " =1"]
)
def test_numbers_and_plain_text_are_never_altered(cell: str) -> None:
    assert neutralise(cell) == cell


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        "@SUM(A1:A9)",
        "@moviefan",
        "+cmd|' /C calc'!A0",
        "-2+3",
        "-1-1",
        "+44 ",
        "-",
        "=",
        "\tx",
        "\r=1",
        "-1e",
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


def test_kept_columns_named_like_result_columns_are_prefixed() -> None:
    assert kept_names(["label", "title", "id", "input_id"]) == [
        "input_label",
        "title",
        "input_id",
        "input_input_id",
    ]
