"""UL2 denoisers: property tests over many seeds and lengths, from 1 token to a few thousand."""

import dataclasses

import numpy as np
import pytest

from tasks import ul2_objectives as ul2

VOCAB = 33_000
SENTINELS = list(range(VOCAB - 1, VOCAB - 1001, -1))  # T5 style: <extra_id_0> is the highest id
MODE_IDS = {"[NLU]": 3, "[NLG]": 4, "[S2S]": 5}
FIRST_TEXT_ID = 6  # source ids are drawn from [FIRST_TEXT_ID, VOCAB - 1000): no sentinels, no mode tokens
LENGTHS = (1, 2, 3, 4, 5, 7, 10, 33, 128, 512, 2048)
SPAN_CONFIGS = [(d.noise_density, d.mean_span_length) for d in ul2.UL2_DENOISERS if d.kind == "span"]


def _text(rng, length):
  return rng.integers(FIRST_TEXT_ID, VOCAB - 1000, size=length)


def _split_targets(targets, sentinels=SENTINELS):
  """Targets 'S0 span_0 S1 span_1 ...' -> ([S0, S1, ...], [span_0, span_1, ...]), checking the layout."""
  sentinel_set = set(sentinels)
  assert targets[0] in sentinel_set, "targets must start with a sentinel"
  marks, spans = [], []
  for t in targets.tolist():
    if t in sentinel_set:
      marks.append(t)
      spans.append([])
    else:
      spans[-1].append(t)
  return marks, spans


def _fill_sentinels(inputs, targets, sentinels=SENTINELS):
  """Puts each target span back in place of its sentinel in the inputs: the original tokens."""
  marks, spans = _split_targets(targets, sentinels)
  span_of = dict(zip(marks, spans))
  out = []
  for t in inputs.tolist():
    out.extend(span_of[t] if t in span_of else [t])
  return out


def _kept_span_lengths(inputs, sentinels=SENTINELS):
  """Lengths of the runs of kept tokens before each sentinel in the inputs."""
  is_sentinel = np.isin(inputs, sentinels)
  return np.diff(np.flatnonzero(is_sentinel), prepend=-1) - 1


# ----------------------------------------------------------------------------------------------------------------
# span_counts
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density, mean", SPAN_CONFIGS + [(0.9, 1), (0.8, 3)])
def test_span_counts_follow_the_t5_rules(density, mean):
  for length in range(1, 3000):
    num_noise, num_spans = ul2.span_counts(length, noise_density=density, mean_span_length=mean)
    expected_noise = min(max(round(length * density), 1), max(length - 1, 1))
    assert num_noise == expected_noise
    # Every noise span and every kept span holds a token (a 1-token sequence has no kept token to hold).
    assert 1 <= num_spans <= num_noise and num_spans <= max(length - num_noise, 1)
    if density < mean / (mean + 1):  # the cap cannot bind: exactly T5's round(noise / mean), at least 1
      assert num_spans == max(round(num_noise / mean), 1)
    if length >= 100:
      assert abs(num_noise / length - density) <= 0.5 / length + 1e-12


# ----------------------------------------------------------------------------------------------------------------
# span_corruption
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density, mean", SPAN_CONFIGS + [(0.8, 3)])
@pytest.mark.parametrize("length", LENGTHS)
def test_span_corruption_reconstructs_and_counts(density, mean, length):
  rng = np.random.default_rng([length, int(density * 100), int(mean)])
  num_noise, num_spans = ul2.span_counts(length, noise_density=density, mean_span_length=mean)
  for _ in range(20 if length < 1000 else 4):
    tokens = _text(rng, length)
    inputs, targets = ul2.span_corruption(tokens, rng, noise_density=density, mean_span_length=mean,
                                          sentinel_ids=SENTINELS)
    assert inputs.dtype == targets.dtype == np.int32
    assert _fill_sentinels(inputs, targets) == tokens.tolist()
    marks, spans = _split_targets(targets)
    # Sentinels 0, 1, ... in order, once each, in both inputs and targets.
    assert marks == SENTINELS[:num_spans]
    assert inputs[np.isin(inputs, SENTINELS)].tolist() == SENTINELS[:num_spans]
    assert sum(map(len, spans)) == num_noise and min(map(len, spans)) >= 1
    kept = _kept_span_lengths(inputs)
    assert inputs[-1] == SENTINELS[num_spans - 1], "the sequence ends with a noise span"
    assert kept.sum() == length - num_noise
    assert length == 1 or kept.min() >= 1


