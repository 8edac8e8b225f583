"""A closed word-level vocabulary: whitespace tokenisation over a fixed word list.

Meant for procedurally generated captions (see `tasks.scenes`), whose vocabulary is small and known in advance,
so a learned subword tokenizer would only add noise. Ids 0, 1 and 2 are reserved for padding, end of sequence
and unknown words; the words themselves get ids from 3 on, in the order they were given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
_RESERVED = ("<pad>", "<eos>", "<unk>")  # printable names of ids 0, 1, 2


class WordVocabulary:
  """Maps whitespace-separated words to integer ids and back.

  Example:
    >>> vocab = WordVocabulary(["a", "red", "circle"])
    >>> vocab.encode("a red square")
    [3, 4, 2, 1]
    >>> vocab.decode([3, 4, 5, 1, 0, 0])
    'a red circle'
  """

  pad_id = PAD_ID
  eos_id = EOS_ID
  unk_id = UNK_ID

  def __init__(self, words: Iterable[str]):
    """Builds the vocabulary.

    Args:
      words: the known words; duplicates are dropped (first occurrence wins), so word i of the de-duplicated
        list gets id 3 + i.

    Raises:
      ValueError: a word is empty, contains whitespace, or is one of the reserved names '<pad>', '<eos>', '<unk>'.
    """
    self._id_to_word: list[str] = list(_RESERVED)
    self._word_to_id: dict[str, int] = {}
    for word in words:
      if not word or word.split() != [word]:
        raise ValueError(f"vocabulary words must be non-empty and free of whitespace, got {word!r}")
      if word in _RESERVED:
        raise ValueError(f"{word!r} is a reserved token name")
      if word not in self._word_to_id:
        self._word_to_id[word] = len(self._id_to_word)
        self._id_to_word.append(word)

  @property
  def vocab_size(self) -> int:
    """Number of ids, reserved ones included (the embedding table size)."""
    return len(self._id_to_word)

  @property
  def words(self) -> list[str]:
    """The known words in id order (without the reserved tokens)."""
    return self._id_to_word[len(_RESERVED):]

  def __len__(self) -> int:
    return self.vocab_size

  def word_id(self, word: str) -> int:
    """The id of `word`, or UNK_ID if it is not in the vocabulary."""
    return self._word_to_id.get(word, UNK_ID)

  def encode(self, text: str) -> list[int]:
    """Splits `text` on whitespace and maps each word to its id (unknown words -> UNK_ID), then appends EOS_ID.

    Args:
      text: a caption or prompt.

    Returns:
      The ids, ending in EOS_ID; an empty text gives [EOS_ID].
    """
    return [self._word_to_id.get(word, UNK_ID) for word in text.split()] + [EOS_ID]

  def decode(self, ids: Iterable[int]) -> str:
    """Maps ids back to words, the inverse of `encode` for in-vocabulary text.

    Args:
      ids: token ids (a list or a 1-D array). Decoding stops at the first EOS_ID; PAD_ID is skipped; UNK_ID
        prints as '<unk>'.

    Returns:
      The words joined by single spaces.

    Raises:
      ValueError: an id is negative or not below vocab_size.
    """
    words = []
    for token in ids:
      token = int(token)
      if token == EOS_ID:
        break
      if token == PAD_ID:
        continue
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"token id {token} is outside the vocabulary (size {self.vocab_size})")
      words.append(self._id_to_word[token])
    return " ".join(words)

  def to_json(self) -> dict:
    """The vocabulary as a checkpoint's model_config.json records it."""
    return {"type": "words", "words": self.words}

  @classmethod
  def from_json(cls, obj: dict) -> "WordVocabulary":
    return cls(obj["words"])

  def encode_batch(self, texts: Sequence[str], length: int) -> np.ndarray:
    """Encodes a batch of texts to a fixed length.

    Texts longer than `length` ids (EOS included) are truncated so that the last kept id is still EOS_ID;
    shorter ones are right-padded with PAD_ID.

    Args:
      texts: B texts.
      length: the number of ids per row, at least 1.

    Returns:
      int32 [B, length] ids.
    """
    if length < 1:
      raise ValueError(f"length must be at least 1, got {length}")
    out = np.full((len(texts), length), PAD_ID, dtype=np.int32)  # [B, length]
    for row, text in enumerate(texts):
      ids = self.encode(text)
      if len(ids) > length:
        ids = ids[:length - 1] + [EOS_ID]
      out[row, :len(ids)] = ids
    return out
