"""CKKS parameters chosen from the depth a plan needs, checked against the 128-bit security table.

A CKKS parameter set is a ring dimension ``N`` (the polynomial modulus degree; ``N / 2`` slots) and a chain of
primes ``q0, q1, ..., qL, P``: ``q0`` holds the decrypted value (scale bits plus the bits of the largest value),
``q1..qL`` are dropped one per rescale (one per multiplicative level, each about the scale), and ``P`` is the
special prime used only for key switching (relinearization and rotations). The hardness of the RLWE problem
depends on ``N`` and on the total bit count of the chain, *including* ``P``: the HomomorphicEncryption.org
standard (Albrecht et al., 2018, Table 1, uniform ternary secret, classical attacks) bounds it, for 128-bit
security, by :data:`MAX_BITS_128`. Every set this package uses is checked against that table;
anything above it raises :class:`~dlsec.errors.ConfigError` (SEAL would refuse it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dlsec.errors import ConfigError

__all__ = [
    "MAX_BITS_128",
    "MAX_PRIME_BITS",
    "CKKSParams",
    "check_security",
    "select_params",
]

MAX_BITS_128: Mapping[int, int] = MappingProxyType(
    {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
)
"""Largest total coefficient-modulus bit count per ring dimension for 128-bit classical security
(HomomorphicEncryption.org security standard, ternary secret; the table SEAL enforces)."""

MAX_PRIME_BITS = 60
"""SEAL's largest prime (one machine word less the bits its arithmetic reserves)."""

MIN_PRIME_BITS = 20
"""Smallest prime accepted: below that too few NTT-friendly primes exist and CKKS precision is meaningless."""


def check_security(poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int]) -> int:
    """Raise :class:`ConfigError` unless the set is at most the 128-bit bound; return the total bit count."""
    n = int(poly_modulus_degree)
    if n not in MAX_BITS_128:
        raise ConfigError(
            f"poly_modulus_degree {n} has no 128-bit security entry; use one of {', '.join(map(str, MAX_BITS_128))}"
        )
    sizes = [int(b) for b in coeff_mod_bit_sizes]
    total = sum(sizes)
    if total > MAX_BITS_128[n]:
        raise ConfigError(
            f"CKKS parameters below 128-bit security: N={n} with a {total}-bit coefficient modulus "
            f"({'+'.join(map(str, sizes))}); the HomomorphicEncryption.org table allows at most {MAX_BITS_128[n]} bits"
        )
    return total


