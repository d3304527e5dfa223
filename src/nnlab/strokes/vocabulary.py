"""Class vocabulary: Quick, Draw! words have spaces, Kaggle labels underscores. One mapping,
converted only at the edges."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from nnlab.errors import DataError
from nnlab.fileio import read_classes, write_classes


def word_to_label(word: str) -> str:
    """The Kaggle label of a word ("The Eiffel Tower" -> "The_Eiffel_Tower")."""
    return word.replace(" ", "_")


def label_to_word(label: str) -> str:
    """The Quick, Draw! word of a Kaggle label (no word contains an underscore)."""
    return label.replace("_", " ")


def sort_words(words: Iterable[str]) -> list[str]:
    """Distinct words in the Kaggle notebooks' order: case-insensitive sort (ties by case)."""
    return sorted({label_to_word(w) for w in words}, key=lambda w: (w.lower(), w))


class Vocabulary:
    """The one mapping between class indices, words (with spaces) and Kaggle labels."""

    def __init__(self, words: Sequence[str]):
        self.words = [label_to_word(w) for w in words]
        if len(set(self.words)) != len(self.words):
            dup = sorted(w for w, n in Counter(self.words).items() if n > 1)
            raise DataError(f"class list repeats {dup[:5]}")
        self._index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        """Vocabulary of these words in Kaggle order (case-insensitive sort)."""
        return cls(sort_words(words))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a classes.txt (one word or Kaggle label per line, in class order)."""
        return cls(read_classes(Path(path)))

    def save(self, path: str | os.PathLike) -> None:
        write_classes(Path(path), self.words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return label_to_word(word) in self._index

    def index(self, word: str) -> int:
        """Class index of a word or Kaggle label; -1 when unknown."""
        return self._index.get(label_to_word(word), -1)

    @property
    def labels(self) -> list[str]:
        """Kaggle labels (underscores), in class order."""
        return [word_to_label(w) for w in self.words]
