"""Transfer metrics, as the benchmarks define them. Outputs are the numbers papers print (percent; CIDEr x100).

Embedding metrics (retrieval, zero-shot, linear probe) take numpy arrays; the text metrics (CIDEr, VQA accuracy,
ANLS, relaxed accuracy) take a list of predicted strings and their references, each written from the benchmark's
own evaluation code so the figures are comparable with published ones.
"""

from __future__ import annotations

import collections
import math
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

try:
  import editdistance  # C++ Levenshtein; arrives with seqio
except ImportError:
  editdistance = None


def recall_at_k(similarity: np.ndarray, k: int = 1) -> float:
  """Percent of queries whose own item (the same index) ranks in the top k.

  Args:
    similarity: [num_queries, num_items], query i's match is item i (paired image / text sets).
  """
  similarity = np.asarray(similarity, np.float64)
  if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
    raise ValueError(f"recall_at_k needs a square [N, N] similarity of paired sets; got {similarity.shape}")
  own = np.diagonal(similarity)[:, None]
  # Rank = number of items scoring strictly higher; ties are counted against the query (no lucky ties).
  rank = np.sum(similarity > own, axis=1) + np.sum(similarity == own, axis=1) - 1
  return float(100.0 * np.mean(rank < k))


def retrieval(image_embeddings: np.ndarray, text_embeddings: np.ndarray, ks=(1, 5)) -> dict[str, float]:
  """Image->text and text->image R@k for paired, L2-normalised embeddings [N, D]."""
  sim = np.asarray(image_embeddings) @ np.asarray(text_embeddings).T
  out = {}
  for k in ks:
    out[f"i2t_R@{k}"] = recall_at_k(sim, k)
    out[f"t2i_R@{k}"] = recall_at_k(sim.T, k)
  return out


def zero_shot_accuracy(image_embeddings: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray) -> float:
  """Percent of images whose most similar class embedding is their label.

  Args:
    image_embeddings: [N, D] L2-normalised; class_embeddings: [C, D] L2-normalised (a prompt ensemble is
      averaged and re-normalised by the caller); labels: int [N] in [0, C).
  """
  predictions = np.argmax(np.asarray(image_embeddings) @ np.asarray(class_embeddings).T, axis=1)
  return float(100.0 * np.mean(predictions == np.asarray(labels)))


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, l2: float = 1.0) -> float:
  """Few-shot linear probe: closed-form ridge regression onto one-hot targets; percent of test images right.

  Sweep `l2` on held-out data for a paper figure: the best strength depends on the feature scale and shot count.

  Args:
    train_features: [N, D]; train_labels: [N] class ids (any hashable ints; those seen here are the classes).
    test_features: [M, D]; test_labels: [M].
    l2: ridge strength (> 0); the bias is not penalised.

  Returns:
    Test accuracy in percent.
  """
  x = np.asarray(train_features, np.float64)
  x_test = np.asarray(test_features, np.float64)
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  if x.ndim != 2 or x_test.ndim != 2 or x.shape[1] != x_test.shape[1]:
    raise ValueError(f"linear_probe needs [N, D] train and test features; got {x.shape} and {x_test.shape}")
  if len(x) == 0 or len(x_test) == 0:
    raise ValueError("linear_probe got an empty train or test set")
  if len(train_labels) != len(x) or len(test_labels) != len(x_test):
    raise ValueError(f"linear_probe: {len(x)}/{len(x_test)} train/test features but "
                     f"{len(train_labels)}/{len(test_labels)} labels")
  if not l2 > 0:
    raise ValueError(f"linear_probe needs l2 > 0; got {l2}")
  classes, index = np.unique(train_labels, return_inverse=True)
  targets = np.eye(len(classes))[index]  # [N, C]
  # Centring both sides fits an unpenalised bias in closed form: it is the class frequencies at the mean feature.
  x_mean, t_mean = x.mean(axis=0), targets.mean(axis=0)
  xc, tc = x - x_mean, targets - t_mean
  n, d = xc.shape
  if n < d:  # few-shot: the N x N dual system gives the same weights far more cheaply than the D x D one
    w = xc.T @ np.linalg.solve(xc @ xc.T + l2 * np.eye(n), tc)
  else:
    w = np.linalg.solve(xc.T @ xc + l2 * np.eye(d), xc.T @ tc)
  predictions = classes[np.argmax((x_test - x_mean) @ w + t_mean, axis=1)]
  return float(100.0 * np.mean(predictions == test_labels))


