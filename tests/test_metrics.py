"""The transfer metrics against the benchmarks' own definitions: coco-caption's CIDEr scorer, hand-worked VQA,
ANLS and ChartQA cases, and a ridge probe checked against a second way of solving the same problem."""

import math
import random

import numpy as np
import pytest

from vlm import metrics

# ------------------------------------------------------------------------------------------------------------------
# CIDEr
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, tokens", [
    ("A man's hat, isn't it?", "a man 's hat is n't it"),  # PTB splits clitics; coco-caption drops , and ?
    ("Two dogs (a puppy) play.", "two dogs -lrb- a puppy -rrb- play"),  # brackets stay (filtered in upper case)
    ('A "Stop" sign -- on a T-shirt!', "a stop sign on a t-shirt"),  # quotes and -- go, hyphenated words stay
    ("It costs 1,000.50 dollars; can't", "it costs 1,000.50 dollars ca n't"),  # numbers stay whole
    ("dogs' toys ... ", "dogs toys"),
])
def test_ptb_tokenize_matches_coco_caption_on_common_cases(text, tokens):
  assert metrics.ptb_tokenize(text) == tokens
  assert metrics.ptb_tokenize(tokens) == tokens  # already-tokenised text is left alone


def coco_caption_cider(predictions, references):
  """pycocoevalcap's own CIDEr-D scorer (pure Python), x100."""
  from pycocoevalcap.cider.cider import Cider  # here, so only the parity test needs pycocoevalcap

  score, _ = Cider().compute_score({i: list(r) for i, r in enumerate(references)},
                                   {i: [p] for i, p in enumerate(predictions)})
  return 100.0 * score


def random_captions(seed):
  """Tokenised captions from a small vocabulary (so n-grams repeat), 1-7 references, empty and 1-word candidates."""
  rng = random.Random(seed)
  vocab = "a the dog dogs cat man on of in red ball sits runs grass".split()
  sentence = lambda lo, hi: " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))
  n = rng.randint(3, 25)
  predictions = [sentence(0, 14) for _ in range(n)]
  predictions[0], predictions[1] = "", rng.choice(vocab)
  predictions[2] = "dog dog dog dog dog dog"  # clipping: repeats beyond the references' counts earn nothing
  references = [[sentence(1, 16) for _ in range(rng.randint(1, 7))] for _ in range(n)]
  references[2][0] = "a dog on the grass"
  return predictions, references


@pytest.mark.parametrize("seed", range(6))
def test_cider_matches_pycocoevalcap(seed):
  predictions, references = random_captions(seed)
  assert metrics.cider(predictions, references) == pytest.approx(coco_caption_cider(predictions, references),
                                                                 abs=1e-6)


def test_cider_by_hand():
  # Two images, disjoint words, so every n-gram has idf log(2). Image 1 is perfect but has only 1- and 2-grams:
  # cosine 1 at orders 1-2, nothing at 3-4 -> 10 * (1 + 1) / 4 = 5. Image 2 says "c" for "c d": order-1 cosine
  # 1/sqrt(2), one word short -> penalty exp(-1 / (2 * 6^2)) -> 10 * exp(-1/72) / (4 sqrt 2).
  image_2 = 10 * math.exp(-1 / 72) / (4 * math.sqrt(2))
  assert metrics.cider(["a b", "c"], [["a b"], ["c d"]]) == pytest.approx(100 * (5 + image_2) / 2)
  # Perfect captions of >= 4 words reach coco-caption's ceiling of 10 per image, printed as 1000.
  assert metrics.cider(["a b c d", "e f g h i"], [["a b c d"], ["e f g h i"]]) == pytest.approx(1000.0)
  # idf comes from the evaluated set: an n-gram every image's references hold is worth nothing, so one image is 0.
  assert metrics.cider(["a b c d"], [["a b c d"]]) == 0.0


def test_cider_tokenises_predictions_and_references():
  raw = metrics.cider(["A dog, running.", "Two cats!"], [["a dog running", "The dog runs."], ["two -- cats"]])
  clean = metrics.cider(["a dog running", "two cats"], [["a dog running", "the dog runs"], ["two cats"]])
  assert raw == clean > 0


