"""CKKS parameter selection against the 128-bit security table."""

from __future__ import annotations

import pytest

from dlsec.errors import ConfigError
from dlsec.he.params import MAX_BITS_128, CKKSParams, check_security, select_params


def test_table_is_the_homomorphic_encryption_standard() -> None:
    assert dict(MAX_BITS_128) == {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@pytest.mark.parametrize(
    ("n", "bits"),
    [
        (8192, (60, 40, 40, 40, 40, 60)),  # 280 > 218
        (4096, (40, 30, 30, 40)),  # 140 > 109
        (2048, (30, 25, 30)),  # 85 > 54
        (16384, (60,) * 8),  # 480 > 438
    ],
)
def test_below_128_bit_refused(n: int, bits: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="below 128-bit security"):
        check_security(n, bits)
    with pytest.raises(ConfigError, match="below 128-bit security"):
        CKKSParams(n, bits, min(bits[1:-1]))


def test_boundary_is_accepted_and_one_bit_more_refused() -> None:
    ok = CKKSParams(8192, (49, 40, 40, 40, 49), 40)
    assert ok.total_bits == 218 and ok.depth == 3 and ok.slots == 4096 and ok.int_bits == 9
    with pytest.raises(ConfigError, match="128-bit"):
        CKKSParams(8192, (50, 40, 40, 40, 49), 40)


def test_unknown_ring_and_bad_chains_refused() -> None:
    with pytest.raises(ConfigError, match="no 128-bit security entry"):
        check_security(6000, (30, 30))
    with pytest.raises(ConfigError, match="scale_bits"):
        CKKSParams(8192, (50, 40, 30, 50), 40)  # level primes must equal the scale
    with pytest.raises(ConfigError, match="special prime"):
        CKKSParams(8192, (50, 40, 40), 40)
    with pytest.raises(ConfigError, match="q0"):
        CKKSParams(8192, (40, 40, 40), 40)
    with pytest.raises(ConfigError):
        CKKSParams.from_dict({"poly_modulus_degree": 8192})


def test_select_params_smallest_secure_ring() -> None:
    p = select_params(3, int_bits=9)
    assert p.poly_modulus_degree == 8192 and p.depth == 3 and p.total_bits <= 218
    # largest scale that fits: q0 = s + 9, special = q0 + 10, three levels: 5 s + 28 <= 218
    assert p.scale_bits == 38 and p.coeff_mod_bit_sizes == (47, 38, 38, 38, 57)
    deep = select_params(7, int_bits=9)
    assert deep.poly_modulus_degree == 16384 and deep.total_bits <= 438
    assert select_params(7, int_bits=5, min_scale_bits=20).poly_modulus_degree == 8192
    assert select_params(1, min_slots=8192).poly_modulus_degree == 16384
    for depth in range(1, 12):
        q = select_params(depth)
        assert q.total_bits <= MAX_BITS_128[q.poly_modulus_degree]
        assert CKKSParams.from_dict(q.to_dict()) == q


def test_select_params_refuses_what_no_ring_holds() -> None:
    with pytest.raises(ConfigError, match="no 128-bit-secure"):
        select_params(40, scale_bits=30)
    with pytest.raises(ConfigError, match="no 128-bit-secure"):
        select_params(4, scale_bits=40, poly_modulus_degree=4096)