# ------------------------------------------------------------------------------------------------------------------
# Text metrics: predictions are strings, one per example.
# ------------------------------------------------------------------------------------------------------------------


def _check_pairs(metric: str, predictions, references, nested: bool = True) -> None:
  """Raises a one-line ValueError unless every prediction is a string with a non-empty reference entry of strings."""
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError(f"{metric} takes a list of predictions and a list of references, not a single string")
  if len(predictions) == 0:
    raise ValueError(f"{metric} got no predictions")
  if len(predictions) != len(references):
    raise ValueError(f"{metric} got {len(predictions)} predictions but {len(references)} references")
  for i, (prediction, refs) in enumerate(zip(predictions, references)):
    if not isinstance(prediction, str):
      raise ValueError(f"{metric}: predictions[{i}] must be a string; got {prediction!r}")
    if not nested:
      if not isinstance(refs, str):
        raise ValueError(f"{metric}: references[{i}] must be a string; got {refs!r}")
    elif (isinstance(refs, (str, bytes, dict, set)) or not hasattr(refs, "__len__") or len(refs) == 0
          or not all(isinstance(r, str) for r in refs)):
      raise ValueError(f"{metric}: references[{i}] must be a non-empty list of strings; got {refs!r}")


# CIDEr-D (Vedantam et al., 2015) as coco-caption's pycocoevalcap computes it.

# coco-caption runs Stanford's PTBTokenizer (-lowerCase) and then drops these tokens. The bracket names are listed in
# upper case, so after lowercasing "-lrb-" and friends survive, as they do in every published CIDEr.
_PTB_FILTERED = frozenset(["''", "'", "``", "`", '"', ".", "?", "!", ",", ":", "-", "--", "...", ";"])
_PTB_UNICODE = str.maketrans({"\u2019": "'", "\u2018": "`", "\u201c": '"', "\u201d": '"', "\u201e": '"',
                              "\u2013": " -- ", "\u2014": " -- ", "\u2026": " ... ", "\xa0": " "})
_PTB_DELETED_CATEGORIES = frozenset({"So", "Cs", "Co", "Cn"})  # emoji and other pictographs, unassigned code points
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Abbreviations whose period PTB keeps; "no." only before a number ("no. 5", but "I said no.").
_PTB_ABBREVIATIONS = "mr|mrs|ms|dr|st|jr|sr|vs|etc|prof|mt|ft|inc|ltd|co|corp|ave"


def _combining_marks_class() -> str:
  """A regex character class body of the Basic Multilingual Plane's combining marks (Devanagari vowel signs, ...).

  Python's word characters leave them out, so without them "बड़ा" would fall apart into letters and marks.
  """
  marks = [c for c in range(0x10000) if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me")]
  ranges, start = [], marks[0]
  for previous, c in zip(marks, marks[1:] + [None]):
    if c != previous + 1:
      ranges.append(f"\\u{start:04x}" + (f"-\\u{previous:04x}" if previous > start else ""))
      start = c
  return "".join(ranges)


_MARKS = _combining_marks_class()
_ALNUM = rf"(?:[^\W_]|[{_MARKS}])"  # a letter or digit of any script, or a mark combining with one
_LETTER = rf"(?:[^\W\d_]|[{_MARKS}])"
_PTB_TOKEN = re.compile(rf"""
    (?P<emoticon>[:;]-?[()](?!{_ALNUM}))
  | (?P<tag><[^<>\s]+> | -[lr][rsc]b-)                                # <b>, and brackets already named
  | (?P<acronym>(?:{_LETTER}\.){{2,}}(?!{_ALNUM}))                    # u.s.  e.g.  a.m.
  | (?P<abbreviation>\b(?:{_PTB_ABBREVIATIONS})\.(?!{_ALNUM}) | \bno\.(?=\s*\d))
  | (?P<quoted_word>'(?:em|n'|\d0s|s|re|ve|ll|d|m)(?!{_ALNUM}) | 't(?=(?:is|was)\b))  # 'em '90s 'tis; tokenised 's
  | (?P<word>(?-i:[A-Z]+&[A-Z]+)                                    # AT&T, but b&w splits
        | {_ALNUM}+(?:[-./]{_ALNUM}+|'{_LETTER}+|(?<=\d)[,:]\d+)*)   # t-shirt 3.5 1,000 3:30 o'clock red/blue
  | (?P<marks>[!?]{{2,}})                                           # "!!!" and "?!" are tokens coco-caption keeps
  | (?P<other>\S)
""", re.VERBOSE | re.IGNORECASE)
_PTB_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_PTB_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                    "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me"), "y'all": ("y'", "all")}


