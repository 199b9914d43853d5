"""Word error rate for transcription tests (pure, no dependencies).

Both texts are normalised the same way first, so only real recognition errors
count: case, punctuation, hyphens and apostrophes are dropped, numbers written
as digits become words ("42" -> "forty two"), and a few British/American
spellings are folded together.
"""

from __future__ import annotations

import re

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

_SPELLINGS = {
    "harbour": "harbor", "colour": "color", "favourite": "favorite", "neighbour": "neighbor", "centre": "center",
    "metre": "meter", "theatre": "theater", "grey": "gray", "travelling": "traveling", "organise": "organize",
    "ok": "okay", "mr": "mister", "mrs": "missus", "dr": "doctor",
}


def number_words(value: int) -> list[str]:
    """English cardinal words for 0 <= value < 1,000,000 (42 -> forty two); larger values stay digits."""
    if value < 0 or value >= 1_000_000:
        return [str(value)]
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        tens, ones = divmod(value, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return [_ONES[hundreds], "hundred"] + (number_words(rest) if rest else [])
    thousands, rest = divmod(value, 1000)
    return number_words(thousands) + ["thousand"] + (number_words(rest) if rest else [])


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelled out."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"[-‐–—/]", " ", text)
    text = text.replace("'", "")
    text = re.sub(r"[^\w\s]", " ", text)
    words: list[str] = []
    for token in text.split():
        if token.isdigit():
            words.extend(number_words(int(token)))
        else:
            words.append(_SPELLINGS.get(token, token))
    return words


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_word != hyp_word),  # substitution or match
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
