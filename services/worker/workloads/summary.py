"""An extractive summary of a transcript, made locally: TextRank over sentences.

Sentences are nodes; two sentences are linked by how many content words they
share, normalised by their lengths (Mihalcea & Tarau 2004); PageRank over that
graph scores how central each sentence is. The summary is the top sentences, in
the order they were spoken. Pure Python and deterministic (ties go to the earlier
sentence), so it is cheap and unit-testable; no model, no network.
"""

from __future__ import annotations

import math
import re

# Words that carry no topic; without them every sentence would be "similar".
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves
said says one two every many much still yet ever
""".split())

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

DAMPING = 0.85
MAX_SENTENCES = 600  # the graph is O(n^2): a longer transcript is sampled down to this many sentences


def split_sentences(text: str) -> list[str]:
    """Sentences at . ! ? followed by space and a capital or digit (Whisper punctuates)."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def content_words(sentence: str) -> list[str]:
    return [word for word in _WORD.findall(sentence.lower()) if word not in STOPWORDS and len(word) > 1]


def similarity(words_a: list[str], words_b: list[str]) -> float:
    if len(words_a) < 2 or len(words_b) < 2:
        return 0.0
    shared = len(set(words_a) & set(words_b))
    return shared / (math.log(len(words_a)) + math.log(len(words_b)))


def textrank_scores(sentences: list[str], iterations: int = 50, tolerance: float = 1e-6) -> list[float]:
    words = [content_words(sentence) for sentence in sentences]
    count = len(sentences)
    weights = [[similarity(words[i], words[j]) if i != j else 0.0 for j in range(count)] for i in range(count)]
    out_totals = [sum(row) for row in weights]
    # Only the links that exist: the graph of a long transcript is sparse.
    incoming = [[(j, weights[j][i] / out_totals[j]) for j in range(count) if weights[j][i] > 0] for i in range(count)]
    scores = [1.0 / count] * count if count else []
    for _ in range(iterations):
        updated = [(1 - DAMPING) / count + DAMPING * sum(share * scores[j] for j, share in incoming[i])
                   for i in range(count)]
        change = sum(abs(a - b) for a, b in zip(updated, scores))
        scores = updated
        if change < tolerance:
            break
    return scores


def summarize(text: str, max_sentences: int = 5) -> list[str]:
    """The ``max_sentences`` most central sentences of ``text``, in their original order.
    A transcript longer than MAX_SENTENCES is ranked on sentences sampled evenly over
    its whole length, so its end counts as much as its beginning."""
    sentences = split_sentences(text)
    if len(sentences) > MAX_SENTENCES:
        step = len(sentences) / MAX_SENTENCES
        sentences = [sentences[int(i * step)] for i in range(MAX_SENTENCES)]
    if len(sentences) <= max_sentences:
        return sentences
    scores = textrank_scores(sentences)
    ranked = sorted(range(len(sentences)), key=lambda i: (-round(scores[i], 12), i))
    return [sentences[i] for i in sorted(ranked[:max_sentences])]