def _ptb_word(word: str) -> list[str]:
  """A lowercased word as PTB splits it: "shouldn't've" -> should n't 've, "cannot" -> can not."""
  if word in _PTB_SPLIT_WORDS:
    return list(_PTB_SPLIT_WORDS[word])
  if "'n'" in word:  # rock'n'roll
    return [t for part in word.split("'n'") for t in (part, "'n'")][:-1]
  clitics = []
  while match := _PTB_CLITIC.match(word):
    word, clitic = match.groups()
    clitics.insert(0, clitic)
  return [word, *clitics]


def ptb_tokenize(text: str) -> str:
  """Pure-Python stand-in for coco-caption's Java PTBTokenizer (-lowerCase) plus its punctuation filter.

  coco-caption tokenises with Stanford PTBTokenizer and then drops the tokens '' ' `` ` . ? ! , : - -- ... ; from
  candidates and references. This does what that pipeline does to captions: lowercase; clitics split off
  ("isn't" -> "is n't", "man's" -> "man 's", "cannot" -> "can not", "gonna" -> "gon na"); hyphenated words,
  numbers ("1,000", "3.5", "3:30"), acronyms and common abbreviations ("u.s.", "mr.") kept whole; brackets kept as
  -lrb- -rrb- -lsb- -rsb- -lcb- -rcb-; symbols such as % $ # & + = * / split off and kept; runs like "!!!" or "?!"
  kept; curly quotes, dashes and ellipses normalised (and then dropped); emoji and other pictographs dropped.
  Already-tokenised text comes back unchanged. tests/test_metrics.py checks it against the Java tokenizer itself.

  Args:
    text: a caption.

  Returns:
    The caption as space-separated tokens.
  """
  text = "".join(c for c in text.translate(_PTB_UNICODE) if unicodedata.category(c) not in _PTB_DELETED_CATEGORIES)
  tokens = []
  for match in _PTB_TOKEN.finditer(text):
    kind, token = match.lastgroup, match.group().lower()
    if kind == "emoticon":
      tokens.append(token[:-1] + _PTB_BRACKETS[token[-1]])
    elif kind == "word":
      tokens.extend(_ptb_word(token))
    else:  # runs of dashes and dots arrive one mark at a time, and are dropped like "--" and "..."
      tokens.append(_PTB_BRACKETS.get(token, token))
  return " ".join(t for t in tokens if t not in _PTB_FILTERED)


# Scripts written without spaces between words (Thai, kana, Han): no tokenizer here can find their words, so CIDEr
# counts their characters, each with the combining marks that follow it (a Thai vowel sign, a kana voicing mark).
_UNSPACED = ("\u0e00-\u0e7f"  # Thai
             "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # hiragana, katakana (and its half-width forms)
             "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")  # Han
_UNSPACED_CHARACTER = re.compile(rf"[{_UNSPACED}][{_MARKS}]*")


