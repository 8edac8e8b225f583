"""Decoding against plain-Python references on a toy model whose logits depend on the whole prefix.

The toy's state is a cache of the tokens seen so far ([batch, len], like a KV cache) and a per-row bias
([batch, vocab], like encoder outputs); its logits depend on the current token, the step, an order-dependent
hash of the cached prefix and the row's bias. A beam search that did not reorder the cache by parent, or a
loop that fed the wrong token or step, would therefore give different answers from the uncached reference,
which recomputes everything from the prefix.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm import decoding

EOS, START = 1, 0
NUM_CONTEXTS = 7  # the prefix hash: sum_j (token_j + 1) * 3**j mod 7
MAX_STEPS = 12    # rows of the step table; the longest decode in this file


def toy_params(seed, vocab, scale=1.5):
  """numpy tables (the reference reads them without a device round trip per token)."""
  rng = np.random.default_rng(seed)
  return {name: (scale * rng.normal(size=shape)).astype(np.float32)
          for name, shape in [("token", (vocab, vocab)), ("step", (MAX_STEPS, vocab)),
                              ("context", (NUM_CONTEXTS, vocab))]}


def toy_state(seed, batch, vocab, max_decode_len):
  bias = np.random.default_rng(seed + 1000).normal(size=(batch, vocab))
  return {"cache": jnp.zeros([batch, max_decode_len], jnp.int32), "bias": jnp.asarray(bias, jnp.float32)}


def toy_model(params, token, step, state):
  """tokens_to_logits: writes `token` at `step` of the cache, then reads the whole cached prefix."""
  cache = state["cache"].at[:, step].set(token)  # [batch, len]
  position = jnp.arange(cache.shape[1])
  weights = jnp.where(position <= step, 3 ** position % NUM_CONTEXTS, 0)
  context = jnp.sum((cache + 1) * weights, axis=1) % NUM_CONTEXTS  # [batch]
  token_table, step_table, context_table = (jnp.asarray(params[name]) for name in ("token", "step", "context"))
  logits = token_table[token] + step_table[step] + context_table[context] + state["bias"]
  return logits, {"cache": cache, "bias": state["bias"]}


@functools.partial(jax.jit, static_argnames=("method", "max_decode_len", "options"))
def _decode_toy(params, state, rng, *, method, max_decode_len, options):
  rng_option = {} if rng is None else {"rng": rng}
  return decoding.decode(functools.partial(toy_model, params), state, method=method,
                         max_decode_len=max_decode_len, **dict(options), **rng_option)


def decode_toy(params, state, method, max_decode_len, rng=None, **options):
  """decoding.decode on the toy model, jitted once per configuration: compiling dominates this file's time."""
  return _decode_toy(params, state, rng, method=method, max_decode_len=max_decode_len,
                     options=tuple(sorted(options.items())))


def reference_log_probs(params, bias_row, prefix):
  """float64 log-probabilities of the token after `prefix` (start token first), from the prefix alone."""
  step = len(prefix) - 1
  context = sum((t + 1) * 3 ** j for j, t in enumerate(prefix)) % NUM_CONTEXTS
  logits = (params["token"][prefix[-1]].astype(np.float64) + params["step"][step] + params["context"][context]
            + np.asarray(bias_row, np.float64))
  return logits - np.logaddexp.reduce(logits)


def reference_greedy(params, state, max_decode_len):
  """A plain Python loop of argmax, recomputing from the full prefix every step."""
  bias = np.asarray(state["bias"])
  tokens, scores = np.zeros([len(bias), max_decode_len], np.int32), np.zeros(len(bias))
  for row in range(len(bias)):
    prefix = [START]
    for step in range(max_decode_len):
      log_probs = reference_log_probs(params, bias[row], prefix)
      tokens[row, step] = np.argmax(log_probs)
      scores[row] += log_probs[tokens[row, step]]
      prefix.append(int(tokens[row, step]))
      if prefix[-1] == EOS:
        break
  return tokens, scores


