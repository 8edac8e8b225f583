"""UL2's mixture of denoisers, as pure numpy functions on token-id sequences.

UL2 (Tay et al., "UL2: Unifying Language Learning Paradigms", arXiv:2205.05131, Section 3.1.2) pretrains one
model on a mixture of seven denoising objectives and prepends a mode token to the encoder input that tells the
model which one it is solving, so a downstream task can later pick the matching mode:

  R, regular span corruption   [NLU]   mean span 3 and 8, 15% of the tokens corrupted
  X, extreme span corruption   [NLG]   mean span 3 and 8 at 50%; mean span 64 at 15% and at 50%
  S, sequential (prefix LM)    [S2S]   continue the text from a random split point

`UL2_DENOISERS` is that mixture. Span corruption follows T5 (Raffel et al. 2020): each noise span becomes one
sentinel in the inputs, and the targets list the sentinels each followed by the span it replaced:

  tokens   a b c d e f g h i
  inputs   a b <S0> e f g <S1>           (noise: "c d" and "h i")
  targets  <S0> c d <S1> h i

Everything is vocabulary-agnostic: the caller passes the sentinel ids (sentinel i is `sentinel_ids[i]`, T5's
<extra_id_i>), the mode token ids and, optionally, the EOS id. Randomness comes only from the numpy Generator
passed in, so an example is a pure function of (tokens, generator state); a seqio preprocessor can call these
per example through numpy and seed the generator from the example's seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Span corruption (R- and X-denoisers)
# ----------------------------------------------------------------------------------------------------------------


def span_counts(length: int, *, noise_density: float, mean_span_length: float) -> tuple[int, int]:
  """How many tokens and spans `span_corruption` corrupts in a sequence of `length` tokens.

  Noise tokens: round(length * noise_density), at least 1 and at most length - 1 so that both the inputs and
  the targets carry content (a single token is corrupted whole: there is no other way to give it a target).
  Noise spans: round(noise tokens / mean_span_length), at least 1, and capped so that every noise span and
  every kept span holds at least one token; the cap binds only for noise densities near or above m / (m + 1)
  for mean span length m, so never for `UL2_DENOISERS`. Rounding is half to even.

  Args:
    length: number of tokens, >= 1.
    noise_density: fraction of tokens to corrupt, in (0, 1).
    mean_span_length: mean number of tokens in a noise span, >= 1.

  Returns:
    (num_noise_tokens, num_noise_spans).
  """
  num_noise = min(max(round(length * noise_density), 1), max(length - 1, 1))
  num_kept = length - num_noise
  num_spans = max(min(round(num_noise / mean_span_length), num_noise, num_kept), 1)
  return num_noise, num_spans


def span_corruption(tokens: Sequence[int] | np.ndarray, rng: np.random.Generator, *, noise_density: float,
                    mean_span_length: float, sentinel_ids: Sequence[int],
                    eos_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """T5-style span corruption: noise spans are cut out of the inputs and become the targets.

  The sequence is split into alternating kept and noise spans, starting with a kept span and ending with a
  noise span (so, as in T5, the last token is always noise); the noise tokens and the kept tokens are each
  divided into `num_noise_spans` non-empty spans, uniformly at random over all such divisions.

  Args:
    tokens: int [L], L >= 1, containing none of `sentinel_ids`.
    rng: the only source of randomness.
    noise_density: fraction of tokens to corrupt, in (0, 1); see `span_counts`.
    mean_span_length: mean number of tokens in a noise span, >= 1.
    sentinel_ids: id of sentinel i at index i; at least as many as there are noise spans.
    eos_id: appended to both inputs and targets if given. Leave None when the output features add EOS
      themselves (seqio's add_eos=True), or it would appear twice.

  Returns:
    (inputs, targets): int32 [L - num_noise + num_spans (+1)] with each noise span replaced by its sentinel,
    and int32 [num_noise + num_spans (+1)], sentinel_0 span_0 sentinel_1 span_1 ...

  Raises:
    ValueError: if the tokens are empty or contain a sentinel id, or there are too few sentinel ids.
  """
  tokens = _as_tokens(tokens)
  sentinels = _as_sentinels(sentinel_ids)
  _check_no_sentinels(tokens, sentinels)
  _check_sentinel_budget(len(tokens), noise_density, mean_span_length, sentinels)
  inputs, targets = _corrupt_spans(tokens, rng, noise_density, mean_span_length, sentinels)
  return _append_eos(inputs, eos_id), _append_eos(targets, eos_id)


def _corrupt_spans(tokens: np.ndarray, rng: np.random.Generator, noise_density: float, mean_span_length: float,
                   sentinels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`span_corruption` on validated arguments, without EOS."""
  num_noise, num_spans = span_counts(len(tokens), noise_density=noise_density, mean_span_length=mean_span_length)
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)  # [num_spans]
  kept_lengths = _random_segmentation(len(tokens) - num_noise, num_spans, rng)  # [num_spans]
  # Interleaved span lengths kept_0 noise_0 kept_1 noise_1 ...; split before each span but the first.
  boundaries = np.cumsum(np.stack([kept_lengths, noise_lengths], axis=1).ravel())[:-1]
  pieces = np.split(tokens, boundaries)
  kept, noise = pieces[0::2], pieces[1::2]
  marks = np.split(sentinels[:num_spans], num_spans)  # num_spans arrays of one sentinel each
  inputs = np.concatenate([piece for pair in zip(kept, marks) for piece in pair])
  targets = np.concatenate([piece for pair in zip(marks, noise) for piece in pair])
  return inputs, targets


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Splits `num_items` into `num_segments` positive lengths, uniformly over all such splits.

  The splits correspond one to one to the choices of num_segments - 1 distinct cut points among the
  num_items - 1 gaps between items, so drawing the cut points uniformly draws the split uniformly.
  A single segment may be empty (num_items = 0), which `span_counts` allows only for a 1-token sequence.

  Returns:
    int [num_segments], summing to num_items.
  """
  if num_segments == 1:
    return np.array([num_items])
  cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
  return np.diff(cuts, prepend=0, append=num_items)


# ----------------------------------------------------------------------------------------------------------------
# Prefix LM (S-denoiser)
# ----------------------------------------------------------------------------------------------------------------


def prefix_lm(tokens: Sequence[int] | np.ndarray, rng: np.random.Generator, *,
              eos_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Splits the sequence at a uniformly random point: the prefix is the input, the rest the target.

  Args:
    tokens: int [L], L >= 1.
    rng: the only source of randomness.
    eos_id: appended to both inputs and targets if given (see `span_corruption`).

  Returns:
    (inputs, targets): int32 [k (+1)] and int32 [L - k (+1)] with k uniform in 1..L-1, so both are non-empty
    when L >= 2. A single token becomes the target with an empty prefix: an empty target would teach nothing.

  Raises:
    ValueError: if the tokens are empty.
  """
  tokens = _as_tokens(tokens)
  split = int(rng.integers(1, len(tokens))) if len(tokens) > 1 else 0
  return _append_eos(tokens[:split], eos_id), _append_eos(tokens[split:], eos_id)


