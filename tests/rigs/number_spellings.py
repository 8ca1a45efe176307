"""Hypothesis strategies for the text a request puts where a number goes, most of it not a number we write.

`str.isdigit()` is true for '²' (which `int()` refuses) and for other scripts' digits (which `int()`
reads: '١' is 1); `int()` takes signs, spaces, underscores and leading zeros too. The fuzz tests of
every public route and API operation draw from `number_spellings()`, and `canonical()` says which
drawn texts are a number as `str()` writes it (the only spelling the edge may accept).
"""

from __future__ import annotations

from hypothesis import strategies as st

FULL_WIDTH = "０１２３４５６７８９"
# Each int() reads, or isdigit() takes: superscripts, Arabic-Indic, Devanagari, Bengali, Thai, full-width.
FOREIGN_DIGITS = "²³¹" + "٠١٢٣٤٥٦٧٨٩" + "०१२३४५६७८९" + "০১২" + "๑๒๓" + FULL_WIDTH
# The spellings the outside run found, and their neighbours.
KNOWN = ["²", "1.²", "١", "٠١", "01", "00", "１", "+1", "-1", " 1", "1 ", "1_0", "1e3", "1.0", "0x10", "١٢٣", "¹",
         "9" * 19, "9" * 30, "9" * 5000, ""]  # fmt: skip


def _mixed(ascii_digits: str, foreign: str, at: int) -> str:
    at = min(at, len(ascii_digits))
    return ascii_digits[:at] + foreign + ascii_digits[at:]


def number_spellings(max_value: int = 2**64) -> st.SearchStrategy[str]:
    """Canonical numbers and every near miss: foreign and full-width digits, signs, spaces, zeros, huge ones."""
    canonical_numbers = st.integers(0, max_value).map(str)
    return st.one_of(
        canonical_numbers,
        st.sampled_from(KNOWN),
        st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6),
        st.text(alphabet=FOREIGN_DIGITS, min_size=1, max_size=6),
        st.builds(_mixed, canonical_numbers, st.sampled_from(FOREIGN_DIGITS), st.integers(0, 20)),
        st.builds(lambda sign, n: sign + n, st.sampled_from(["+", "-", " ", "0", "00", "\t"]), canonical_numbers),
        st.builds(lambda n, tail: n + tail, canonical_numbers, st.sampled_from([" ", ".0", "_0", "e1", "\n", "²"])),
    )


def canonical(text: str, low: int = 0, high: int = 2**64) -> bool:
    """Whether `text` is a number in [low, high] as `str()` writes it."""
    if not (0 < len(text) <= 40 and text.isascii() and text.isdigit()):  # int() refuses 4,300 digits and more
        return False
    return str(int(text)) == text and low <= int(text) <= high
