"""Known English speech for transcription checks: the text and espeak-ng audio of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

# About 50 s when spoken by espeak-ng at 150 words per minute. The "en" voice:
# "en-us" gave ~7% WER with tiny.en, "en" ~2%.
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more than a century. Every evening the keeper "
    "climbed the narrow stairs to light the lamp, and every morning he wrote a short note in his book about "
    "the weather and the ships that passed. Most days were quiet. The wind moved across the water, the birds "
    "circled above the rocks, and the fishing boats returned to the harbour before dark. In the winter the "
    "storms were long and cold, and the keeper listened to the waves breaking against the stones below. He "
    "never complained about the work. He said that a light in the dark was a simple promise, and that keeping "
    "a promise was the most important thing a person could do. When he finally retired, the village gave him "
    "a small garden near the school, where he grew tomatoes and told stories to the children."
)


def synthesise(path: Path, text: str = PARAGRAPH) -> Path:
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(path), text], check=True)
    return path