def segment_characters(text: str) -> str:
  """`text` with each character of a script written without spaces (Thai, kana, Han) set apart by spaces, its
  combining marks kept with it; words of other scripts ("4k", "tv") stay whole. ptb_tokenize then splits on them.
  """
  return _UNSPACED_CHARACTER.sub(lambda match: f" {match.group()} ", text)


def _ngram_counts(tokens: list[str], max_n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _tfidf(counts: collections.Counter, doc_freq: collections.Counter, log_num_docs: float, max_n: int):
  """Per-order tf-idf vectors and their norms; idf = log(#images) - log(max(1, #images whose refs hold it))."""
  vectors = [{} for _ in range(max_n)]
  for ngram, tf in counts.items():
    vectors[len(ngram) - 1][ngram] = tf * (log_num_docs - math.log(max(1.0, doc_freq[ngram])))
  norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vectors]
  return vectors, norms


def _cider_d_scores(candidates: list[list[str]], references: list[list[list[str]]], max_n: int = 4,
                    sigma: float = 6.0) -> list[float]:
  """Per-image CIDEr-D on tokenised text, on coco-caption's scale (a perfect, distinctive caption scores 10)."""
  ref_counts = [[_ngram_counts(r, max_n) for r in refs] for refs in references]
  # Document frequency: in how many images' reference sets an n-gram occurs (idf is from the evaluated set).
  doc_freq = collections.Counter(g for refs in ref_counts for g in set().union(*refs))
  log_num_docs = math.log(len(candidates))
  scores = []
  for candidate, refs, counts in zip(candidates, references, ref_counts):
    vec, norm = _tfidf(_ngram_counts(candidate, max_n), doc_freq, log_num_docs, max_n)
    total = np.zeros(max_n)
    for ref, ref_ngrams in zip(refs, counts):
      ref_vec, ref_norm = _tfidf(ref_ngrams, doc_freq, log_num_docs, max_n)
      # coco-caption measures length in bigrams, not words; the gap is the same whenever both captions have a
      # word, and an empty caption scores 0 at every order anyway.
      penalty = math.exp(-((len(candidate) - len(ref)) ** 2) / (2 * sigma**2))
      for n in range(max_n):
        if norm[n] == 0 or ref_norm[n] == 0:
          continue  # nothing to match at this order (all weights are >= 0, so the dot product is 0 too)
        # The "-D" clipping: a candidate gains nothing by repeating an n-gram more often than the reference.
        dot = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, v in vec[n].items())
        total[n] += penalty * dot / (norm[n] * ref_norm[n])
    scores.append(10.0 * float(np.mean(total)) / len(refs))
  return scores


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """Corpus CIDEr-D, x100 as papers print it ("CIDEr 145.0").

  The idf statistics come from the references of the evaluated set itself, as in coco-caption, so the figure
  depends on the whole set (one image alone always scores 0). Text goes through `ptb_tokenize` first.

  Args:
    predictions: one caption per image.
    references: per image, its reference captions (any number >= 1).

  Returns:
    100 x the mean per-image CIDEr-D.
  """
  _check_pairs("cider", predictions, references)
  candidates = [ptb_tokenize(p).split() for p in predictions]
  refs = [[ptb_tokenize(r).split() for r in rs] for rs in references]
  return 100.0 * float(np.mean(_cider_d_scores(candidates, refs)))


# VQA accuracy, as the official VQA v2 evaluation (GT-Vision-Lab/VQA, vqaEval.py) computes it.

# The official contractions map (missing apostrophes restored). Its keys with a capital "I" never match lowercased
# text and its identity entries change nothing, so they are left out; "somebody'd=somebodyd" is the official (sic).
_VQA_CONTRACTIONS = dict(pair.split("=") for pair in """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
    howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll maam=ma'am
    mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't
    mustve=must've neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at
    'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've shouldve=should've
    shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
    somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
    someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
    someones=someone's somethingd=something'd somethingd've=something'd've something'dve=something'd've
    somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've
    therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll
    theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've
    werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd
    wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
    whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
    wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
    yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
    you'dve=you'd've youll=you'll youre=you're youve=you've
    """.split())