# Captions that exercise PTBTokenizer's rules: clitics, brackets, quotes of every kind, symbols, abbreviations,
# acronyms, numbers, emoticons, repeated marks, dashes, ellipses, emoji, and scripts with combining marks.
TRICKY_CAPTIONS = """A man's hat, isn't it?|Two dogs (a puppy) play.|A "Stop" sign -- on a T-shirt!
It costs 1,000.50 dollars; can't|dogs' toys ... |Mr. Smith walks his dog.|I cannot go|we're gonna win
U.S. flag on a pole|50% off sale|rock'n'roll band|cost $5.00 today|a man with a #1 shirt|smile :)|dog!!!
hello;world|y'all|a *star*|5'6" tall|e.g. a dog|What?!|wanna play|'tis|..a dog|Jr. is here|!!!|emoji 😀 face
a '90s car|shouldn't've|St. Louis|a p.m. train|A.M.|No. 5|the no. 1 bus|I said no.|vs. team|a dog etc.
a [red] car|a {big} dog|“Quoted” text|the dog’s bone|it‘s fine|a dog — running|a dog – running
A man…|a dog+cat|a=b|rock 'n' roll|a man w/ a hat|a dog?!|(a dog)|a (dog|dog)|a -dog|a dog-|a b&w photo
AT&T store|cats & dogs|a 3/4 view|3:30 pm clock|a <b> tag|dog.cat|a.b.c|12-year-old boy|a 2.5-inch screen
gotta go|lemme see|'em|o'clock|ma'am|CAN'T|won't|the 80's|a man 's hat|two dogs -lrb- a puppy -rrb- play
café’s menu|naïve résumé|日本 の 犬|किताब और बड़ा पेड़
كلب أحمر، صغير|Большой красный круг.""".replace("\n", "|").split("|")


def coco_caption_tokenizer():
  """pycocoevalcap's PTBTokenizer (it runs Stanford's Java tokenizer), or a skip where Java is missing."""
  import shutil

  if shutil.which("java") is None:
    pytest.skip("no java: coco-caption's PTBTokenizer needs it")
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

  return PTBTokenizer()


def test_ptb_tokenize_matches_coco_captions_java_tokenizer():
  java = coco_caption_tokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(TRICKY_CAPTIONS)})
  for i, caption in enumerate(TRICKY_CAPTIONS):
    assert metrics.ptb_tokenize(caption) == java[i][0], caption


