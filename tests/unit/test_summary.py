"""The report's extractive summary (TextRank over sentences): a pure function."""

from __future__ import annotations

from renderfarm.worker.workloads.summary import similarity, split_sentences, summarize, textrank_scores

TOPIC = [
    "The lighthouse keeper climbed the stairs to light the lamp every evening.",
    "Bananas are yellow and taste sweet.",
    "The keeper wrote notes about the lamp and the lighthouse in his book.",
    "Parking downtown costs twelve dollars.",
    "Every morning the lighthouse keeper cleaned the lamp and the stairs.",
]


def test_sentences_split_at_end_punctuation_but_not_inside_numbers():
    assert split_sentences("It took 3.5 seconds. Then it stopped!  Why? Nobody knows") == [
        "It took 3.5 seconds.", "Then it stopped!", "Why?", "Nobody knows"]
    assert split_sentences("   ") == []


def test_the_summary_picks_the_central_sentences_in_spoken_order():
    summary = summarize(" ".join(TOPIC), max_sentences=3)
    assert summary == [TOPIC[0], TOPIC[2], TOPIC[4]]


def test_off_topic_sentences_score_lowest():
    scores = textrank_scores(TOPIC)
    assert max(scores[1], scores[3]) < min(scores[0], scores[2], scores[4])


def test_a_short_text_is_its_own_summary_and_empty_stays_empty():
    assert summarize("One sentence only.", max_sentences=5) == ["One sentence only."]
    assert summarize("", max_sentences=5) == []


def test_the_summary_is_deterministic_with_ties_going_to_the_earlier_sentence():
    same = ["Red apples fall.", "Red apples fall.", "Red apples fall."]
    assert summarize(" ".join(same), max_sentences=1) == ["Red apples fall."]
    assert summarize(" ".join(TOPIC), 2) == summarize(" ".join(TOPIC), 2)


def test_sentences_without_shared_content_words_are_unrelated():
    assert similarity(["lamp", "stairs"], ["banana", "yellow"]) == 0.0
    assert similarity(["lamp", "stairs"], ["lamp", "yellow"]) > 0.0


def test_a_long_transcript_is_ranked_over_its_whole_length():
    from renderfarm.worker.workloads.summary import MAX_SENTENCES

    # Unrelated filler first; the on-topic sentences only at the very end, each said
    # three times so an even sample over the whole text cannot miss them all.
    filler = [f"Zq{n} xv{n} wk{n} pj{n}." for n in range(3 * MAX_SENTENCES)]
    topic = [sentence for sentence in TOPIC if "lighthouse" in sentence or "keeper" in sentence]
    text = " ".join(filler + [sentence for sentence in topic for _ in range(3)])
    summary = summarize(text, max_sentences=2)
    assert len(summary) == 2 and all(sentence in topic for sentence in summary), summary
