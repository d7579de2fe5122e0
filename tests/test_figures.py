import pytest

from ramanseg.figures import figure_bytes, new_figure


def line_figure():
    figure = new_figure(2.0, 2.0)
    figure.subplots().plot([0, 1], [1, 0])
    return figure


def test_figure_bytes_are_deterministic_and_untagged():
    first, second = figure_bytes(line_figure()), figure_bytes(line_figure())
    assert first == second
    assert set(first) == {".png", ".pdf"}
    assert b"Software" not in first[".png"]
    assert b"CreationDate" not in first[".pdf"] and b"Producer" not in first[".pdf"]
    assert set(figure_bytes(line_figure(), [".png"])) == {".png"}


def test_figure_bytes_rejects_other_formats():
    with pytest.raises(ValueError, match=r"\.png or \.pdf, not \.svg"):
        figure_bytes(new_figure(1.0, 1.0), [".svg"])