def test_cider_on_raw_captions_matches_coco_caption():
  rng = random.Random(0)
  predictions = TRICKY_CAPTIONS[:30]
  references = [rng.sample(TRICKY_CAPTIONS, rng.randint(1, 5)) + [p.upper()] for p in predictions]
  tokenizer = coco_caption_tokenizer()
  from pycocoevalcap.cider.cider import Cider

  score, _ = Cider().compute_score(
      tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}),
      tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)}))
  assert metrics.cider(predictions, references) == pytest.approx(100.0 * score, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# VQA accuracy
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("matching, percent", [(0, 0.0), (1, 30.0), (2, 60.0), (3, 90.0), (4, 100.0), (10, 100.0)])
def test_vqa_accuracy_leave_one_out_over_ten_humans(matching, percent):
  # E.g. 2 of 10: 8 subsets keep both (2/3), 2 drop one (1/3): (8 * 2/3 + 2 * 1/3) / 10 = 0.6.
  humans = ["cat"] * matching + ["dog"] * (10 - matching)
  assert metrics.vqa_accuracy(["cat"], [humans]) == pytest.approx(percent)


def test_vqa_accuracy_averages_questions_and_handles_few_references():
  assert metrics.vqa_accuracy(["2", "no"], [["2"] * 10, ["no"] * 2 + ["yes"] * 8]) == pytest.approx((100 + 60) / 2)
  assert metrics.vqa_accuracy(["yes", "no"], [["Yes"], ["yes"]]) == 50.0  # one reference: exact match
  assert metrics.vqa_accuracy(["yes"], [["yes", "yes", "yes"]]) == pytest.approx(100 * 2 / 3)  # the formula as is


@pytest.mark.parametrize("answer, normalised", [
    ("Two", "2"), ("none", "0"), ("ten dogs", "10 dogs"),  # number words
    ("a dog.", "dog"), ("The Red Ball", "red ball"),  # articles, case, trailing period
    ("dont", "don't"), ("whats that", "what's that"), ("somebody'd", "somebodyd"),  # contractions (official sic)
    ("t-shirt", "t shirt"), ("red,blue", "red blue"),  # a mark with no space around it becomes a space...
    ("red, blue", "red blue"), ("yes !", "yes"),  # ...and is deleted when a space touches it
    ("1,000", "1000"), ("1,2-3", "123"),  # a digit-comma-digit deletes every mark
    ("3.5", "3.5"), ("5.", "5"), ("mr. smith", "mr smith"),  # periods go unless a digit follows
    ("it's 10:30", "it's 10:30"), ("  many\tcats\n", "many cats"),  # apostrophes and colons stay; whitespace
])
def test_vqa_normalize_follows_the_official_rules(answer, normalised):
  assert metrics.vqa_normalize(answer) == normalised


def test_vqa_accuracy_normalises_the_prediction_in_full():
  assert metrics.vqa_accuracy(["Two.", "A T-shirt", "dont know"],
                              [["2"] * 10, ["t shirt"] * 10, ["don't know"] * 10]) == 100.0
  assert metrics.vqa_accuracy(["3.5"], [["35"] * 10]) == 0.0


def official_vqa_accuracy(prediction: str, humans: list[str]) -> float:
  """vqaEval.py's loop for one question, transcribed step by step (GT-Vision-Lab/VQA): the reference the
  default vqa_accuracy must reproduce."""
  res = metrics.vqa_normalize(prediction)  # processPunctuation then processDigitArticle
  gts = [h.replace("\n", " ").replace("\t", " ").strip() for h in humans]
  if len(set(gts)) > 1:
    gts = [metrics._vqa_punctuation(h) for h in gts]  # pylint: disable=protected-access
  accs = [min(1.0, sum(o == res for o in gts[:i] + gts[i + 1:]) / 3) for i in range(len(gts))]
  return 100.0 * sum(accs) / len(accs)


@pytest.mark.parametrize("prediction, humans", [
    ("two", ["2"] * 10),  # agreeing humans, taken as given
    ("two", ["Two"] * 10),  # a raw reference is not normalised when the humans agree: no match
    ("two", ["Two"] * 9 + ["2"]),  # disagreeing: only their punctuation goes, "Two" still does not match "2"
    ("yes", ["yes."] * 6 + ["no"] * 4),  # disagreeing: "yes." loses its period and matches
    ("yes", ["yes."] * 10),  # agreeing: "yes." is kept as is
    ("a red ball", ["red ball"] * 3 + ["a red ball"] * 7),  # the prediction loses its article, the humans do not
    ("t-shirt", ["t-shirt"] * 5 + ["shirt"] * 5),  # both sides: the hyphen becomes a space
])
def test_vqa_accuracy_reproduces_the_official_script_question_by_question(prediction, humans):
  assert metrics.vqa_accuracy([prediction], [humans]) == pytest.approx(official_vqa_accuracy(prediction, humans))


def test_vqa_accuracy_can_normalise_raw_references():
  assert metrics.vqa_accuracy(["two"], [["Two"] * 10]) == 0.0
  assert metrics.vqa_accuracy(["two"], [["Two"] * 10], normalize_references=True) == 100.0


# ------------------------------------------------------------------------------------------------------------------
# ANLS
# ------------------------------------------------------------------------------------------------------------------


def test_anls_by_hand():
  assert metrics.anls(["Hello "], [["hello"]]) == 100.0  # case and surrounding space ignored
  assert metrics.anls(["hello  world"], [["hello\tworld"]]) == 100.0  # a run of whitespace is one space
  assert metrics.anls(["hallo"], [["hello"]]) == pytest.approx(80.0)  # 1 edit / 5 chars
  assert metrics.anls(["abxd"], [["abcd"]]) == pytest.approx(75.0)
  assert metrics.anls(["abxy"], [["abcd"]]) == 0.0  # NL = 0.5 is past the threshold
  assert metrics.anls(["hallo"], [["xyz", "hello"]]) == pytest.approx(80.0)  # the closest reference counts
  assert metrics.anls(["hallo", "abxy"], [["hello"], ["abcd"]]) == pytest.approx(40.0)
  assert metrics.anls([""], [[""]]) == 100.0


def test_levenshtein_fallback_agrees_with_editdistance():
  assert metrics._levenshtein("kitten", "sitting") == 3
  assert metrics._levenshtein("", "abc") == metrics._levenshtein("abc", "") == 3
  editdistance = pytest.importorskip("editdistance")
  rng = random.Random(0)
  for _ in range(50):
    a, b = ("".join(rng.choice("abc") for _ in range(rng.randint(0, 9))) for _ in range(2))
    assert metrics._levenshtein(a, b) == editdistance.eval(a, b)


# ------------------------------------------------------------------------------------------------------------------
# Relaxed accuracy
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction, reference, right", [
    ("104.9", "100", True), ("95.1", "100", True),  # 4.9% off
    ("105.1", "100", False), ("94.9", "100", False),  # 5.1% off
    ("-10.4", "-10", True),
    ("5.", "5", True), ("1e3", "1000", True), ("4.9e-1", "0.5", True),  # whatever float() reads
    ("0.45", "45%", True), ("45%", "45", False),  # as pix2struct: a percent sign divides by 100
    ("1,200", "1200", False), ("1,200", "1,200", True),  # a comma makes it text
    ("0", "0", True), ("0.0", "0", False), ("0.01", "0", False),  # a zero reference needs the same string
    ("nan", "nan", True), ("inf", "1e400", False),  # non-finite values are text
    ("Yes", "yes ", True), ("Canada", "canada", True), ("yes", "no", False), ("12", "twelve", False),
])
def test_relaxed_accuracy_cases(prediction, reference, right):
  assert metrics.relaxed_accuracy([prediction], [reference]) == (100.0 if right else 0.0)