def reference_score(params, bias_row, tokens):
  """Sum of the reference log-probabilities of `tokens` (up to and including EOS)."""
  prefix, total = [START], 0.0
  for token in emitted(tokens):
    total += reference_log_probs(params, bias_row, prefix)[token]
    prefix.append(int(token))
  return total


def emitted(tokens):
  """The tokens a row emitted: up to and including its first EOS."""
  tokens = [int(t) for t in np.asarray(tokens)]
  return tokens[:tokens.index(EOS) + 1] if EOS in tokens else tokens


def check_padding(tokens):
  for row in np.asarray(tokens):
    n = len(emitted(row))
    assert np.all(row[n:] == 0), row


@pytest.fixture(scope="module")
def toy():
  """A batch of 8 rows, vocab 6, decoded 8 steps: greedy finishes 4 rows by step 2, one at 5, 3 never."""
  vocab, batch, length = 6, 8, 8
  return toy_params(5, vocab), toy_state(5, batch, vocab, length), length


def test_greedy_equals_uncached_argmax_loop(toy):
  params, state, length = toy
  result = decoding.greedy(functools.partial(toy_model, params), state, max_decode_len=length)  # eagerly
  tokens, scores = reference_greedy(params, state, length)
  np.testing.assert_array_equal(result.tokens, tokens)
  np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)
  assert result.tokens.dtype == jnp.int32 and result.scores.dtype == jnp.float32
  assert result.penalized_scores is None
  lengths = [len(emitted(row)) for row in tokens]
  assert min(lengths) <= 2 and sum(EOS not in row for row in tokens) >= 2  # the fixture has both kinds of row
  check_padding(result.tokens)


def test_finished_rows_do_not_change_when_decoding_longer(toy):
  """Greedy (sample shares its loop) pads finished rows however long the others run.

  Not a property of beam search: a longer max_decode_len admits longer, better hypotheses. Its done rows
  staying put while other rows go on is what test_rows_decode_independently checks for it.
  """
  params, _, length = toy
  short = decode_toy(params, toy_state(5, 8, 6, length), "greedy", length)
  long = decode_toy(params, toy_state(5, 8, 6, length + 4), "greedy", length + 4)
  finished = [row for row in range(8) if EOS in np.asarray(short.tokens[row])]
  assert len(finished) >= 4
  for row in finished:
    np.testing.assert_array_equal(long.tokens[row, :length], short.tokens[row])
    assert np.all(np.asarray(long.tokens[row, length:]) == 0)
    np.testing.assert_allclose(long.scores[row], short.scores[row], rtol=1e-6)


@pytest.mark.parametrize("method,options", [("greedy", {}), ("beam", {"beam_size": 3})])
def test_rows_decode_independently(toy, method, options):
  params, state, length = toy
  batched = decode_toy(params, state, method, length, **options)
  for row in (0, 3, 6):
    alone = decode_toy(params, jax.tree.map(lambda x, row=row: x[row:row + 1], state), method, length, **options)
    np.testing.assert_array_equal(alone.tokens[0], batched.tokens[row])
    np.testing.assert_allclose(alone.scores[0], batched.scores[row], rtol=1e-5)


def test_loop_exits_once_every_row_finished():
  """A model that forces EOS at step 2 on every path is called exactly 3 times out of 10 possible steps."""
  vocab, batch = 5, 3
  params = toy_params(1, vocab)
  steps = []

  def model(token, step, state):
    jax.debug.callback(lambda s: steps.append(int(s)), step)
    logits, state = toy_model(params, token, step, state)
    no_eos = jnp.where(jnp.arange(vocab) == EOS, -100.0, logits)
    return jnp.where(step == 2, 100.0 * jax.nn.one_hot(EOS, vocab), no_eos), state

  for method, options in [("greedy", {}), ("beam", {"beam_size": 2}), ("sample", {"rng": jax.random.key(1)})]:
    steps.clear()
    result = decoding.decode(model, toy_state(1, batch, vocab, 10), method=method, max_decode_len=10, **options)
    jax.effects_barrier()
    assert sorted(steps) == [0, 1, 2], method
    assert np.all(np.asarray(result.tokens[:, 2]) == EOS) and np.all(np.asarray(result.tokens[:, 3:]) == 0)


