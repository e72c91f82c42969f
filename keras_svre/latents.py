"""Latent vectors drawn statelessly from (seed, version, example index).

The GAN's finite sum pairs training example `k` with a latent vector `z_k`.
Instead of keeping a bank of them (a per-example variable on every replica
and in every checkpoint), `z_k` is a pure function of `(seed, version, k)`:
a counter-based generator (Threefry-2x32 with 20 rounds, Salmon et al.,
2011) turns the counter `(k, pair)` under the key `(seed, version)` into two
32-bit words, and the Box-Muller transform turns them into two standard
normal numbers. Everything is written in `keras.ops` on `uint32`, so the
integer words are identical on every backend; the floating-point transform
(log, sqrt, cos, sin) agrees to about one unit in the last place.

Changing `version` draws a new, independent set of latents (the GAN advances
it at each snapshot for SVRE, or each epoch for other methods).

References:
    - [Salmon et al., 2011](https://doi.org/10.1145/2063384.2063405):
      Parallel random numbers: as easy as 1, 2, 3.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

# Threefry-2x32's rotation distances and key-schedule parity constant.
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_ROUNDS = 20
# The second counter word of the WGAN-GP interpolation draws: beyond any
# latent pair index, so the two streams never share a counter.
_INTERPOLATION_WORD = 0x80000000


def _u32(value):
    return ops.convert_to_tensor(np.uint32(value & 0xFFFFFFFF), dtype="uint32")


def _rotate_left(x, distance):
    return ops.bitwise_or(
        ops.left_shift(x, _u32(distance)), ops.right_shift(x, _u32(32 - distance))
    )


def threefry2x32(key, counter):
    """Threefry-2x32-20 of `counter` under `key`.

    Args:
        key: A pair of `uint32` tensors (broadcastable with the counter).
        counter: A pair of `uint32` tensors of the same shape.

    Returns:
        A pair of `uint32` tensors: the two output words.
    """
    k0, k1 = key
    schedule = (k0, k1, ops.bitwise_xor(ops.bitwise_xor(k0, k1), _u32(_PARITY)))
    x0 = ops.add(counter[0], schedule[0])
    x1 = ops.add(counter[1], schedule[1])
    for round_index in range(_ROUNDS):
        x0 = ops.add(x0, x1)
        x1 = ops.bitwise_xor(_rotate_left(x1, _ROTATIONS[round_index % 8]), x0)
        if round_index % 4 == 3:
            injection = round_index // 4 + 1
            x0 = ops.add(x0, schedule[injection % 3])
            x1 = ops.add(ops.add(x1, schedule[(injection + 1) % 3]), _u32(injection))
    return x0, x1


def _key(seed, version):
    """The generator's key: the seed's low 32 bits and the version."""
    seed_word = _u32(int(seed))
    version = ops.cast(ops.convert_to_tensor(version), "int32")
    return seed_word, ops.cast(version, "uint32")


def _unit_interval(word, dtype="float32"):
    """A `uint32` word as a float in (0, 1): 23 bits, centred in their cell.

    Exact in float32 and wider, so every backend and dtype gets the same number.
    """
    bits = ops.cast(ops.right_shift(word, _u32(9)), dtype)
    return (bits + 0.5) * (2.0**-23)


def _index_words(index):
    return ops.cast(ops.cast(index, "int32"), "uint32")


def normal(seed: int, version, index, dim: int, dtype="float32"):
    """Standard normal latents `[len(index), dim]` for example indices.

    Args:
        seed: The GAN's seed (its low 32 bits are used).
        version: An integer scalar (a Python int or a tensor): the set of
            latents. Each version is an independent draw.
        index: Integer example indices, shape `[batch]`, each in
            `[0, 2**31)`.
        dim: The latent size.
        dtype: `"float32"` (default) or `"float64"`: the precision of the
            transform to normal numbers (the uniform numbers it starts
            from are the same).

    Returns:
        A tensor of shape `[batch, dim]`.
    """
    pairs = (int(dim) + 1) // 2
    key = _key(seed, version)
    # Counters (index, pair) for every entry of `[batch, pairs]`, by
    # broadcasting (the batch size may be unknown until run time).
    rows = ops.expand_dims(_index_words(index), 1)
    columns = ops.expand_dims(ops.cast(ops.arange(pairs, dtype="int32"), "uint32"), 0)
    counter = (
        ops.add(rows, ops.zeros_like(columns)),
        ops.add(columns, ops.zeros_like(rows)),
    )
    first, second = threefry2x32(key, counter)
    radius = ops.sqrt(-2.0 * ops.log(_unit_interval(first, dtype)))
    angle = (2.0 * math.pi) * _unit_interval(second, dtype)
    # [batch, pairs, 2] -> [batch, 2 * pairs]: the cosine and sine halves of
    # each pair side by side.
    both = ops.stack([radius * ops.cos(angle), radius * ops.sin(angle)], axis=-1)
    both = ops.reshape(both, (-1, 2 * pairs))
    return both[:, :dim]


def uniform(seed: int, version, index, dtype="float32"):
    """One uniform number in (0, 1) per example index (WGAN-GP's interpolation).

    A stream of its own: its counters never meet those of `normal`.

    Args:
        seed: The GAN's seed.
        version: An integer scalar: the set of draws.
        index: Integer example indices, shape `[batch]`.
        dtype: The float dtype of the result.

    Returns:
        A tensor of shape `[batch]`.
    """
    words = _index_words(index)
    counter = (words, ops.add(ops.zeros_like(words), _u32(_INTERPOLATION_WORD)))
    first, _ = threefry2x32(_key(seed, version), counter)
    return _unit_interval(first, dtype)
