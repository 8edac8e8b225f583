"""What a vocabulary is, without TensorFlow: a sentencepiece model plus PaLI's added tokens, and its JSON form.

Ids follow T5: 0 is padding (and the decoder's start token), 1 EOS, 2 UNK (the shipped model is trained with
pad_id=0, eos_id=1, unk_id=2 and no BOS), then the model's own pieces. After them come, as user-defined pieces
(always one id each, wherever they occur in a text, so they survive encode and decode):

  the 1024 location tokens  <loc0000> .. <loc1023>   (tasks.locations)
  the UL2 mode tokens       [NLU] [NLG] [S2S]        (tasks.ul2_objectives)
  `extra_ids` sentinels     <extra_id_0> is the highest id, <extra_id_1> the next lower, ...

so sentinel i is id vocab_size - 1 - i, as seqio's SentencePieceVocabulary and T5's span corruption count.
A token the model already has (Gemma's tokenizer ships <loc0000>...) keeps its id and is not added again.

`VocabSpec` names all of that; its `to_json()` goes into a model checkpoint so that the checkpoint says which
vocabulary it was trained with (model file, its SHA-256, added tokens, size), and `VocabSpec.from_json` refuses
a model file whose content differs. `Tokenizer` encodes and decodes with plain sentencepiece: a host without
TensorFlow (the GPU machine) can still turn a checkpoint's outputs into text. `tasks.vocab` wraps the same
model as a seqio Vocabulary for the input pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from tasks import locations

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "spm")
DEFAULT_MODEL = os.path.join(SHIPPED_DIR, "pali_tiny.model")  # written by `python -m tasks.train_vocab`

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MODE_TOKENS: tuple[str, ...] = ("[NLU]", "[NLG]", "[S2S]")
NUM_EXTRA_IDS = 100

_USER_DEFINED = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED


@dataclasses.dataclass(frozen=True)
class VocabSpec:
  """A sentencepiece model file and the tokens added on top of it.

  Attributes:
    sentencepiece_model: path of the base model (the shipped one, mT5's, ...).
    extra_ids: number of sentinels appended last (T5: 100).
    loc_tokens: whether the location tokens are added.
    mode_tokens: the UL2 mode tokens added after them.
  """
  sentencepiece_model: str = DEFAULT_MODEL
  extra_ids: int = NUM_EXTRA_IDS
  loc_tokens: bool = True
  mode_tokens: tuple[str, ...] = MODE_TOKENS

  def __post_init__(self):
    if self.extra_ids < 0:
      raise ValueError(f"extra_ids must be >= 0, got {self.extra_ids}")
    object.__setattr__(self, "mode_tokens", tuple(self.mode_tokens))  # JSON and gin give lists

  def added_tokens(self) -> list[str]:
    """The user-defined tokens requested on top of the model, in id order (before the sentinels)."""
    return (list(locations.LOC_TOKENS) if self.loc_tokens else []) + list(self.mode_tokens)

  def to_json(self) -> dict:
    """What a checkpoint records. The shipped model is named by file name only, so a moved checkout still
    finds it; any other model by its path as given."""
    path = self.sentencepiece_model
    shipped = os.path.dirname(os.path.abspath(path)) == SHIPPED_DIR
    return {"type": "sentencepiece", "sentencepiece_model": os.path.basename(path) if shipped else path,
            "sha256": _sha256(path), "extra_ids": self.extra_ids, "loc_tokens": self.loc_tokens,
            "mode_tokens": list(self.mode_tokens), "vocab_size": Tokenizer(self).vocab_size}

  @classmethod
  def from_json(cls, obj: dict) -> "VocabSpec":
    """The spec a checkpoint recorded; raises ValueError if the model file is missing or has other content."""
    path = obj["sentencepiece_model"]
    if os.path.dirname(path) == "":
      path = os.path.join(SHIPPED_DIR, path)
    if not os.path.exists(path):
      raise ValueError(f"vocabulary: sentencepiece model {path} (recorded in the checkpoint) does not exist")
    digest = _sha256(path)
    if digest != obj["sha256"]:
      raise ValueError(f"vocabulary: {path} has SHA-256 {digest[:12]}..., but the checkpoint was trained with "
                       f"a model of SHA-256 {obj['sha256'][:12]}...")
    spec = cls(path, obj["extra_ids"], obj["loc_tokens"], tuple(obj["mode_tokens"]))
    size = Tokenizer(spec).vocab_size
    if "vocab_size" in obj and size != obj["vocab_size"]:
      raise ValueError(f"vocabulary: rebuilt vocabulary has {size} ids, the checkpoint recorded {obj['vocab_size']}")
    return spec


@functools.lru_cache(maxsize=None)
def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=8)
def model_proto(spec: VocabSpec) -> bytes:
  """The serialized sentencepiece model with the added tokens and the sentinels appended (cached per spec).

  Raises:
    ValueError: the file is missing or is not a T5-style model (pad 0, EOS 1, UNK 2).
  """
  if not os.path.exists(spec.sentencepiece_model):
    raise ValueError(f"vocabulary: sentencepiece model {spec.sentencepiece_model} does not exist "
                     "(the shipped one is written by `python -m tasks.train_vocab`)")
  with open(spec.sentencepiece_model, "rb") as f:
    model = sentencepiece_model_pb2.ModelProto.FromString(f.read())
  trainer = model.trainer_spec
  if (trainer.pad_id, trainer.eos_id, trainer.unk_id) != (PAD_ID, EOS_ID, UNK_ID):
    raise ValueError(f"vocabulary: {spec.sentencepiece_model} has pad/eos/unk ids "
                     f"{trainer.pad_id}/{trainer.eos_id}/{trainer.unk_id}; T5 models need 0/1/2")
  existing = {p.piece for p in model.pieces}
  for token in spec.added_tokens():
    if token not in existing:
      model.pieces.add(piece=token, score=0.0, type=_USER_DEFINED)
  # Sentinels last and in reverse, as seqio adds them, so <extra_id_0> is the highest id. The leading '▁' makes
  # each one a word of its own, as in T5's vocabularies.
  for i in reversed(range(spec.extra_ids)):
    model.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0, type=_USER_DEFINED)
  return model.SerializeToString()


@functools.lru_cache(maxsize=8)
def processor(spec: VocabSpec) -> sentencepiece.SentencePieceProcessor:
  """A loaded SentencePieceProcessor for the spec (cached: loading a 250k-piece model takes a while)."""
  sp = sentencepiece.SentencePieceProcessor()
  sp.LoadFromSerializedProto(model_proto(spec))
  return sp


class Tokenizer:
  """Encodes and decodes with plain sentencepiece (no TensorFlow); ids as the seqio vocabulary gives them.

  It answers what a model needs at inference (encode, decode, vocab_size, pad/eos/unk ids), so a host
  without TensorFlow can use it where the input pipeline uses tasks.vocab.PaliVocabulary.

  Args:
    spec: the vocabulary.
  """

  def __init__(self, spec: VocabSpec):
    self.spec = spec
    self.sp = processor(spec)

  pad_id, eos_id, unk_id = PAD_ID, EOS_ID, UNK_ID

  @property
  def vocab_size(self) -> int:
    return self.sp.GetPieceSize()

  def piece_id(self, piece: str) -> int:
    """The id of a piece; raises KeyError if the vocabulary lacks it (sentencepiece would answer UNK)."""
    i = self.sp.PieceToId(piece)
    if i == UNK_ID and piece != self.sp.IdToPiece(UNK_ID):
      raise KeyError(f"{piece!r} is not a piece of {self.spec.sentencepiece_model}")
    return i

  @property
  def loc_ids(self) -> list[int]:
    """Ids of <loc0000> .. <loc1023>, in bin order."""
    return [self.piece_id(t) for t in locations.LOC_TOKENS]

  @property
  def mode_token_ids(self) -> dict[str, int]:
    """Mode token text -> id, as tasks.ul2_objectives.ul2_denoise takes them."""
    return {t: self.piece_id(t) for t in self.spec.mode_tokens}

  @property
  def sentinel_ids(self) -> list[int]:
    """Id of sentinel i at index i: vocab_size - 1 - i."""
    return [self.vocab_size - 1 - i for i in range(self.spec.extra_ids)]

  def encode(self, text: str) -> list[int]:
    """Token ids of a text, without EOS."""
    return self.sp.EncodeAsIds(text)

  def decode(self, ids) -> str:
    """The text of ids up to the first EOS (padding decodes to nothing)."""
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
      ids = ids[:ids.index(EOS_ID)]
    return self.sp.DecodeIds(ids)


__all__ = ["SHIPPED_DIR", "DEFAULT_MODEL", "PAD_ID", "EOS_ID", "UNK_ID", "MODE_TOKENS", "NUM_EXTRA_IDS",
           "VocabSpec", "model_proto", "processor", "Tokenizer"]