_VQA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset({"a", "an", "the"})
_VQA_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                    "?", "!")
_VQA_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official pattern "(?!<=\d)(\.)(?!\d)" meant a look-behind but wrote a look-ahead that never fails here, so in
# effect it deletes every period not followed by a digit: "yes." -> "yes", "3.5" stays, "5." -> "5".
_VQA_PERIOD = re.compile(r"\.(?!\d)")


def _vqa_clean(answer: str) -> str:
  return answer.replace("\n", " ").replace("\t", " ").strip()


def _vqa_punctuation(answer: str) -> str:
  """The official script's processPunctuation (after its newline / tab / edge-space cleaning)."""
  text = _vqa_clean(answer)
  delete_all = _VQA_DIGIT_COMMA_DIGIT.search(text) is not None
  out = text
  for mark in _VQA_PUNCTUATION:
    deleted = delete_all or mark + " " in text or " " + mark in text  # decided on the answer as given, as official
    out = out.replace(mark, "" if deleted else " ")
  return _VQA_PERIOD.sub("", out)


def vqa_normalize(answer: str) -> str:
  """The official VQA answer normalisation: punctuation, then lowercase, number words, articles, contractions.

  A mark from the official list is deleted when a space touches it anywhere in the answer, or when the answer holds
  a digit-comma-digit ("1,000" -> "1000"); otherwise it becomes a space ("t-shirt" -> "t shirt"). Apostrophes and
  colons are kept. Number words up to ten become digits ("two" -> "2", "none" -> "0").

  Args:
    answer: a predicted or human answer.

  Returns:
    The normalised answer, words joined by single spaces.
  """
  words = [_VQA_NUMBERS.get(w, w) for w in _vqa_punctuation(answer).lower().split()]
  return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in _VQA_ARTICLES)


def vqa_accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]],
                 normalize_references: bool = False) -> float:
  """VQA v2 accuracy: min(1, #humans who gave the answer / 3), averaged over the leave-one-human-out subsets.

  With the usual 10 answers, 1 / 2 / 3 / 4+ matching humans score 30 / 60 / 90 / 100 percent. By default
  question by question as the official evaluation script (GT-Vision-Lab/VQA, vqaEval.py) scores it, quirks
  included: the prediction is normalised in full (vqa_normalize), while the human answers are taken as the
  annotation file gives them (VQA's are already lowercased and normalised), and only when they disagree do they
  lose their punctuation (not their case, articles or number words). So a raw reference "Two" never matches.
  normalize_references=True normalises the references as the prediction, for answers from a source whose
  annotations are raw (identical results on VQA's own files but for such references). Departure: a single
  reference has no subset to leave it out of (the script would score 0) and is scored by exact match of the two
  normalised answers.

  Args:
    predictions: one answer per question.
    references: per question, the human answers (10 in VQA v2; any number >= 1).
    normalize_references: normalise the references as the prediction (see above).

  Returns:
    Mean accuracy in percent.
  """
  _check_pairs("vqa_accuracy", predictions, references)
  scores = []
  for prediction, answers in zip(predictions, references):
    prediction = vqa_normalize(prediction)
    answers = [_vqa_clean(a) for a in answers]
    if normalize_references:
      answers = [vqa_normalize(a) for a in answers]
    elif len(set(answers)) > 1:
      answers = [_vqa_punctuation(a) for a in answers]
    if len(answers) == 1:  # exact match, both sides normalised
      scores.append(float(vqa_normalize(answers[0]) == prediction))
      continue
    matches = sum(a == prediction for a in answers)
    # Leaving out one of the `matches` humans gives min(1, (matches-1)/3), leaving out any other min(1, matches/3).
    n = len(answers)
    scores.append((matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)) / n)
  return float(100.0 * np.mean(scores))


# ANLS (Biten et al., 2019; ST-VQA and DocVQA).

_ANLS_THRESHOLD = 0.5


def _levenshtein(a: str, b: str) -> int:
  """Edit distance (insert / delete / substitute, each cost 1) by the two-row dynamic programme."""
  previous = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    current = [i]
    for j, cb in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
    previous = current
  return previous[-1]


