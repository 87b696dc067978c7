"""Every random stream of a run, derived from the config's ``seed`` and its purpose alone.

A stream never depends on what ran before it in the process (dataset
preparation, imports, a tool that drew from ``random`` or ``numpy.random``):
each consumer derives its own seed from ``seed`` when it needs it.

The derivation, stable across versions (changing it changes every run's
numbers, and the epoch order a resumed run of an older version continues with)::

    derive_seed(seed, purpose, *index)
        = SeedSequence(entropy=[seed, *index], spawn_key=PURPOSES[purpose])
              .generate_state(1, uint32)[0] % (2**31 - 1)

with NumPy's ``numpy.random.SeedSequence``. The result fits every consumer:
``random.seed``, ``numpy.random.seed`` (< 2**32), TensorFlow and tf.data op
seeds (which TensorFlow reduces modulo 2**31 - 1), Keras seed generators.

Who draws with which purpose:

- ``"init"``: weight initialisation. ``trainer.build.build_model_for`` seeds
  Python's, NumPy's, TensorFlow's and Keras' global generators with
  ``derive_seed(seed, "init")`` immediately before it builds the model.
- ``"dropout"``: the model's seed generators (its dropout layers), the i-th in
  the model's order from ``derive_seed(seed, "dropout", i)``; their states
  then travel in every checkpoint (``checkpoints.state``).
- ``"shuffle"``: the order of epoch ``e`` from ``derive_seed(seed, "shuffle",
  e)`` (``trainer.data.pipeline``). tf.data pairs each op seed with TensorFlow's global
  seed, which the pipeline sets to ``tensorflow_global_seed(seed)`` when it is
  built. Its spawn key is empty: the orders of earlier versions, whose epoch
  seed was ``SeedSequence([seed, epoch])``.
- ``"augment"``: data augmentation (reserved).

A new stream gets a new purpose here (a new spawn key), never a reused one.
This module imports neither TensorFlow nor Keras; :func:`derive_seed_tensor`
imports TensorFlow when it is called.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

# purpose -> SeedSequence spawn key. Never change or reuse one: add a purpose instead.
PURPOSES: dict[str, tuple[int, ...]] = {
    "shuffle": (),
    "init": (1,),
    "dropout": (2,),
    "augment": (3,),
}
MAX_SEED = 2**32 - 1  # the config's seed: NumPy seeds with at most 32 bits
_MODULUS = 2**31 - 1  # TensorFlow reduces op seeds modulo this


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """The seed of stream ``purpose`` (``index``: which one of them), in [0, 2**31 - 1).

    >>> derive_seed(0, "shuffle", 0)
    821328063
    >>> derive_seed(0, "init") != derive_seed(1, "init")
    True
    """
    import numpy as np  # here: trainer.config (and --help) need only MAX_SEED

    spawn_key = _spawn_key(purpose)
    if any(not isinstance(v, int | np.integer) or v < 0 for v in (seed, *index)):
        raise ValueError(f"seed and indexes must be integers >= 0, got {(seed, *index)}")
    sequence = np.random.SeedSequence(entropy=[int(seed), *map(int, index)], spawn_key=spawn_key)
    return int(sequence.generate_state(1, dtype=np.uint32)[0]) % _MODULUS


def tensorflow_global_seed(seed: int) -> int:
    """TensorFlow's global seed (``tf.random.set_seed``) for a run of ``seed``: ``seed``
    reduced as TensorFlow reduces it (modulo 2**31 - 1, the same op seeds), except that
    the seeds it reduces to 0 (0, 2**31 - 1, 2**32 - 2) get 1.

    A global seed of 0 cannot be paired with a tensor op seed: TensorFlow's Python
    layer then evaluates ``(0, op_seed) == (0, 0)``, a tensor as a bool, which fails
    where a tf.data function traces a shuffle seeded by a tensor (the later epochs of
    ``Data.train_epochs``). The op seeds still differ by ``seed``, so seed 0 and seed 1
    share this half of the pair only.

    >>> [tensorflow_global_seed(s) for s in (0, 1, 42, 2**31 - 1, 2**31)]
    [1, 1, 42, 1, 1]
    """
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return seed % _MODULUS or 1


def derive_seed_tensor(seed: int, purpose: str, index: Any) -> Any:
    """:func:`derive_seed` ``(seed, purpose, index)`` computed by TensorFlow ops, for an
    ``index`` tensor (int64, >= 0): an int64 tensor of the same shape.

    For tf.data pipelines that draw a seed per element (an epoch) without
    listing them in Python first. NumPy's SeedSequence cannot run inside a
    graph, so its hash is written out once more in :func:`_first_state_word`
    (uint32 arithmetic on uint64 tensors); tests hold it equal to NumPy's.
    """
    import tensorflow as tf

    spawn_key = _spawn_key(purpose)
    _check_seed(seed)
    index = tf.cast(index, tf.uint64)
    low = tf.bitwise.bitwise_and(index, tf.constant(_MASK32, tf.uint64))
    high = tf.bitwise.right_shift(index, tf.constant(32, tf.uint64))

    def shift(value: Any, bits: int) -> Any:  # Python ints among the words become tensors here
        value = tf.convert_to_tensor(value, tf.uint64)
        return tf.bitwise.right_shift(value, tf.constant(bits, tf.uint64))

    word = _first_state_word(_entropy_words(seed, low, high, spawn_key), shift)
    return tf.math.floormod(tf.cast(word, tf.int64), _MODULUS)


def derive_seeds(seed: int, purpose: str, indexes: Sequence[int]) -> list[int]:
    """``[derive_seed(seed, purpose, i) for i in indexes]`` for many ``indexes`` (each an
    integer in [0, 2**64)) at once: the hash of :func:`_first_state_word` on NumPy uint64
    arrays, a few microseconds per seed where a SeedSequence each takes 20 us or more.

    >>> derive_seeds(0, "shuffle", [0, 1, 2]) == [derive_seed(0, "shuffle", e) for e in range(3)]
    True
    """
    import numpy as np

    spawn_key = _spawn_key(purpose)
    _check_seed(seed)
    indexes = list(indexes)  # a generator would be used up by the check
    if any(not isinstance(i, int | np.integer) or not 0 <= i < 2**64 for i in indexes):
        raise ValueError(f"indexes must be integers in [0, 2**64), got {indexes[:8]}")
    index = np.asarray([int(i) for i in indexes], dtype=np.uint64)
    low, high = index & np.uint64(_MASK32), index >> np.uint64(32)

    def shift(value: Any, bits: int) -> Any:
        return np.asarray(value, dtype=np.uint64) >> np.uint64(bits)

    with np.errstate(over="ignore"):  # the arithmetic is modulo 2**32 by masking
        words = [np.asarray(w, dtype=np.uint64) for w in _entropy_words(seed, low, high, spawn_key)]
        word = _first_state_word(words, shift)
    return [int(v) % _MODULUS for v in np.broadcast_to(word, index.shape)]


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")


def _entropy_words(seed: int, low: Any, high: Any, spawn_key: tuple[int, ...]) -> list[Any]:
    """SeedSequence's words of entropy ``[seed, index]`` (``index`` as its ``low`` and
    ``high`` 32-bit words; a zero high word is the same as none: the pool is padded with
    zero words), then the spawn key, after padding to the pool's size."""
    words = [int(seed), low, high]
    if spawn_key:
        words = [*words, *([0] * (_POOL_SIZE - len(words))), *spawn_key]
    return words