@pytest.mark.parametrize("density, mean, length", [(0.15, 3, 512), (0.15, 8, 1024), (0.5, 3, 512),
                                                   (0.5, 8, 1024), (0.15, 64, 4096), (0.5, 64, 4096)])
def test_span_lengths_average_near_the_mean(density, mean, length):
  rng = np.random.default_rng(0)
  noise_lengths, kept_lengths = [], []
  for _ in range(30):
    inputs, targets = ul2.span_corruption(_text(rng, length), rng, noise_density=density,
                                          mean_span_length=mean, sentinel_ids=SENTINELS)
    noise_lengths += [len(span) for span in _split_targets(targets)[1]]
    kept_lengths += _kept_span_lengths(inputs).tolist()
  # The mean is fixed by the counts (rounding moves it a few percent); the lengths themselves are random.
  assert np.mean(noise_lengths) == pytest.approx(mean, rel=0.1)
  assert np.mean(kept_lengths) == pytest.approx(mean * (1 - density) / density, rel=0.1)
  assert np.std(noise_lengths) > 0.3 * mean and np.std(kept_lengths) > 0.3 * mean


def test_noise_is_spread_evenly_over_the_sequence():
  # Away from the ends (the first token is always kept, the last always noise) every position is noise with
  # probability close to the density: the spans are not biased towards any place.
  rng = np.random.default_rng(1)
  length, samples = 64, 2000
  noise_count = np.zeros(length)
  for _ in range(samples):
    _, targets = ul2.span_corruption(np.arange(FIRST_TEXT_ID, FIRST_TEXT_ID + length), rng, noise_density=0.5,
                                     mean_span_length=3, sentinel_ids=SENTINELS)
    noise_count[targets[~np.isin(targets, SENTINELS)] - FIRST_TEXT_ID] += 1
  middle = noise_count[length // 4:3 * length // 4] / samples
  assert np.all(np.abs(middle - 0.5) < 0.06), middle


def test_tiny_sequences():
  kwargs = dict(noise_density=0.15, mean_span_length=3, sentinel_ids=SENTINELS)
  s0 = SENTINELS[0]
  inputs, targets = ul2.span_corruption([7], np.random.default_rng(0), **kwargs)
  assert (inputs.tolist(), targets.tolist()) == ([s0], [s0, 7])  # the lone token is the whole target
  inputs, targets = ul2.span_corruption([7, 8], np.random.default_rng(0), **kwargs)
  assert (inputs.tolist(), targets.tolist()) == ([7, s0], [s0, 8])
  inputs, targets = ul2.span_corruption([7, 8, 9], np.random.default_rng(0), **kwargs)
  assert (inputs.tolist(), targets.tolist()) == ([7, 8, s0], [s0, 9])


def test_span_corruption_is_deterministic_by_seed():
  tokens = _text(np.random.default_rng(0), 300)

  def run(seed):
    inputs, targets = ul2.span_corruption(tokens, np.random.default_rng(seed), noise_density=0.15,
                                          mean_span_length=3, sentinel_ids=SENTINELS)
    return inputs.tolist(), targets.tolist()

  assert run(5) == run(5)
  assert len({str(run(seed)) for seed in range(10)}) == 10


def test_eos_is_appended_only_when_asked():
  tokens = _text(np.random.default_rng(0), 50)
  kwargs = dict(noise_density=0.5, mean_span_length=3, sentinel_ids=SENTINELS)
  plain = ul2.span_corruption(tokens, np.random.default_rng(3), **kwargs)
  with_eos = ul2.span_corruption(tokens, np.random.default_rng(3), eos_id=1, **kwargs)
  for a, b in zip(plain, with_eos):
    assert b.tolist() == a.tolist() + [1]
  plain = ul2.prefix_lm(tokens, np.random.default_rng(3))
  with_eos = ul2.prefix_lm(tokens, np.random.default_rng(3), eos_id=1)
  for a, b in zip(plain, with_eos):
    assert b.tolist() == a.tolist() + [1]


# ----------------------------------------------------------------------------------------------------------------
# prefix_lm
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
def test_prefix_lm_reconstructs(length):
  rng = np.random.default_rng(length)
  for _ in range(20):
    tokens = _text(rng, length)
    inputs, targets = ul2.prefix_lm(tokens, rng)
    assert inputs.tolist() + targets.tolist() == tokens.tolist()
    assert len(targets) >= 1 and (length == 1 or len(inputs) >= 1)


def test_prefix_lm_split_point_is_uniform():
  rng = np.random.default_rng(0)
  draws = 4000
  splits = [len(ul2.prefix_lm([10, 11, 12, 13, 14], rng)[0]) for _ in range(draws)]
  counts = np.bincount(splits, minlength=5)
  assert counts[0] == 0  # never an empty prefix
  assert np.all(np.abs(counts[1:] / draws - 0.25) < 0.03), counts
  assert ul2.prefix_lm([9], rng)[0].size == 0


def test_prefix_lm_is_deterministic_by_seed():
  tokens = _text(np.random.default_rng(0), 1000)
  first = ul2.prefix_lm(tokens, np.random.default_rng(7))
  again = ul2.prefix_lm(tokens, np.random.default_rng(7))
  assert all(np.array_equal(a, b) for a, b in zip(first, again))


# ----------------------------------------------------------------------------------------------------------------
# The mixture
# ----------------------------------------------------------------------------------------------------------------


def test_default_mixture_is_the_ul2_papers():
  # arXiv:2205.05131, Section 3.1.2: R (3, 15%), (8, 15%); X (3, 50%), (8, 50%), (64, 15%), (64, 50%); S.
  got = {(d.mode, d.kind, d.mean_span_length, d.noise_density) for d in ul2.UL2_DENOISERS}
  assert len(ul2.UL2_DENOISERS) == len(got) == 7
  assert got == {
      ("[NLU]", "span", 3, 0.15), ("[NLU]", "span", 8, 0.15),
      ("[NLG]", "span", 3, 0.5), ("[NLG]", "span", 8, 0.5),
      ("[NLG]", "span", 64, 0.15), ("[NLG]", "span", 64, 0.5),
      ("[S2S]", "prefix", None, None),
  }
  with pytest.raises(dataclasses.FrozenInstanceError):
    ul2.UL2_DENOISERS[0].noise_density = 0.3


@pytest.mark.parametrize("length", (1, 2, 3, 17, 512))
def test_ul2_denoise_puts_the_mode_token_first_and_reconstructs(length):
  by_name = {d.name: d for d in ul2.UL2_DENOISERS}
  rng = np.random.default_rng(length)
  for _ in range(60):
    tokens = _text(rng, length)
    inputs, targets, name = ul2.ul2_denoise(tokens, rng, mode_token_ids=MODE_IDS, sentinel_ids=SENTINELS,
                                            eos_id=1)
    denoiser = by_name[name]
    assert inputs[0] == MODE_IDS[denoiser.mode]
    assert inputs[-1] == targets[-1] == 1
    body, targets = inputs[1:-1], targets[:-1]
    if denoiser.kind == "span":
      assert _fill_sentinels(body, targets) == tokens.tolist()
    else:
      assert body.tolist() + targets.tolist() == tokens.tolist()


def test_ul2_denoise_draws_uniformly_by_default_and_by_rate_otherwise():
  rng = np.random.default_rng(0)
  tokens = _text(rng, 40)
  names = [d.name for d in ul2.UL2_DENOISERS]

  def frequencies(rates, draws=2800):
    got = [ul2.ul2_denoise(tokens, rng, mode_token_ids=MODE_IDS, sentinel_ids=SENTINELS, rates=rates)[2]
           for _ in range(draws)]
    return np.array([got.count(name) for name in names]) / draws

  assert np.all(np.abs(frequencies(None) - 1 / 7) < 0.03)
  rates = [1, 0, 0, 0, 0, 0, 3]
  assert np.all(np.abs(frequencies(rates) - np.array(rates) / 4) < 0.03)


def test_ul2_denoise_is_deterministic_by_seed():
  tokens = _text(np.random.default_rng(0), 200)

  def run(seed):
    inputs, targets, name = ul2.ul2_denoise(tokens, np.random.default_rng(seed), mode_token_ids=MODE_IDS,
                                            sentinel_ids=SENTINELS)
    return inputs.tolist(), targets.tolist(), name

  assert [run(seed) for seed in range(20)] == [run(seed) for seed in range(20)]


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one clear line
# ----------------------------------------------------------------------------------------------------------------


def test_a_sentinel_in_the_source_is_rejected():
  tokens = [10, 11, SENTINELS[5], 12]
  message = rf"tokens contain sentinel id {SENTINELS[5]} at position 2"
  with pytest.raises(ValueError, match=message):
    ul2.span_corruption(tokens, np.random.default_rng(0), noise_density=0.15, mean_span_length=3,
                        sentinel_ids=SENTINELS)
  # Even when the draw would have been the prefix LM, which needs no sentinels: fail on the first example.
  with pytest.raises(ValueError, match=message):
    ul2.ul2_denoise(tokens, np.random.default_rng(0), mode_token_ids=MODE_IDS, sentinel_ids=SENTINELS,
                    rates=[0, 0, 0, 0, 0, 0, 1])


def test_too_few_sentinels_is_rejected():
  tokens = _text(np.random.default_rng(0), 2048)  # 15% noise, mean span 3: 102 spans; T5 has 100 sentinels
  with pytest.raises(ValueError, match="make 102 noise spans but only 100 sentinel ids were given"):
    ul2.span_corruption(tokens, np.random.default_rng(0), noise_density=0.15, mean_span_length=3,
                        sentinel_ids=SENTINELS[:100])
  # Checked for every denoiser that can be drawn, whichever is drawn; one that cannot be drawn is not checked.
  with pytest.raises(ValueError, match="noise_density 0.5 and mean_span_length 3 make 341 noise spans"):
    ul2.ul2_denoise(tokens, np.random.default_rng(0), mode_token_ids=MODE_IDS, sentinel_ids=SENTINELS[:300],
                    rates=[0, 0, 1e-9, 0, 0, 0, 1])
  *_, name = ul2.ul2_denoise(tokens, np.random.default_rng(0), mode_token_ids=MODE_IDS,
                             sentinel_ids=SENTINELS[:100], rates=[0, 1, 0, 0, 1, 0, 1])
  assert name in ("r8_15", "x64_15", "s")


@pytest.mark.parametrize("tokens, message", [
    ([], "tokens is empty"),
    (np.zeros((2, 3), np.int32), r"1-D sequence of ids, got shape \(2, 3\)"),
    ([1.5, 2.0], "integer ids, got dtype float64"),
])
def test_bad_tokens(tokens, message):
  with pytest.raises(ValueError, match=message):
    ul2.prefix_lm(tokens, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(rates=[1, 2]), r"one rate per denoiser \(7\), got shape \(2,\)"),
    (dict(rates=[0] * 7), "not all 0"),
    (dict(rates=[1, 1, 1, 1, 1, 1, -1]), ">= 0"),
    (dict(mode_token_ids={"[NLU]": 3}), r"no id for mode token\(s\) \['\[NLG\]', '\[S2S\]'\]"),
    (dict(denoisers=()), "denoisers is empty"),
    (dict(denoisers=ul2.UL2_DENOISERS[:1] * 2), "names must be unique"),
    (dict(sentinel_ids=[SENTINELS[0]] * 2), "sentinel_ids must be distinct"),
])
def test_bad_mixture_arguments(kwargs, message):
  kwargs = dict(dict(mode_token_ids=MODE_IDS, sentinel_ids=SENTINELS), **kwargs)
  with pytest.raises(ValueError, match=message):
    ul2.ul2_denoise([10, 11, 12], np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("fields, message", [
    (dict(kind="mask"), "kind must be one of"),
    (dict(kind="span", mean_span_length=0.5, noise_density=0.15), "mean_span_length must be >= 1, got 0.5"),
    (dict(kind="span", mean_span_length=3, noise_density=1.0), r"noise_density must be in \(0, 1\), got 1.0"),
    (dict(kind="span", mean_span_length=3), "noise_density must be in"),
    (dict(kind="prefix", noise_density=0.15), "a prefix LM takes no mean_span_length or noise_density"),
])
def test_bad_denoiser(fields, message):
  with pytest.raises(ValueError, match=rf"denoiser 'd': {message}"):
    ul2.Denoiser("d", "[NLU]", **fields)
