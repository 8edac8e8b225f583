"""The seqio vocabulary of every PaLI task: a sentencepiece model + location tokens + UL2 mode tokens + sentinels.

`vocabulary()` is the gin-configurable entry point; by default it is the shipped tiny model
(tasks/data/spm/pali_tiny.model, 6000 pieces, 7127 ids in all), and one binding swaps in any T5-style model,
e.g. mT5's 250k pieces, with the same tokens added on top:

  tasks.vocab.vocabulary.sentencepiece_model = '/path/mt5.model'

Ids and added tokens are described in tasks.vocab_spec (which does the same without TensorFlow):

  vocab = vocabulary()
  vocab.encode("<loc0045><loc0091><loc0502><loc0914> red circle")  # each location token is one id
  vocab.loc_ids[45], vocab.mode_token_ids["[NLU]"], vocab.sentinel_ids[0] == vocab.vocab_size - 1

A `PaliVocabulary()` built without a spec follows gin at each use: tasks.registry registers its tasks at
import, before a gin file's bindings are applied, and its features must still end up with the configured
model. `to_json()` / `from_json()` carry a vocabulary into and out of a model checkpoint.
"""

from __future__ import annotations

import dataclasses

import gin
from tasks import quiet_tensorflow  # noqa: F401  first: TensorFlow without its start-up lines (seqio imports it)
import seqio
import sentencepiece

from tasks import vocab_spec


@dataclasses.dataclass(frozen=True)
class _Context:
  """What seqio.SentencePieceVocabulary reads from its `_model_context()`: the processor and the proto."""
  tokenizer: sentencepiece.SentencePieceProcessor
  sp_model: bytes


class PaliVocabulary(seqio.SentencePieceVocabulary):
  """seqio's SentencePieceVocabulary over the augmented model of a `VocabSpec`.

  seqio loads a model file and appends the sentinels itself; here the proto with the location and mode tokens
  is built in memory (tasks.vocab_spec.model_proto) and handed over instead, so nothing is written to disk
  and the Python and TF tokenizers see the same pieces.

  Args:
    spec: the vocabulary; None follows the gin-configured `vocabulary()` at each use.
  """

  def __init__(self, spec: vocab_spec.VocabSpec | None = None):
    self._spec = spec
    resolved = self.spec
    super().__init__(resolved.sentencepiece_model, extra_ids=resolved.extra_ids)

  @property
  def spec(self) -> vocab_spec.VocabSpec:
    return self._spec if self._spec is not None else vocabulary().spec

  def _model_context(self) -> _Context:
    # Not memoised on the instance: a gin-following vocabulary must see a rebinding; the proto and the
    # processor are cached per spec in vocab_spec.
    spec = self.spec
    return _Context(vocab_spec.processor(spec), vocab_spec.model_proto(spec))

  @property
  def extra_ids(self) -> int:
    return self.spec.extra_ids

  @property
  def sentencepiece_model_file(self) -> str:
    return self.spec.sentencepiece_model

  @property
  def loc_ids(self) -> list[int]:
    """Ids of <loc0000> .. <loc1023>, in bin order."""
    return vocab_spec.Tokenizer(self.spec).loc_ids

  @property
  def mode_token_ids(self) -> dict[str, int]:
    """UL2 mode token text -> id."""
    return vocab_spec.Tokenizer(self.spec).mode_token_ids

  @property
  def sentinel_ids(self) -> list[int]:
    """Id of <extra_id_i> at index i: vocab_size - 1 - i."""
    return vocab_spec.Tokenizer(self.spec).sentinel_ids

  def to_json(self) -> dict:
    """The vocabulary as a checkpoint records it (see tasks.vocab_spec.VocabSpec.to_json)."""
    return self.spec.to_json()

  @classmethod
  def from_json(cls, obj: dict) -> "PaliVocabulary":
    """The vocabulary a checkpoint recorded; ValueError if its model file is missing or changed."""
    return cls(vocab_spec.VocabSpec.from_json(obj))

  def __eq__(self, other) -> bool:
    return isinstance(other, PaliVocabulary) and self.spec == other.spec

  def __str__(self) -> str:
    spec = self.spec
    return (f"PaliVocabulary(file={spec.sentencepiece_model}, extra_ids={spec.extra_ids}, "
            f"loc_tokens={spec.loc_tokens}, mode_tokens={list(spec.mode_tokens)})")


@gin.configurable(module="tasks.vocab")
def vocabulary(sentencepiece_model: str = vocab_spec.DEFAULT_MODEL,
               extra_ids: int = vocab_spec.NUM_EXTRA_IDS, loc_tokens: bool = True,
               mode_tokens: tuple[str, ...] = vocab_spec.MODE_TOKENS) -> PaliVocabulary:
  """The vocabulary of the configured sentencepiece model (see the module docstring)."""
  return PaliVocabulary(vocab_spec.VocabSpec(sentencepiece_model, extra_ids, loc_tokens, tuple(mode_tokens)))


@gin.configurable(module="tasks.vocab")
def vocab_size(multiple: int = 128) -> int:
  """The embedding table size for gin (`ul2.config.vocab_size = @tasks.vocab.vocab_size()`): the configured
  vocabulary's size rounded up to `multiple`, so that the table splits evenly over a 'model' mesh axis as
  T5X pads (the padding ids are never produced)."""
  return -(-vocabulary().vocab_size // multiple) * multiple


__all__ = ["PaliVocabulary", "vocabulary", "vocab_size"]
