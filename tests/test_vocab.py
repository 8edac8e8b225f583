"""The PaLI vocabulary (tasks.vocab, tasks.vocab_spec): ids, added tokens, round trips, gin swap, JSON."""

import io
import os
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from tasks import locations
from tasks import multilingual
from tasks import registry
from tasks import train_vocab
from tasks import vocab
from tasks import vocab_spec

BASE_PIECES = 6000  # what `python -m tasks.train_vocab` trains


@pytest.fixture(scope="module")
def v():
  return vocab.vocabulary()


def small_model(path, **ids):
  """Trains a 600-piece sentencepiece model at `path` (a stand-in for a user's model, e.g. mT5's)."""
  sentences = list(multilingual.corpus(1, 400))
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=600, model_type="bpe",
      byte_fallback=True, minloglevel=2, **ids)
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return str(path)


def test_shipped_model_is_small_and_t5_style():
  size = os.path.getsize(vocab_spec.DEFAULT_MODEL)
  assert size < 500 * 1024, size
  with open(vocab_spec.DEFAULT_MODEL, "rb") as f:
    trainer = sentencepiece_model_pb2.ModelProto.FromString(f.read()).trainer_spec
  assert (trainer.pad_id, trainer.eos_id, trainer.unk_id, trainer.bos_id) == (0, 1, 2, -1)
  assert trainer.byte_fallback and trainer.vocab_size == BASE_PIECES


def test_ids_and_sizes(v):
  assert v.vocab_size == BASE_PIECES + locations.NUM_BINS + 3 + 100
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  assert v.extra_ids == 100
  # T5: <extra_id_0> is the highest id, counting down.
  assert v.sentinel_ids[:3] == [v.vocab_size - 1, v.vocab_size - 2, v.vocab_size - 3]
  assert v.tokenizer.IdToPiece(v.vocab_size - 1) == "▁<extra_id_0>"
  assert v.decode([v.sentinel_ids[0], v.sentinel_ids[1]]) == "<extra_id_0> <extra_id_1>"
  assert v.loc_ids == list(range(BASE_PIECES, BASE_PIECES + locations.NUM_BINS))
  assert list(v.mode_token_ids.values()) == list(range(BASE_PIECES + 1024, BASE_PIECES + 1027))
  assert vocab.vocab_size() == 7168  # padded to a multiple of 128


@pytest.mark.parametrize("token", ["[NLU]", "[NLG]", "[S2S]", "<loc0000>", "<loc0513>", "<loc1023>"])
def test_added_tokens_are_single_ids_anywhere(v, token):
  for text in (token, f"detect{token}", f"a {token} b", f"{token}{token}"):
    ids = v.encode(text)
    piece_id = v.tokenizer.PieceToId(token)
    assert ids.count(piece_id) == text.count(token), (text, v.tokenizer.IdToPiece(ids))
    assert v.decode(ids) == text


def test_loc_token_round_trip_box_text_ids_text_box(v):
  rng = np.random.default_rng(0)
  for _ in range(50):
    h, w = (int(x) for x in rng.integers(16, 1100, size=2))
    y0, y1 = sorted(rng.uniform(0, h, size=2))
    x0, x1 = sorted(rng.uniform(0, w, size=2))
    text = f"{locations.box_to_tokens((y0, x0, y1, x1), h, w)} red circle ; " \
           f"{locations.box_to_tokens((0, 0, h, w), h, w)} square"
    ids = v.encode(text)
    assert sum(i in v.loc_ids for i in ids) == 8  # every token one id
    back = v.decode(ids + [v.eos_id, 5, 6])  # decoding stops at EOS
    assert back == text
    boxes = locations.tokens_to_boxes(back, h, w)
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], (y0, x0, y1, x1), atol=max(h, w) / 2048 + 1e-9)


def test_tf_and_python_tokenizers_agree(v):
  texts = list(multilingual.corpus(3, 16)) + ["<loc0001><loc0002> [NLG] 3.75 <extra_id_5>", "ocr"]
  for text in texts:
    ids = v.encode(text)
    assert v.encode_tf(tf.constant(text)).numpy().tolist() == ids
    assert v.decode_tf(tf.constant(ids)).numpy().decode() == v.decode(ids)
    assert vocab_spec.Tokenizer(v.spec).encode(text) == ids


def test_eight_languages_round_trip_without_unk(v):
  for text in multilingual.corpus(11, 8 * 25):
    ids = v.encode(text)
    assert v.unk_id not in ids
    # The model normalises with NFKC, as T5's do: the Chinese full-width colon comes back as ':'.
    assert v.decode(ids) == unicodedata.normalize("NFKC", text)


def test_gin_swaps_in_another_model_with_the_same_added_tokens(tmp_path):
  path = small_model(tmp_path / "user.model", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  follows_gin = vocab.PaliVocabulary()
  with registry.gin_bound("tasks.vocab.vocabulary.sentencepiece_model", path):
    other = vocab.vocabulary()
    assert other.vocab_size == 600 + 1024 + 3 + 100
    assert follows_gin.vocab_size == other.vocab_size and follows_gin == other
    ids = other.encode("<loc0042>[S2S]")
    assert ids[-2:] == [other.loc_ids[42], other.mode_token_ids["[S2S]"]]
    assert other.sentinel_ids[0] == other.vocab_size - 1
  assert follows_gin.vocab_size == BASE_PIECES + 1127


def test_non_t5_model_is_refused(tmp_path):
  path = small_model(tmp_path / "default_ids.model")  # sentencepiece's defaults: unk 0, bos 1, eos 2
  with pytest.raises(ValueError, match="pad/eos/unk ids"):
    _ = vocab.PaliVocabulary(vocab_spec.VocabSpec(path)).vocab_size


def test_json_round_trip_and_changed_model_refused(v, tmp_path):
  obj = v.to_json()
  assert obj["sentencepiece_model"] == "pali_tiny.model"  # the shipped model: by file name
  assert obj["vocab_size"] == v.vocab_size
  assert vocab.PaliVocabulary.from_json(obj) == v
  copy = str(tmp_path / "copy.model")
  shutil.copy(vocab_spec.DEFAULT_MODEL, copy)
  user = vocab.PaliVocabulary(vocab_spec.VocabSpec(copy, extra_ids=10))
  assert vocab.PaliVocabulary.from_json(user.to_json()).vocab_size == v.vocab_size - 90
  small_model(copy, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  vocab_spec._sha256.cache_clear()  # the file changed under the same path
  with pytest.raises(ValueError, match="SHA-256"):
    vocab.PaliVocabulary.from_json(user.to_json() | {"sha256": obj["sha256"]})


def test_spec_module_needs_no_tensorflow():
  code = ("import sys, tasks.vocab_spec as s; t = s.Tokenizer(s.VocabSpec()); "
          "assert t.decode(t.encode('<loc0001> a')) == '<loc0001> a'; "
          "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_train_vocab_writes_a_t5_style_model():
  proto = train_vocab.train(list(multilingual.corpus(2, 800)) + ["what is the value; 3.75"], vocab_size=700)
  sp = sentencepiece.SentencePieceProcessor()
  sp.LoadFromSerializedProto(proto)
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert ";" in sp.EncodeAsPieces("a;b")  # every printable ASCII character is a piece
  assert train_vocab.train(list(multilingual.corpus(2, 800)), vocab_size=700) == \
      train_vocab.train(list(multilingual.corpus(2, 800)), vocab_size=700)