# ----------------------------------------------------------------------------------------------------------------
# The mixture
# ----------------------------------------------------------------------------------------------------------------

KINDS = ("span", "prefix")


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """One denoising objective of a UL2 mixture.

  Attributes:
    name: unique within a mixture; `ul2_denoise` reports it so a pipeline can count or filter examples.
    mode: the mode token's text, e.g. "[NLU]"; `ul2_denoise` maps it to an id, keeping configs vocab-free.
    kind: "span" (`span_corruption`) or "prefix" (`prefix_lm`).
    mean_span_length: mean noise span length, >= 1; "span" only.
    noise_density: fraction of tokens corrupted, in (0, 1); "span" only.
  """

  name: str
  mode: str
  kind: str
  mean_span_length: float | None = None
  noise_density: float | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"denoiser {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
    if self.kind == "prefix":
      if self.mean_span_length is not None or self.noise_density is not None:
        raise ValueError(f"denoiser {self.name!r}: a prefix LM takes no mean_span_length or noise_density")
      return
    if self.mean_span_length is None or not self.mean_span_length >= 1:
      raise ValueError(f"denoiser {self.name!r}: mean_span_length must be >= 1, got {self.mean_span_length}")
    if self.noise_density is None or not 0 < self.noise_density < 1:
      raise ValueError(f"denoiser {self.name!r}: noise_density must be in (0, 1), got {self.noise_density}")


# UL2's seven denoisers (arXiv:2205.05131, Section 3.1.2). Names: kind letter, mean span, percent noise.
UL2_DENOISERS: tuple[Denoiser, ...] = (
    Denoiser("r3_15", "[NLU]", "span", mean_span_length=3, noise_density=0.15),
    Denoiser("r8_15", "[NLU]", "span", mean_span_length=8, noise_density=0.15),
    Denoiser("x3_50", "[NLG]", "span", mean_span_length=3, noise_density=0.5),
    Denoiser("x8_50", "[NLG]", "span", mean_span_length=8, noise_density=0.5),
    Denoiser("x64_15", "[NLG]", "span", mean_span_length=64, noise_density=0.15),
    Denoiser("x64_50", "[NLG]", "span", mean_span_length=64, noise_density=0.5),
    Denoiser("s", "[S2S]", "prefix"),
)


