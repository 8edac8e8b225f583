"""Batched autoregressive decoding on a KV cache: greedy, temperature / top-k / top-p sampling, beam search.

The model plugs in as one function, whatever it is (the UL2 decoder, a toy in the tests):

  tokens_to_logits(token_ids, step, state) -> (logits, new_state)

`token_ids` int32 [batch] is the token at position `step` of every row (the start token at step 0), `step` an
int32 scalar, and `logits` float [batch, vocab] the distribution of the token at position `step + 1`. `state`
is any pytree whose every leaf leads with the batch axis (KV caches, encoder outputs, encoder masks): beam
search tiles it to [batch * beam, ...], beam-major inside each row (row b's beams are b*beam .. b*beam+beam-1),
and reorders it by each beam's parent every step. A cache must hold positions 0 .. max_decode_len - 1.

Everything is jittable: one `lax.while_loop` over the steps, which exits as soon as every row has finished.
The options (lengths, ids, temperature, top_k, top_p, beam_size, alpha) are Python numbers, static under jit.
Log-probabilities are a float32 log_softmax, whatever dtype the model computes in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any
TokensToLogits = Callable[[jax.Array, jax.Array, PyTree], tuple[jax.Array, PyTree]]


class DecodeResult(NamedTuple):
  """What every decoding method returns.

  Attributes:
    tokens: int32 [batch, max_decode_len], without the start token. A row ends with its EOS token and is
      padded with 0 after it; a row that never emits EOS fills all max_decode_len positions.
    scores: float32 [batch], the sum of the model's log-probabilities of the emitted tokens (EOS included,
      padding not). Always the model's own distribution (no temperature, no top-k / top-p), so scores of
      different methods compare.
    penalized_scores: float32 [batch] for beam search, None otherwise: scores / ((5 + length) / 6) ** alpha
      with length the number of emitted tokens (EOS included), the quantity beam search maximised.
  """
  tokens: jax.Array
  scores: jax.Array
  penalized_scores: jax.Array | None = None


def greedy(tokens_to_logits: TokensToLogits, state: PyTree, *, max_decode_len: int, eos_id: int = 1,
           start_id: int = 0) -> DecodeResult:
  """Emits the most likely token at every step (the first one on ties)."""
  _check_common(max_decode_len, eos_id, start_id)
  return _decode_single_path(tokens_to_logits, state, _argmax, max_decode_len=max_decode_len, eos_id=eos_id,
                             start_id=start_id)


def sample(tokens_to_logits: TokensToLogits, state: PyTree, *, max_decode_len: int, rng: jax.Array,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_id: int = 1,
           start_id: int = 0) -> DecodeResult:
  """Draws every token from the model's distribution, tempered then filtered.

  Filtering follows the common order: divide the logits by `temperature`, keep the `top_k` most likely
  tokens, then keep the smallest set of the remaining (renormalised) tokens whose probability mass reaches
  `top_p`. Tokens tied with the last one kept are kept too.

  Args:
    rng: a PRNG key; step t draws with fold_in(rng, t), so the same key gives the same tokens.
    temperature: 0 means argmax (greedy, exactly); otherwise > 0, higher is more random.
    top_k: keep the k most likely tokens; 0 keeps all.
    top_p: in (0, 1]; 1 keeps all. The most likely token is always kept.
  """
  _check_common(max_decode_len, eos_id, start_id)
  if rng is None:
    raise ValueError("sample needs rng=jax.random.key(seed); got None")
  _check_number("temperature", temperature, lambda t: t >= 0, ">= 0 (0 = greedy)")
  _check_int("top_k", top_k, 0)
  _check_number("top_p", top_p, lambda p: 0 < p <= 1, "in (0, 1] (1 = no filtering)")

  def choose(log_probs, step):
    logits = _filter_top_p(_filter_top_k(log_probs / temperature, top_k), top_p)
    return jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)

  return _decode_single_path(tokens_to_logits, state, _argmax if temperature == 0 else choose,
                             max_decode_len=max_decode_len, eos_id=eos_id, start_id=start_id)


def beam_search(tokens_to_logits: TokensToLogits, state: PyTree, *, max_decode_len: int, beam_size: int = 4,
                alpha: float = 0.6, eos_id: int = 1, start_id: int = 0) -> DecodeResult:
  """Beam search with a length penalty, T5X style: `beam_size` alive and `beam_size` finished beams per row.

  Every step takes the best 2 * beam_size extensions of the alive beams: at most beam_size of them end in EOS
  (one per parent), so beam_size non-EOS ones are always left to refill the alive beams. Every EOS extension
  among those 2 * beam_size is offered to the finished beams (ranked by log_prob / ((5 + length) / 6) **
  alpha), as in T5X: an ending that ranks just below the alive beams is kept, where HF's beam search (and a
  classic one) drops it, so beam_size=1 can return an earlier, likelier EOS than greedy's. A row stops once no
  alive beam can beat its worst finished one (alive log-probabilities only fall and the penalty is largest at
  max_decode_len), the loop once every row has.

  Args:
    beam_size: beams per row, >= 1.
    alpha: length penalty exponent, >= 0; 0 ranks by plain log-probability, larger favours longer outputs.

  Returns:
    Per row, the best finished sequence, or the best alive one (max_decode_len tokens, no EOS) if none
    finished; `penalized_scores` is what was ranked. As in T5X, a finished sequence wins over any beam cut
    off at max_decode_len (HF lets those compete, so it can return a truncated beam that scores higher).
  """
  _check_common(max_decode_len, eos_id, start_id)
  _check_int("beam_size", beam_size, 1)
  _check_number("alpha", alpha, lambda a: a >= 0, ">= 0 (0 = no length penalty)")
  batch, beams = _batch_size(state), beam_size

  def length_penalty(length):
    return ((5.0 + length) / 6.0) ** alpha

  def row_done(c: _Beams) -> jax.Array:
    best_possible = c.alive_log_probs[:, 0] / length_penalty(max_decode_len)
    # Empty finished slots hold -inf, so a row is done only with beam_size finished beams.
    return c.finished_scores[:, -1] >= best_possible  # [batch]

  def gather(x, index):  # x: [batch, n, ...], index: [batch, m] -> [batch, m, ...]
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

  def body(c: _Beams) -> _Beams:
    logits, state = tokens_to_logits(c.alive_last.reshape(-1), c.step, c.state)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, beams, -1)  # [batch, beam, vocab]
    vocab = log_probs.shape[-1]
    extended = (c.alive_log_probs[:, :, None] + log_probs).reshape(batch, beams * vocab)
    cand_log_probs, cand = lax.top_k(extended, min(2 * beams, beams * vocab))  # [batch, cand], best first
    parent, token = cand // vocab, cand % vocab
    cand_tokens = gather(c.alive_tokens, parent).at[:, :, c.step].set(token)  # [batch, cand, len]
    is_eos = token == eos_id

    # An EOS extension of an empty (-inf) beam is no sequence: it must not count as finished.
    finishes = is_eos & (cand_log_probs > -jnp.inf)
    cand_scores = jnp.where(finishes, cand_log_probs / length_penalty(c.step + 1.0), -jnp.inf)
    finished_scores, best = lax.top_k(jnp.concatenate([c.finished_scores, cand_scores], axis=1), beams)
    finished_tokens = gather(jnp.concatenate([c.finished_tokens, cand_tokens], axis=1), best)
    finished_log_probs = gather(jnp.concatenate([c.finished_log_probs, cand_log_probs], axis=1), best)
    # A done row's finished beams could only be replaced by equal scores: freeze them outright.
    done = row_done(c)[:, None]
    finished_scores = jnp.where(done, c.finished_scores, finished_scores)
    finished_tokens = jnp.where(done[:, :, None], c.finished_tokens, finished_tokens)
    finished_log_probs = jnp.where(done, c.finished_log_probs, finished_log_probs)

    alive_log_probs, alive = lax.top_k(jnp.where(is_eos, -jnp.inf, cand_log_probs), beams)
    alive_parent = gather(parent, alive)
    # Each alive beam continues from the state its parent just produced.
    rows = (jnp.arange(batch)[:, None] * beams + alive_parent).reshape(-1)  # [batch * beam]
    state = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), state)
    return _Beams(c.step + 1, gather(token, alive), gather(cand_tokens, alive), alive_log_probs,
                  finished_tokens, finished_log_probs, finished_scores, state)

  empty = jnp.full([batch, beams], -jnp.inf, jnp.float32)
  init = _Beams(
      step=jnp.int32(0),
      alive_last=jnp.full([batch, beams], start_id, jnp.int32),
      alive_tokens=jnp.zeros([batch, beams, max_decode_len], jnp.int32),
      # Only beam 0 is real at first, so step 0 does not expand beam_size copies of the start token.
      alive_log_probs=empty.at[:, 0].set(0.0),
      finished_tokens=jnp.zeros([batch, beams, max_decode_len], jnp.int32),
      finished_log_probs=empty,
      finished_scores=empty,
      state=jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), state))
  c = lax.while_loop(lambda c: (c.step < max_decode_len) & ~jnp.all(row_done(c)), body, init)

  any_finished = c.finished_scores[:, 0] > -jnp.inf  # [batch]
  return DecodeResult(
      tokens=jnp.where(any_finished[:, None], c.finished_tokens[:, 0], c.alive_tokens[:, 0]),
      scores=jnp.where(any_finished, c.finished_log_probs[:, 0], c.alive_log_probs[:, 0]),
      penalized_scores=jnp.where(any_finished, c.finished_scores[:, 0],
                                 c.alive_log_probs[:, 0] / length_penalty(max_decode_len)))


_METHODS = {"greedy": greedy, "beam": beam_search, "sample": sample}


def jit(fn: Callable, **jit_kwargs) -> Callable:
  """jax.jit for a function that runs a decoding loop; on CPU, without XLA's YNNPACK matmuls.

  A decoding step multiplies a few rows (batch x beams) by every weight matrix. On CPU, XLA hands dots to
  YNNPACK by default, whose [8, K] x [K, N] products run ~1.5x slower than XLA's own (Eigen) path
  (measured on T5-small greedy decoding at batch 8: 26 -> 15 ms a step; at batch 1 and on the encoder's
  full-length products, no different). Eigen is slow on a transposed operand instead, hence UL2.tied_head.
  Other backends ignore the option, so it is only set on CPU.
  """
  if jax.default_backend() == "cpu":
    jit_kwargs["compiler_options"] = {"xla_cpu_experimental_ynn_fusion_type": "",
                                      **jit_kwargs.get("compiler_options", {})}
  return jax.jit(fn, **jit_kwargs)


def decode(tokens_to_logits: TokensToLogits, state: PyTree, *, method: str, max_decode_len: int,
           **opts) -> DecodeResult:
  """Runs `method` ("greedy" | "beam" | "sample") with its options: the keyword arguments of that function.

  Raises:
    ValueError: in one line, for an unknown method, an option the method does not take, a missing required
      option (sample's rng) or an invalid value.
  """
  if not isinstance(method, str) or method not in _METHODS:
    raise ValueError(f"unknown decoding method {method!r}; expected one of {', '.join(map(repr, _METHODS))}")
  if isinstance(max_decode_len, bool) or not isinstance(max_decode_len, (int, np.integer)) or max_decode_len < 1:
    raise ValueError(f"max_decode_len must be an integer >= 1 (answer tokens at most); got {max_decode_len!r}")
  fn = _METHODS[method]
  params = {name: p for name, p in inspect.signature(fn).parameters.items()
            if p.kind == p.KEYWORD_ONLY and name != "max_decode_len"}
  for name in opts:
    if name not in params:
      raise ValueError(f"decoding method {method!r} has no option {name!r}; its options are {', '.join(params)}")
  for name, p in params.items():
    if p.default is p.empty and name not in opts:
      raise ValueError(f"decoding method {method!r} needs option {name!r}")
  return fn(tokens_to_logits, state, max_decode_len=max_decode_len, **opts)


class _Beams(NamedTuple):
  """The beam search loop's carry; beams are sorted best first along axis 1."""
  step: jax.Array                # int32 scalar: the position of alive_last
  alive_last: jax.Array          # [batch, beam] the token each alive beam feeds the model next
  alive_tokens: jax.Array        # [batch, beam, max_decode_len]
  alive_log_probs: jax.Array     # [batch, beam]; -inf marks an empty beam
  finished_tokens: jax.Array     # [batch, beam, max_decode_len]
  finished_log_probs: jax.Array  # [batch, beam]
  finished_scores: jax.Array     # [batch, beam] length-penalised; -inf marks an empty slot
  state: PyTree                  # leaves [batch * beam, ...]


def _decode_single_path(tokens_to_logits: TokensToLogits, state: PyTree,
                        choose: Callable[[jax.Array, jax.Array], jax.Array], *, max_decode_len: int, eos_id: int,
                        start_id: int) -> DecodeResult:
  """The loop greedy and sample share: one continuation per row, `choose(log_probs [batch, vocab], step)`."""
  batch = _batch_size(state)

  def body(carry):
    step, last, state, tokens, finished, scores = carry
    logits, state = tokens_to_logits(last, step, state)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))  # [batch, vocab]
    token = jnp.where(finished, 0, choose(log_probs, step)).astype(jnp.int32)  # finished rows emit padding
    token_log_prob = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
    scores = scores + jnp.where(finished, 0.0, token_log_prob)
    return step + 1, token, state, tokens.at[:, step].set(token), finished | (token == eos_id), scores

  def cond(carry):
    step, _, _, _, finished, _ = carry
    return (step < max_decode_len) & ~jnp.all(finished)

  init = (jnp.int32(0), jnp.full([batch], start_id, jnp.int32), state,
          jnp.zeros([batch, max_decode_len], jnp.int32), jnp.zeros([batch], bool), jnp.zeros([batch], jnp.float32))
  _, _, _, tokens, _, scores = lax.while_loop(cond, body, init)
  return DecodeResult(tokens, scores)