def test_relaxed_accuracy_averages():
  assert metrics.relaxed_accuracy(["104", "106", "a", "b"], ["100", "100", "a", "c"]) == 50.0


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [metrics.cider, metrics.vqa_accuracy, metrics.anls])
def test_text_metrics_reject_bad_input(metric):
  with pytest.raises(ValueError, match="2 predictions but 1 references"):
    metric(["a", "b"], [["a"]])
  with pytest.raises(ValueError, match="no predictions"):
    metric([], [])
  with pytest.raises(ValueError, match=r"references\[1\] must be a non-empty list"):
    metric(["a", "b"], [["a"], []])
  with pytest.raises(ValueError, match="not a single string"):
    metric("a", [["a"]])
  with pytest.raises(ValueError, match=r"predictions\[1\] must be a string; got None"):
    metric(["a", None], [["a"], ["b"]])
  for refs in ([None], [b"a"], {"a": 1}, 3):
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list of strings"):
      metric(["a"], [refs])


def test_relaxed_accuracy_rejects_bad_input():
  with pytest.raises(ValueError, match="1 predictions but 2 references"):
    metrics.relaxed_accuracy(["1"], ["1", "2"])
  with pytest.raises(ValueError, match="no predictions"):
    metrics.relaxed_accuracy([], [])
  with pytest.raises(ValueError, match=r"references\[0\] must be a string; got \['12'\]"):
    metrics.relaxed_accuracy(["12"], [["12"]])
  with pytest.raises(ValueError, match=r"predictions\[0\] must be a string; got 12"):
    metrics.relaxed_accuracy([12], ["12"])


# ------------------------------------------------------------------------------------------------------------------
# Linear probe
# ------------------------------------------------------------------------------------------------------------------