def test_beam_size_1_with_alpha_0_follows_greedy(toy):
  """Its alive beam is greedy's path, so it returns greedy's sequence or an EOS ending of one of its prefixes."""
  params, state, length = toy
  greedy = decode_toy(params, state, "greedy", length)
  beam = decode_toy(params, state, "beam", length, beam_size=1, alpha=0.0)
  for row in range(len(greedy.tokens)):
    got, path = emitted(beam.tokens[row]), emitted(greedy.tokens[row])
    assert got == path or (got[-1] == EOS and got[:-1] == path[:len(got) - 1]), (got, path)
    if EOS in path:
      assert beam.scores[row] >= greedy.scores[row] - 1e-5


@pytest.mark.parametrize("beam_size", [1, 2])
def test_eos_ranked_below_the_beams_finishes(beam_size):
  """T5X's rule: an EOS among the best 2 * beam_size extensions finishes, even when not in the best beam_size.

  Step 0 ranks beam_size non-EOS tokens first and EOS next; every later step is uniform, so any continuation of
  those tokens falls below EOS at step 0, the only right answer.
  """
  vocab = beam_size + 3  # padding, EOS, beam_size likelier tokens, one unlikelier
  first = np.full(vocab, 0.05)  # probabilities of the first token
  first[EOS], first[2:2 + beam_size] = 0.25, 0.65 / beam_size
  assert np.argsort(-first)[beam_size] == EOS  # EOS ranks just below the beams

  def model(token, step, state):
    del token
    logits = jnp.where(step == 0, jnp.log(jnp.asarray(first, jnp.float32)), 0.0)
    return jnp.broadcast_to(logits, (state.shape[0], vocab)), state

  result = decoding.beam_search(model, jnp.zeros([2, 1]), max_decode_len=4, beam_size=beam_size, alpha=0.0)
  np.testing.assert_array_equal(result.tokens, [[EOS, 0, 0, 0]] * 2)
  np.testing.assert_allclose(result.scores, np.log(0.25), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_finds_the_exhaustive_optimum(alpha):
  """With room for every prefix, beam search returns the best of all EOS-terminated sequences."""
  vocab, batch, length = 4, 4, 4
  params, state = toy_params(2, vocab), toy_state(2, batch, vocab, length)
  beam_size = (vocab - 1) ** (length - 1) * vocab  # every extension of every non-EOS prefix fits in the beam
  result = decode_toy(params, state, "beam", length, beam_size=beam_size, alpha=alpha)
  bias = np.asarray(state["bias"])
  non_eos = [t for t in range(vocab) if t != EOS]
  candidates = [prefix + (EOS,) for n in range(length) for prefix in itertools.product(non_eos, repeat=n)]
  for row in range(batch):
    scored = [(reference_score(params, bias[row], c) / ((5 + len(c)) / 6) ** alpha, c) for c in candidates]
    best_score, best = max(scored)
    assert tuple(emitted(result.tokens[row])) == best
    np.testing.assert_allclose(result.penalized_scores[row], best_score, rtol=1e-5)
    np.testing.assert_allclose(result.scores[row], reference_score(params, bias[row], best), rtol=1e-5)
  check_padding(result.tokens)


def test_beam_scores_are_the_model_scores_and_beat_greedy(toy):
  params, state, length = toy
  bias = np.asarray(state["bias"])
  greedy = decode_toy(params, state, "greedy", length)
  for beam_size in (1, 3):
    beam = decode_toy(params, state, "beam", length, beam_size=beam_size, alpha=0.0)
    check_padding(beam.tokens)
    for row in range(len(bias)):
      np.testing.assert_allclose(beam.scores[row], reference_score(params, bias[row], beam.tokens[row]), rtol=1e-5)
      np.testing.assert_allclose(beam.penalized_scores[row], beam.scores[row], rtol=1e-6)  # alpha 0
      # Guaranteed for beam_size 1 (it is greedy); for wider beams a regression check on this model. A row
      # where greedy never emitted EOS has no finished sequence to compare with: skipped.
      if EOS in np.asarray(greedy.tokens[row]):
        assert beam.scores[row] >= greedy.scores[row] - 1e-5


def test_beam_length_penalty_scores(toy):
  params, state, length = toy
  beam = decode_toy(params, state, "beam", length, beam_size=3)  # default alpha 0.6
  lengths = np.array([len(emitted(row)) for row in np.asarray(beam.tokens)])
  np.testing.assert_allclose(beam.penalized_scores, beam.scores / ((5 + lengths) / 6) ** 0.6, rtol=1e-5)


def test_sample_is_greedy_at_temperature_0_or_top_k_1(toy):
  params, state, length = toy
  greedy = decode_toy(params, state, "greedy", length)
  cold = decode_toy(params, state, "sample", length, rng=jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(cold.tokens, greedy.tokens)
  np.testing.assert_allclose(cold.scores, greedy.scores, rtol=1e-6)
  top1 = decode_toy(params, state, "sample", length, rng=jax.random.key(0), temperature=1.5, top_k=1)
  np.testing.assert_array_equal(top1.tokens, greedy.tokens)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 2, 1.0), (0.8, 0, 0.6)])