def _spawn_key(purpose: str) -> tuple[int, ...]:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    return PURPOSES[purpose]


# NumPy's SeedSequence (numpy/random/bit_generator.pyx, after Melissa O'Neill's
# seed_seq): its constants and the first output word of generate_state.
_MASK32 = 0xFFFFFFFF
_POOL_SIZE = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16


def _first_state_word(
    words: Sequence[Any], shift: Callable[[Any, int], Any] = operator.rshift
) -> Any:
    """``SeedSequence`` with the assembled entropy ``words`` (uint32 values): the first word
    of ``generate_state(1)``. ``words`` are Python ints, or uint64 tensors with ``shift``
    their right shift: the arithmetic is modulo 2**32 by masking, so it is the same for both.
    """
    hash_const = _INIT_A

    def hashmix(value: Any) -> Any:
        nonlocal hash_const
        value = value ^ hash_const
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = (value * hash_const) & _MASK32
        return value ^ shift(value, _XSHIFT)

    def mix(x: Any, y: Any) -> Any:
        result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
        return result ^ shift(result, _XSHIFT)

    pool = [hashmix(words[i] if i < len(words) else 0) for i in range(_POOL_SIZE)]
    for source in range(_POOL_SIZE):
        for target in range(_POOL_SIZE):
            if source != target:
                pool[target] = mix(pool[target], hashmix(pool[source]))
    for source in range(_POOL_SIZE, len(words)):
        for target in range(_POOL_SIZE):
            pool[target] = mix(pool[target], hashmix(words[source]))
    value = pool[0] ^ _INIT_B
    value = (value * ((_INIT_B * _MULT_B) & _MASK32)) & _MASK32
    return value ^ shift(value, _XSHIFT)
