"""Trains the shipped sentencepiece model, tasks/data/spm/pali_tiny.model, from the generators' own texts.

  python -m tasks.train_vocab [--vocab_size 6000] [--out tasks/data/spm/pali_tiny.model]

The corpus is every kind of text the synthetic tasks produce, from both splits (a real vocabulary is trained
on far more than any one task's training split): the eight-language scene captions of tasks.multilingual,
English scene captions, questions and answers (tasks.scene_tasks), OCR lines (tasks.ocr), document text and
questions (tasks.documents), chart questions and labels (tasks.charts), and the PaLI prompts. Location tokens
are cut out of the texts: they are added to every vocabulary as single pieces (tasks.vocab_spec), so learning
pieces for their fragments would waste the budget.

Model: BPE with byte fallback (any character outside the pieces still encodes, as UTF-8 bytes), digits split,
NFKC normalisation, character coverage 0.9995 so the CJK, Devanagari, Arabic and Cyrillic characters of the
captions get pieces of their own, and T5's special ids: pad 0, EOS 1, UNK 2, no BOS. Training is single-
threaded on a fixed corpus, so the same command writes the same file.

Why BPE and not unigram (T5's choice): sentencepiece seeds a unigram model with substrings that occur in at
least two *distinct* words. A natural corpus has plenty; this closed one (about 13k distinct words, most never
inside another) has few, and the unigram model kept "what" (22k occurrences) as "▁wh" + "at" and spelt
Cyrillic and Devanagari words letter by letter. BPE merges by pair counts and learns whole words ("▁what",
"▁изображении", "▁वृत्त"), 12 tokens per corpus sentence against 15-17.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
from collections.abc import Iterator

import numpy as np
import sentencepiece

from tasks import charts
from tasks import documents
from tasks import multilingual
from tasks import ocr
from tasks import render
from tasks import scene_tasks
from tasks import vocab_spec

_LOC_RE = re.compile(r"<loc\d{4}>")
_STREAM = 199  # render.example_rng stream of the corpus, apart from every generator's own
_ASCII = "".join(chr(c) for c in range(33, 127))
_PROMPTS = ["caption", "answer", "ocr", "detect", "refexp", "question", "none", ";"]


def _scene_texts(seed: int, n: int) -> Iterator[str]:
  """Prompts and targets of the scene tasks (images at the smallest size: only the texts are kept)."""
  for split, i, kind in itertools.product(scene_tasks.SPLITS, range(n), scene_tasks.TASKS):
    ex = scene_tasks.example(seed, i, split, kind, scene_tasks.MIN_IMAGE_SIZE)
    yield ex["inputs"]
    yield ex["targets"]


def _rendered_texts(seed: int, n: int) -> Iterator[str]:
  """OCR lines, document text and questions, chart questions, answers and titles (no rendering)."""
  for split, i in itertools.product(render.SPLITS, range(n)):
    rng = render.example_rng(seed, split, i, _STREAM)
    yield " ".join(ocr.sample_lines(rng, split, max_lines=8, max_chars=40))
    doc = documents.sample_document(rng, split, 224)
    yield doc.text()
    yield from (f"{q} {a}" for q, a in doc.qa)
    chart = charts.sample_chart(rng, split, 224)
    yield chart.title
    yield from (f"{q} {a}" for pairs in chart.qa().values() for q, a in pairs[:4])


def corpus(seed: int = 0, scale: int = 1) -> list[str]:
  """The training sentences; `scale` multiplies every part."""
  texts = itertools.chain(
      multilingual.corpus(seed, 16000 * scale),
      _scene_texts(seed, 400 * scale),
      _rendered_texts(seed, 600 * scale),
      (f"{p} {lang}" for p in ("caption", "answer") for lang in multilingual.LANGUAGES),
      _PROMPTS)
  cleaned = (" ".join(_LOC_RE.sub(" ", t).split()) for t in texts)
  return [t for t in cleaned if t]


def train(sentences: list[str], vocab_size: int) -> bytes:
  """A serialized BPE sentencepiece model with T5's special ids."""
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, model_type="bpe",
      byte_fallback=True, character_coverage=0.9995, normalization_rule_name="nmt_nfkc",
      pad_id=vocab_spec.PAD_ID, eos_id=vocab_spec.EOS_ID, unk_id=vocab_spec.UNK_ID, bos_id=-1,
      # The corpus is small and closed: a hard limit would fail if it cannot fill the budget.
      hard_vocab_limit=False, input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
      # Numbers (prices, phone numbers, chart values) would otherwise take many pieces as whole strings
      # ("▁14.35"); digit by digit, as PaLM's vocabulary does, they cost ten. Long pieces are capped so that
      # spaceless Chinese does not spend the budget on whole phrases.
      split_digits=True, max_sentencepiece_length=8,
      # Rare in this corpus but common in the wild (and ';' separates detections): every printable ASCII
      # character gets a piece of its own rather than a byte.
      required_chars=_ASCII, minloglevel=2)
  return model.getvalue()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab_size", type=int, default=6000, help="pieces of the base model")
  parser.add_argument("--seed", type=int, default=0, help="data seed of the corpus")
  parser.add_argument("--scale", type=int, default=1, help="corpus size multiplier")
  parser.add_argument("--out", default=vocab_spec.DEFAULT_MODEL)
  args = parser.parse_args(argv)
  sentences = corpus(args.seed, args.scale)
  proto = train(sentences, args.vocab_size)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "wb") as f:
    f.write(proto)
  spec = vocab_spec.VocabSpec(os.path.abspath(args.out))
  lengths = [len(vocab_spec.Tokenizer(spec).encode(s)) for s in sentences[::50]]
  print(f"wrote {args.out}: {len(proto) / 1024:.0f} KiB, {vocab_spec.Tokenizer(spec).vocab_size} ids with the "
        f"added tokens, from {len(sentences)} sentences ({np.mean(lengths):.1f} tokens each on average)")


if __name__ == "__main__":
  main()