def test_sampled_tokens_stay_inside_the_filtered_set(temperature, top_k, top_p):
  """Every token of 64 rows x 6 steps of the stateful toy is inside its prefix's top-k and top-p sets.

  Scores are the model's own log-probabilities, neither tempered nor renormalised after filtering; the same
  key draws the same tokens.
  """
  vocab, batch, length = 6, 64, 6
  params, state = toy_params(3, vocab, scale=1.0), toy_state(3, batch, vocab, length)
  result, again, other = [decode_toy(params, state, "sample", length, rng=jax.random.key(seed),
                                     temperature=temperature, top_k=top_k, top_p=top_p) for seed in (5, 5, 6)]
  np.testing.assert_array_equal(again.tokens, result.tokens)
  assert not np.array_equal(other.tokens, result.tokens)
  check_padding(result.tokens)
  bias = np.asarray(state["bias"])
  for row in range(batch):
    prefix = [START]
    for token in emitted(result.tokens[row]):
      logits = reference_log_probs(params, bias[row], prefix) / temperature
      more_likely = logits > logits[token]
      assert top_k == 0 or np.sum(more_likely) < top_k
      kept = logits >= np.sort(logits)[-top_k] if top_k else np.ones(vocab, bool)
      probs = np.where(kept, np.exp(logits - logits.max()), 0.0)
      assert np.sum(probs[more_likely]) / np.sum(probs) < top_p  # the tokens before it had not reached top_p
      prefix.append(token)
    np.testing.assert_allclose(result.scores[row], reference_score(params, bias[row], result.tokens[row]), rtol=1e-5)


def filtered_distribution(logits, temperature, top_k, top_p):
  """numpy reference: temper, keep the top k, then the smallest most-likely set of mass >= top_p."""
  z = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-z)
  p = np.zeros_like(z)
  p[order[:top_k or len(z)]] = np.exp(z[order[:top_k or len(z)]] - z.max())
  p /= p.sum()
  n = min(int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1, len(z))
  q = np.zeros_like(p)
  q[order[:n]] = p[order[:n]]
  return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 0.5), (2.0, 4, 0.9)])
def test_sample_frequencies_match_the_filtered_distribution(temperature, top_k, top_p):
  probs = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
  rows = 4000

  def model(token, step, state):  # the same known distribution for every row
    return jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (token.shape[0], len(probs))), state

  draw = jax.jit(functools.partial(decoding.sample, model, max_decode_len=1, temperature=temperature,
                                   top_k=top_k, top_p=top_p))  # jitted whole: eager dispatch of 4000 rows is slower
  result = draw({"rows": jnp.zeros(rows)}, rng=jax.random.key(7))
  frequencies = np.bincount(np.asarray(result.tokens[:, 0]), minlength=len(probs)) / rows
  expected = filtered_distribution(np.log(probs), temperature, top_k, top_p)
  assert np.all(frequencies[expected == 0] == 0)
  np.testing.assert_allclose(frequencies, expected, atol=0.03)  # ~4 standard deviations at 4000 rows