def blobs(per_class, dim, seed, num_classes=3):
  rng = np.random.default_rng(seed)
  centres = 5.0 * np.eye(num_classes, dim)
  labels = np.repeat(np.arange(num_classes) * 10, per_class)  # non-contiguous ids: the probe maps them back
  return centres[labels // 10] + rng.normal(size=(len(labels), dim)), labels


@pytest.mark.parametrize("shots, dim", [(40, 8), (2, 64)])  # more samples than dims, and the few-shot case
def test_linear_probe_separates_blobs(shots, dim):
  x, y = blobs(shots, dim, seed=0)
  x_test, y_test = blobs(30, dim, seed=1)
  assert metrics.linear_probe(x, y, x_test, y_test, l2=1.0) == 100.0


@pytest.mark.parametrize("n, dim", [(30, 6), (12, 40)])
def test_linear_probe_is_ridge_with_a_free_bias(n, dim):
  # Reference: the normal equations of ||X w + b - Y||^2 + l2 ||w||^2 over [w; b], the bias unpenalised.
  rng = np.random.default_rng(n)
  x, y = rng.normal(size=(n, dim)), rng.permutation(np.arange(n) % 4)  # every class seen in training
  x_test, y_test = rng.normal(size=(200, dim)), rng.integers(0, 4, 200)
  l2 = 0.3
  xa = np.concatenate([x, np.ones((n, 1))], axis=1)
  penalty = l2 * np.diag(np.r_[np.ones(dim), 0.0])
  w = np.linalg.solve(xa.T @ xa + penalty, xa.T @ np.eye(4)[y])
  expected = 100.0 * np.mean(np.argmax(np.concatenate([x_test, np.ones((200, 1))], axis=1) @ w, axis=1) == y_test)
  assert metrics.linear_probe(x, y, x_test, y_test, l2=l2) == pytest.approx(expected)


def test_linear_probe_rejects_bad_input():
  x, y = blobs(2, 4, seed=0)
  with pytest.raises(ValueError, match="l2 > 0"):
    metrics.linear_probe(x, y, x, y, l2=0.0)
  with pytest.raises(ValueError, match="labels"):
    metrics.linear_probe(x, y[:-1], x, y)
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    metrics.linear_probe(x, y, x[:, :2], y)


def test_detection_f1_matches_boxes_one_to_one_by_hand():
  """Three answers: both boxes found (one written twice: the copy is a false positive), one box missed and a
  wrong one written, "none" for an absent object. Matched 2 + 0 + 0 of 3 + 2 + 0 predicted and 2 + 1 + 0 true
  boxes: F1 = 2 * 2 / (5 + 3)."""
  a, b, c = (0.0, 0.0, 10.0, 10.0), (20.0, 20.0, 30.0, 30.0), (0.0, 20.0, 10.0, 30.0)
  nearly_a = (0.0, 0.0, 10.0, 8.0)  # IoU 0.8 with a
  predicted = [[nearly_a, b, a], [c, b], []]
  targets = [[a, b], [a], []]
  assert metrics.detection_f1(predicted, targets) == pytest.approx(50.0)
  assert metrics.detection_f1([[a]], [[a]]) == 100.0 and metrics.detection_f1([[]], [[]]) == 100.0
  assert metrics.detection_f1([[nearly_a]], [[a]], threshold=0.9) == 0.0
  with pytest.raises(ValueError, match="2 answers but 1 targets"):
    metrics.detection_f1([[a], [a]], [[a]])


def test_the_detection_centre_baseline_answers_a_centre_box_where_the_object_is_there():
  """Targets of mean size 10 x 10 in 40 px images: the centre box is (15, 15, 25, 25). It finds the centred
  target, misses the corner one, and says "none" where the target is none: F1 = 2 * 1 / (2 + 2)."""
  centred, corner = (15.0, 15.0, 25.0, 25.0), (0.0, 0.0, 10.0, 10.0)
  targets = [[centred], [corner], []]
  assert metrics.detection_centre_baseline(targets, [(40, 40)] * 3) == pytest.approx(50.0)
  assert metrics.detection_centre_baseline([[]], [(40, 40)]) == 100.0
  with pytest.raises(ValueError, match="3 targets but 2 image shapes"):
    metrics.detection_centre_baseline(targets, [(40, 40)] * 2)