def ul2_denoise(tokens: Sequence[int] | np.ndarray, rng: np.random.Generator, *, mode_token_ids: Mapping[str, int],
                sentinel_ids: Sequence[int], denoisers: Sequence[Denoiser] = UL2_DENOISERS,
                rates: Sequence[float] | None = None,
                eos_id: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
  """Draws one denoiser of the mixture and applies it, with its mode token first in the inputs.

  The configuration is checked in full before the draw (every mode token has an id, the sentinels suffice for
  every span denoiser that can be drawn at this length, the source has no sentinel), so a bad setup fails on
  the first example rather than whenever an unlucky draw reaches it.

  Args:
    tokens: int [L], L >= 1, containing none of `sentinel_ids`.
    rng: the only source of randomness: it picks the denoiser and then drives it.
    mode_token_ids: mode token text -> id, for every `Denoiser.mode` in `denoisers`.
    sentinel_ids: id of sentinel i at index i.
    denoisers: the mixture; names must be unique.
    rates: relative probability of each denoiser (same order, >= 0, positive sum); None draws uniformly.
    eos_id: appended to both inputs and targets if given (see `span_corruption`).

  Returns:
    (inputs, targets, name): int32 [1 + ...] starting with the mode token id, int32 [...], and the name of the
    denoiser drawn.

  Raises:
    ValueError: on any inconsistent argument, with one line naming it.
  """
  tokens = _as_tokens(tokens)
  sentinels = _as_sentinels(sentinel_ids)
  probabilities = _mixing_probabilities(denoisers, rates)
  missing = sorted({d.mode for d in denoisers} - set(mode_token_ids))
  if missing:
    raise ValueError(f"mode_token_ids has no id for mode token(s) {missing}")
  _check_no_sentinels(tokens, sentinels)
  for denoiser, probability in zip(denoisers, probabilities):
    if denoiser.kind == "span" and probability > 0:
      _check_sentinel_budget(len(tokens), denoiser.noise_density, denoiser.mean_span_length, sentinels)

  denoiser = denoisers[rng.choice(len(denoisers), p=probabilities)]
  if denoiser.kind == "span":
    inputs, targets = _corrupt_spans(tokens, rng, denoiser.noise_density, denoiser.mean_span_length, sentinels)
  else:
    inputs, targets = prefix_lm(tokens, rng)
  mode = np.array([mode_token_ids[denoiser.mode]], np.int32)
  return _append_eos(np.concatenate([mode, inputs]), eos_id), _append_eos(targets, eos_id), denoiser.name


def _mixing_probabilities(denoisers: Sequence[Denoiser], rates: Sequence[float] | None) -> np.ndarray:
  """Validated, normalised probabilities [len(denoisers)] of drawing each denoiser."""
  if not denoisers:
    raise ValueError("denoisers is empty")
  names = [d.name for d in denoisers]
  if len(set(names)) != len(names):
    raise ValueError(f"denoiser names must be unique, got {names}")
  if rates is None:
    return np.full(len(denoisers), 1 / len(denoisers))
  rates = np.asarray(rates, np.float64)
  if rates.shape != (len(denoisers),):
    raise ValueError(f"rates must give one rate per denoiser ({len(denoisers)}), got shape {rates.shape}")
  if not (np.all(np.isfinite(rates)) and np.all(rates >= 0) and rates.sum() > 0):
    raise ValueError(f"rates must be finite, >= 0 and not all 0, got {rates.tolist()}")
  return rates / rates.sum()


# ----------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------


def _as_tokens(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
  """int32 [L], L >= 1, or a ValueError."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise ValueError(f"tokens must be a 1-D sequence of ids, got shape {tokens.shape}")
  if tokens.size == 0:
    raise ValueError("tokens is empty: filter out empty examples before denoising")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
  return tokens.astype(np.int32, copy=False)


def _as_sentinels(sentinel_ids: Sequence[int]) -> np.ndarray:
  """int32 [S] of distinct ids, or a ValueError."""
  sentinels = np.asarray(sentinel_ids, np.int32).reshape(-1)
  if len(np.unique(sentinels)) != len(sentinels):
    raise ValueError("sentinel_ids must be distinct")
  return sentinels


def _check_no_sentinels(tokens: np.ndarray, sentinels: np.ndarray):
  """A sentinel in the source would make the targets ambiguous (which span does it mark?)."""
  found = tokens[np.isin(tokens, sentinels)]
  if found.size:
    raise ValueError(f"tokens contain sentinel id {found[0]} at position {np.flatnonzero(tokens == found[0])[0]}: "
                     "source text must not contain sentinels")


def _check_sentinel_budget(length: int, noise_density: float, mean_span_length: float, sentinels: np.ndarray):
  _, num_spans = span_counts(length, noise_density=noise_density, mean_span_length=mean_span_length)
  if num_spans > len(sentinels):
    raise ValueError(f"{length} tokens at noise_density {noise_density} and mean_span_length {mean_span_length} "
                     f"make {num_spans} noise spans but only {len(sentinels)} sentinel ids were given")


def _append_eos(ids: np.ndarray, eos_id: int | None) -> np.ndarray:
  return ids if eos_id is None else np.append(ids, np.int32(eos_id))