@dataclass(frozen=True)
class CKKSParams:
    """A checked CKKS parameter set.

    ``coeff_mod_bit_sizes`` is ``(q0, q1, ..., qL, P)``: ``q1..qL`` must equal ``scale_bits`` (one prime per
    level), ``q0`` must exceed it (its excess is the integer headroom of decrypted values) and ``P`` is the
    special prime. Construction raises :class:`ConfigError` for anything outside the 128-bit table.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        sizes = tuple(int(b) for b in self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        check_security(self.poly_modulus_degree, sizes)
        if len(sizes) < 3:
            raise ConfigError(f"a CKKS chain needs q0, at least one level and the special prime, got {sizes}")
        if any(b < MIN_PRIME_BITS or b > MAX_PRIME_BITS for b in sizes):
            raise ConfigError(f"each prime must have {MIN_PRIME_BITS} to {MAX_PRIME_BITS} bits, got {sizes}")
        if not MIN_PRIME_BITS <= self.scale_bits <= MAX_PRIME_BITS:
            raise ConfigError(f"scale_bits must be {MIN_PRIME_BITS} to {MAX_PRIME_BITS}, got {self.scale_bits}")
        if any(b != self.scale_bits for b in sizes[1:-1]):
            raise ConfigError(f"the level primes must all have scale_bits={self.scale_bits} bits, got {sizes[1:-1]}")
        if sizes[0] <= self.scale_bits:
            raise ConfigError(f"q0 ({sizes[0]} bits) must exceed the scale ({self.scale_bits} bits)")
        if sizes[-1] < max(sizes[:-1]):
            raise ConfigError(f"the special prime ({sizes[-1]} bits) must be at least the largest other prime")

    @property
    def slots(self) -> int:
        """Number of complex slots, ``N / 2``."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Multiplicative levels available (rescales before reaching q0)."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        """Total coefficient-modulus bits, special prime included (what the security table bounds)."""
        return sum(self.coeff_mod_bit_sizes)

    @property
    def int_bits(self) -> int:
        """Bits of headroom for the magnitude of values at the last level (``q0 - scale``)."""
        return self.coeff_mod_bit_sizes[0] - self.scale_bits

    @property
    def scale(self) -> float:
        """The CKKS scale, ``2 ** scale_bits``."""
        return float(2**self.scale_bits)

    def key_switch_key_bytes(self) -> int:
        """Uncompressed size of one key-switching key (a relinearization key or one Galois key).

        One key holds, for each of the ``L + 1`` data primes, two polynomials over all ``L + 2`` primes.
        SEAL's seeded serialization stores one of the two polynomials as a seed: about half of this.
        """
        data = len(self.coeff_mod_bit_sizes) - 1
        return data * 2 * self.poly_modulus_degree * (data + 1) * 8

    def galois_key_bytes(self) -> int:
        """Estimated size of one key-switching key as serialized (seeded, zstd): half of
        :meth:`key_switch_key_bytes`, times the share of each 64-bit word the primes fill (plus compression slack)."""
        return int(self.key_switch_key_bytes() // 2 * self.wire_factor)

    @property
    def wire_factor(self) -> float:
        """Share of a 64-bit word SEAL's compressed serialization spends per residue (estimate)."""
        mean_bits = sum(self.coeff_mod_bit_sizes) / len(self.coeff_mod_bit_sizes)
        return min(1.0, (mean_bits + 8) / 64)

    def ciphertext_bytes(self, level: int = 0) -> int:
        """Uncompressed size of a fresh ciphertext ``level`` rescales down (two polynomials)."""
        primes = len(self.coeff_mod_bit_sizes) - 1 - level
        return 2 * self.poly_modulus_degree * primes * 8

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CKKSParams:
        """Rebuild (and re-check) from :meth:`to_dict`'s output."""
        try:
            return cls(int(d["poly_modulus_degree"]), tuple(int(b) for b in d["coeff_mod_bit_sizes"]), int(d["scale_bits"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed CKKS parameters: {exc}") from exc


def select_params(
    depth: int,
    *,
    int_bits: int = 10,
    scale_bits: int | None = None,
    min_slots: int = 1,
    poly_modulus_degree: int | None = None,
    max_scale_bits: int = 40,
    min_scale_bits: int = 24,
    special_extra_bits: int = 10,
) -> CKKSParams:
    """The smallest ring that holds ``depth`` levels at 128-bit security, and the largest scale that fits.

    ``int_bits`` is the headroom above the scale for the largest value (``q0 = scale + int_bits``). The special
    prime gets ``special_extra_bits`` more than ``q0`` (at most 60): key-switching noise (relinearization,
    rotations) is about ``N L sigma q_max / P`` before the scale divides it, so a special prime about
    ``sqrt(N) L`` times the largest other prime brings it down to the rescaling noise. With ``scale_bits`` fixed
    only the ring is chosen; otherwise the scale is the largest in ``[min_scale_bits, max_scale_bits]`` that fits
    the smallest ring. ``min_slots`` forces a ring with at least that many slots; ``poly_modulus_degree`` the ring.
    """
    if depth < 1:
        raise ConfigError(f"depth must be at least 1, got {depth}")
    if int_bits < 1:
        raise ConfigError(f"int_bits must be positive, got {int_bits}")
    rings = [poly_modulus_degree] if poly_modulus_degree is not None else sorted(MAX_BITS_128)
    for n in rings:
        if n not in MAX_BITS_128:
            check_security(n, [])
        if n // 2 < min_slots:
            continue
        budget = MAX_BITS_128[n]
        scales = [scale_bits] if scale_bits is not None else list(range(max_scale_bits, min_scale_bits - 1, -1))
        for s in scales:
            q0 = s + int_bits
            if q0 > MAX_PRIME_BITS:
                continue
            sizes = (q0, *([s] * depth), min(MAX_PRIME_BITS, q0 + max(0, special_extra_bits)))
            if sum(sizes) <= budget:
                return CKKSParams(n, sizes, s)
    scale_txt = f"{scale_bits}-bit scale" if scale_bits is not None else f"a scale of at least {min_scale_bits} bits"
    raise ConfigError(
        f"no 128-bit-secure CKKS parameters hold depth {depth} with {scale_txt}, {int_bits} integer bits"
        f" and {min_slots} slots; reduce the depth (fewer activations) or the precision"
    )