def _edit_distance(a: str, b: str) -> int:
  return editdistance.eval(a, b) if editdistance is not None else _levenshtein(a, b)


def _anls_similarity(prediction: str, reference: str) -> float:
  """1 - normalised Levenshtein distance, or 0 once the distance reaches the threshold (the answer is wrong)."""
  longest = max(len(prediction), len(reference))
  if longest == 0:
    return 1.0
  distance = _edit_distance(prediction, reference) / longest
  return 1.0 - distance if distance < _ANLS_THRESHOLD else 0.0


def _anls_normalize(text: str) -> str:
  """As the DocVQA evaluation script: lowercase, surrounding whitespace gone, inner runs of it one space."""
  return " ".join(text.lower().split())


def anls(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """Average Normalized Levenshtein Similarity, percent; case-insensitive, whitespace runs count as one space.

  Args:
    predictions: one answer per question.
    references: per question, the accepted answers; the closest one counts.

  Returns:
    100 x mean over questions of max over references of (1 - NL if NL < 0.5 else 0).
  """
  _check_pairs("anls", predictions, references)
  scores = [max(_anls_similarity(_anls_normalize(p), _anls_normalize(r)) for r in refs)
            for p, refs in zip(predictions, references)]
  return float(100.0 * np.mean(scores))


# Relaxed accuracy (ChartQA, Masry et al., 2022).

_RELAXED_TOLERANCE = 0.05


def _as_number(text: str) -> float | None:
  """A finite number as pix2struct's ChartQA evaluation reads one ("45%" is 0.45, "1,200" is not a number)."""
  try:
    value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def _relaxed_match(prediction: str, reference: str) -> bool:
  prediction, reference = prediction.strip(), reference.strip()
  target, value = _as_number(reference), _as_number(prediction)
  # Relative error is undefined at 0, so a zero reference (like any text) needs the same string.
  if target and value is not None:
    return abs(value - target) <= _RELAXED_TOLERANCE * abs(target)
  return prediction.lower() == reference.lower()


def relaxed_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
  """ChartQA relaxed accuracy: numbers within 5% of the reference count as right, other answers must match exactly.

  As pix2struct's `relaxed_correctness`, which the ChartQA figures of MatCha, DePlot, PaLI-X and PaLI-3 come from:
  a number is whatever Python's float() reads, a trailing "%" divides it by 100 (so "45%" matches "0.45", not
  "45"), "1,200" is text, and a reference of 0 needs the same string. Text compares case-insensitively; unlike
  pix2struct, surrounding whitespace is ignored.

  Args:
    predictions: one answer per question.
    references: one reference answer per question.

  Returns:
    Percent of questions answered right.
  """
  _check_pairs("relaxed_accuracy", predictions, references, nested=False)
  return float(100.0 * np.mean([_relaxed_match(p, r) for p, r in zip(predictions, references)]))


# ------------------------------------------------------------------------------------------------------------------
# Localisation: boxes (y0, x0, y1, x1) in pixels.
# ------------------------------------------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """Intersection over union of two boxes (y0, x0, y1, x1); 0 when the union is empty."""
  inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def refexp_accuracy(predicted: Sequence[Sequence[float] | None], targets: Sequence[Sequence[float]]) -> float:
  """RefCOCO accuracy: percent of expressions whose predicted box has IoU >= 0.5 with the target.

  Args:
    predicted: one box per expression, or None where the answer named no box (counted wrong).
    targets: the referred boxes, in the same pixels.
  """
  if len(predicted) != len(targets) or not targets:
    raise ValueError(f"refexp_accuracy got {len(predicted)} predicted boxes but {len(targets)} targets")
  return float(100.0 * np.mean([p is not None and box_iou(p, t) >= 0.5 for p, t in zip(predicted, targets)]))


def refexp_centre_baseline(targets: Sequence[Sequence[float]], image_shapes: Sequence[Sequence[float]]) -> float:
  """DESIGN.md's refexp_centre_baseline: refexp_accuracy of one box per target at the centre of its image, of
  the targets' mean size relative to their images (scaled back to each image: benchmark images differ in size).
  What a model scores without looking.

  Args:
    targets: the referred boxes (y0, x0, y1, x1), in pixels.
    image_shapes: (height, width) of each target's image.
  """
  size = _mean_relative_size(targets, image_shapes)
  return refexp_accuracy([tuple(b) for b in _centre_boxes(size, image_shapes)], targets)


def _mean_relative_size(boxes: Sequence[Sequence[float]], image_shapes: Sequence[Sequence[float]]) -> np.ndarray:
  """(h, w) of the boxes, each as a fraction of its image's (height, width), averaged over the boxes."""
  boxes, shapes = np.asarray(boxes, np.float64), np.asarray(image_shapes, np.float64)  # [N, 4], [N, 2]
  return ((boxes[:, 2:] - boxes[:, :2]) / shapes).mean(axis=0)


def _centre_boxes(size: np.ndarray, image_shapes: Sequence[Sequence[float]]) -> np.ndarray:
  """[N, 4]: a box of `size` (fractions of the image) at the centre of each image of `image_shapes`, in pixels."""
  shapes = np.asarray(image_shapes, np.float64).reshape(-1, 2)
  extent = size * shapes
  return np.concatenate([(shapes - extent) / 2, (shapes + extent) / 2], axis=1)


def detection_f1(predicted: Sequence[Sequence[Sequence[float]]], targets: Sequence[Sequence[Sequence[float]]],
                 threshold: float = 0.5) -> float:
  """Percent F1 of boxes at IoU >= threshold over a set of detection answers (greedy decoding gives no scores
  to rank, so no mAP): each answer's boxes are matched one to one to its targets', highest IoU first, and
  F1 = 2 matched / (predicted boxes + target boxes) over the whole set (100 when neither has a box).

  Args:
    predicted: per answer, the boxes it wrote (none for "none").
    targets: per answer, the true boxes, in the same pixels.
    threshold: the IoU a match needs.
  """
  if len(predicted) != len(targets):
    raise ValueError(f"detection_f1 got {len(predicted)} answers but {len(targets)} targets")
  matched = boxes = 0
  for answer, truth in zip(predicted, targets):
    boxes += len(answer) + len(truth)
    pairs = sorted(((box_iou(p, t), i, j) for i, p in enumerate(answer) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t = set(), set()
    for iou, i, j in pairs:
      if iou >= threshold and i not in used_p and j not in used_t:
        used_p.add(i)
        used_t.add(j)
    matched += len(used_p)
  return 100.0 * 2 * matched / boxes if boxes else 100.0


def detection_centre_baseline(targets: Sequence[Sequence[Sequence[float]]],
                              image_shapes: Sequence[Sequence[float]]) -> float:
  """detection_f1 of answering one box at the image centre, of the target boxes' mean size relative to their
  images, wherever the target has a box (and "none" where it has none): what a model that knows whether the
  object is there, but not where, scores."""
  if len(targets) != len(image_shapes):
    raise ValueError(f"detection_centre_baseline got {len(targets)} targets but {len(image_shapes)} image shapes")
  flat = [(b, s) for truth, s in zip(targets, image_shapes) for b in truth]
  if not flat:
    return detection_f1([[] for _ in targets], targets)
  size = _mean_relative_size([b for b, _ in flat], [s for _, s in flat])
  centres = _centre_boxes(size, image_shapes)
  return detection_f1([[tuple(c)] if truth else [] for truth, c in zip(targets, centres)], targets)


# ------------------------------------------------------------------------------------------------------------------
# BLEU-4 and ROUGE-L as coco-caption's pycocoevalcap computes them (on `ptb_tokenize`d text, as CIDEr).
# ------------------------------------------------------------------------------------------------------------------


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """Corpus BLEU-4 x100 as coco-caption's Bleu(4) prints it.

  Clipped n-gram matches and candidate n-grams are summed over the corpus before the geometric mean; each
  candidate's reference length is that of its closest reference (the shorter on a tie), and coco-caption's
  1e-15 / 1e-9 guards keep a corpus without any 4-gram match at ~0 rather than failing.
  """
  _check_pairs("bleu4", predictions, references)
  correct, guess, test_len, ref_len = np.zeros(4), np.zeros(4), 0, 0
  for prediction, refs in zip(predictions, references):
    words = ptb_tokenize(prediction).split()
    ref_words = [ptb_tokenize(r).split() for r in refs]
    most = collections.Counter()
    for ref in ref_words:
      most |= _ngram_counts(ref, 4)  # | keeps each n-gram's largest count over the references
    for ngram, count in _ngram_counts(words, 4).items():
      correct[len(ngram) - 1] += min(count, most[ngram])
    guess += [max(len(words) - k, 0) for k in range(4)]
    test_len += len(words)
    ref_len += min((abs(len(ref) - len(words)), len(ref)) for ref in ref_words)[1]
  bleu = float(np.prod((correct + 1e-15) / (guess + 1e-9)) ** 0.25)
  ratio = (test_len + 1e-15) / (ref_len + 1e-9)
  return 100.0 * (bleu * math.exp(1 - 1 / ratio) if ratio < 1 else bleu)


def _lcs_length(a: list[str], b: list[str]) -> int:
  row = [0] * (len(b) + 1)
  for x in a:
    diagonal = 0
    for j, y in enumerate(b, 1):
      diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
  return row[-1]


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """Mean ROUGE-L x100 as coco-caption's Rouge prints it: per image the F-measure (beta 1.2) of the best
  precision and the best recall of the longest common subsequence over its references."""
  _check_pairs("rouge_l", predictions, references)
  beta2 = 1.2 ** 2
  scores = []
  for prediction, refs in zip(predictions, references):
    candidate = ptb_tokenize(prediction).split(" ")  # coco-caption splits on single spaces: "" is one token
    ref_words = [ptb_tokenize(r).split(" ") for r in refs]
    lcs = [_lcs_length(ref, candidate) for ref in ref_words]
    precision = max(n / len(candidate) for n in lcs)
    recall = max(n / len(ref) for n, ref in zip(lcs, ref_words))
    scores.append((1 + beta2) * precision * recall / (recall + beta2 * precision) if precision and recall else 0.0)
  return 100.0 * float(np.mean(scores))


def retrieval_multi_caption(image_embeddings: np.ndarray, text_embeddings: np.ndarray, text_image: Sequence[int],
                            ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """Image->text and text->image R@k (percent) when each image has several captions (COCO, Flickr30k).

  An image is right at k if any of its captions ranks in its top k; a caption if its image ranks in its top k.
  Ties count against the query, as in recall_at_k.

  Args:
    image_embeddings: [N, D], L2-normalised; text_embeddings: [M, D], L2-normalised.
    text_image: [M], the index of each caption's image.
  """
  sim = np.asarray(image_embeddings, np.float64) @ np.asarray(text_embeddings, np.float64).T  # [N, M]
  text_image = np.asarray(text_image)
  if text_image.shape != (sim.shape[1],) or not np.all((text_image >= 0) & (text_image < sim.shape[0])):
    raise ValueError(f"text_image must give an image index in [0, {sim.shape[0]}) for each of {sim.shape[1]} texts")
  own = text_image[None, :] == np.arange(sim.shape[0])[:, None]  # [N, M]
  best_own = np.where(own, sim, -np.inf).max(axis=1, keepdims=True)  # an image's best-scored own caption
  if np.any(np.isinf(best_own)):
    raise ValueError("every image needs at least one caption for retrieval")
  image_rank = np.sum(sim > best_own, axis=1) + np.sum((sim == best_own) & ~own, axis=1)
  own_score = sim[text_image, np.arange(sim.shape[1])][None, :]
  text_rank = np.sum(sim > own_score, axis=0) + np.sum(sim == own_score, axis=0) - 1
  return {**{f"i2t_R@{k}": float(100.0 * np.mean(image_rank < k)) for k in ks},
          **{f"t2i_R@{k}": float(100.0 * np.mean(text_rank < k)) for k in ks}}