def test_everything_runs_under_jit(toy):
  """A jitted wrapper closing over the parameters (constants to XLA) matches runs with traced parameters."""
  params, state, length = toy
  model = functools.partial(toy_model, params)

  @decoding.jit
  def run(state, rng):
    return (decoding.greedy(model, state, max_decode_len=length),
            decoding.sample(model, state, max_decode_len=length, rng=rng, top_p=0.8),
            decoding.beam_search(model, state, max_decode_len=length, beam_size=3))

  rng = jax.random.key(0)
  greedy, sampled, beam = run(state, rng)
  np.testing.assert_array_equal(greedy.tokens, reference_greedy(params, state, length)[0])
  np.testing.assert_array_equal(sampled.tokens, decode_toy(params, state, "sample", length, rng=rng, top_p=0.8).tokens)
  np.testing.assert_array_equal(beam.tokens, decode_toy(params, state, "beam", length, beam_size=3).tokens)


def test_decoding_jit_keeps_dots_out_of_ynnpack_on_cpu():
  """decoding.jit's one change to jax.jit: on CPU, matmuls stay on XLA's own path (faster for a few rows)."""
  def step(x, w):
    return jax.nn.log_softmax(x @ w)

  x, w = jnp.ones((8, 64)), jnp.ones((64, 256)) / 64
  compiled = decoding.jit(step).lower(x, w).compile().as_text()
  assert "__ynn_fusion" not in compiled  # the backend config of a YNNPACK fusion
  np.testing.assert_allclose(decoding.jit(step)(x, w), jax.jit(step)(x, w), rtol=1e-6)


@pytest.mark.parametrize("method,opts,message", [
    ("nucleus", {}, "unknown decoding method 'nucleus'; expected one of 'greedy', 'beam', 'sample'"),
    ("greedy", {"beam_size": 2}, "decoding method 'greedy' has no option 'beam_size'; its options are eos_id"),
    ("sample", {}, "decoding method 'sample' needs option 'rng'"),
    ("beam", {"beam_size": 0}, "beam_size must be an integer >= 1; got 0"),
    ("beam", {"beam_size": 2.0}, "beam_size must be an integer >= 1; got 2.0"),
    ("beam", {"alpha": -1.0}, "alpha must be >= 0 (0 = no length penalty); got -1.0"),
    ("sample", {"rng": 0, "temperature": -0.5}, "temperature must be >= 0 (0 = greedy); got -0.5"),
    ("sample", {"rng": 0, "top_p": 0.0}, "top_p must be in (0, 1] (1 = no filtering); got 0.0"),
    ("sample", {"rng": 0, "top_p": 1.5}, "top_p must be in (0, 1] (1 = no filtering); got 1.5"),
    ("sample", {"rng": 0, "top_k": -1}, "top_k must be an integer >= 0; got -1"),
    ("greedy", {"eos_id": None}, "eos_id must be an integer >= 0; got None"),
    ("greedy", {"max_decode_len": 0}, "max_decode_len must be an integer >= 1 (answer tokens at most); got 0"),
    ("beam", {"max_decode_len": -2}, "max_decode_len must be an integer >= 1 (answer tokens at most); got -2"),
])
def test_bad_method_or_option_is_one_clear_line(method, opts, message):
  with pytest.raises(ValueError) as error:
    decoding.decode(lambda *a: None, {"x": jnp.zeros(2)}, method=method, **{"max_decode_len": 4, **opts})
  assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("max_decode_len,state,message", [
    (0, {"x": jnp.zeros(2)}, "max_decode_len must be an integer >= 1; got 0"),
    (4, {}, "every leaf leads with the batch axis; got leading sizes []"),
    (4, {"x": jnp.zeros(2), "y": jnp.zeros([3, 1])}, "got leading sizes [2, 3]"),
])
def test_bad_length_or_state_is_one_clear_line(max_decode_len, state, message):
  with pytest.raises(ValueError) as error:
    decoding.greedy(lambda *a: None, state, max_decode_len=max_decode_len)
  assert message in str(error.value)