def _argmax(log_probs: jax.Array, step: jax.Array) -> jax.Array:
  return jnp.argmax(log_probs, axis=-1)  # the first of tied tokens


def _filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
  """logits [batch, vocab] with all but the top_k largest of each row set to -inf (top_k 0: unchanged)."""
  if top_k == 0 or top_k >= logits.shape[-1]:
    return logits
  kth_largest = lax.top_k(logits, top_k)[0][:, -1:]  # [batch, 1]
  return jnp.where(logits >= kth_largest, logits, -jnp.inf)


def _filter_top_p(logits: jax.Array, top_p: float) -> jax.Array:
  """logits [batch, vocab] outside the smallest set of mass >= top_p set to -inf (top_p 1: unchanged)."""
  if top_p == 1:
    return logits
  descending = -jnp.sort(-logits, axis=-1)
  probs = jax.nn.softmax(descending, axis=-1)
  # A token is kept if the tokens before it have not reached top_p yet: the first always is.
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  smallest_kept = jnp.min(jnp.where(mass_before < top_p, descending, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= smallest_kept, logits, -jnp.inf)


def _batch_size(state: PyTree) -> int:
  """The common leading axis of every leaf of `state`."""
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(state)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError("decoding state must be a non-empty pytree whose every leaf leads with the batch axis; "
                     f"got leading sizes {sorted(sizes, key=str)}")
  return sizes.pop()


def _check_common(max_decode_len: int, eos_id: int, start_id: int) -> None:
  _check_int("max_decode_len", max_decode_len, 1)
  _check_int("eos_id", eos_id, 0)
  _check_int("start_id", start_id, 0)


def _check_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not ok(value):
    raise ValueError(f"{name} must be {allowed}; got {value!r}")
