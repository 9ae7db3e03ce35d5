//! The one piece of P-256 arithmetic the core needs without a crypto backend: is a point on the
//! curve? Public data only, so plain (variable-time) arithmetic is fine; the signature check itself
//! is the backend's job.

/// A 256-bit number as four 64-bit limbs, least significant first.
type U256 = [u64; 4];

/// p = 2^256 - 2^224 + 2^192 + 2^96 - 1
const P: U256 = [0xffff_ffff_ffff_ffff, 0x0000_0000_ffff_ffff, 0, 0xffff_ffff_0000_0001];
/// b of y^2 = x^3 - 3x + b
const B: U256 = [0x3bce_3c3e_27d2_604b, 0x651d_06b0_cc53_b0f6, 0xb3eb_bd55_7698_86bc, 0x5ac6_35d8_aa3a_93e7];

fn from_be_bytes(bytes: &[u8; 32]) -> U256 {
    let mut limbs = [0u64; 4];
    for (index, chunk) in bytes.rchunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        limbs[index] = u64::from_be_bytes(word);
    }
    limbs
}

fn less_than(a: &U256, b: &U256) -> bool {
    for index in (0..4).rev() {
        if a[index] != b[index] {
            return a[index] < b[index];
        }
    }
    false
}

/// a + b, with the carry out.
fn add(a: &U256, b: &U256) -> (U256, bool) {
    let mut sum = [0u64; 4];
    let mut carry = false;
    for index in 0..4 {
        let (partial, carry1) = a[index].overflowing_add(b[index]);
        let (partial, carry2) = partial.overflowing_add(u64::from(carry));
        sum[index] = partial;
        carry = carry1 || carry2;
    }
    (sum, carry)
}

/// a - b, with the borrow out.
fn sub(a: &U256, b: &U256) -> (U256, bool) {
    let mut difference = [0u64; 4];
    let mut borrow = false;
    for index in 0..4 {
        let (partial, borrow1) = a[index].overflowing_sub(b[index]);
        let (partial, borrow2) = partial.overflowing_sub(u64::from(borrow));
        difference[index] = partial;
        borrow = borrow1 || borrow2;
    }
    (difference, borrow)
}

/// (a + b) mod p, for a, b < p.
fn add_mod(a: &U256, b: &U256) -> U256 {
    let (sum, carry) = add(a, b);
    if carry || !less_than(&sum, &P) { sub(&sum, &P).0 } else { sum }
}

/// (a - b) mod p, for a, b < p.
fn sub_mod(a: &U256, b: &U256) -> U256 {
    let (difference, borrow) = sub(a, b);
    if borrow { add(&difference, &P).0 } else { difference }
}

/// (a * b) mod p, for a, b < p, by double-and-add over the bits of a.
fn mul_mod(a: &U256, b: &U256) -> U256 {
    let mut product = [0u64; 4];
    for bit in (0..256).rev() {
        product = add_mod(&product, &product);
        if (a[bit / 64] >> (bit % 64)) & 1 == 1 {
            product = add_mod(&product, b);
        }
    }
    product
}

/// True when (x, y), big-endian affine coordinates, is a point of P-256: both below p and
/// y^2 = x^3 - 3x + b (mod p). The point at infinity has no affine form, so it never passes.
pub(crate) fn is_on_curve(x: &[u8; 32], y: &[u8; 32]) -> bool {
    let (x, y) = (from_be_bytes(x), from_be_bytes(y));
    if !less_than(&x, &P) || !less_than(&y, &P) {
        return false;
    }
    let left = mul_mod(&y, &y);
    let x_cubed = mul_mod(&mul_mod(&x, &x), &x);
    let three_x = add_mod(&add_mod(&x, &x), &x);
    let right = add_mod(&sub_mod(&x_cubed, &three_x), &B);
    left == right
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    // The generator of P-256 (SEC 2).
    const GX: [u8; 32] = hex32("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
    const GY: [u8; 32] = hex32("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");

    const fn hex32(text: &str) -> [u8; 32] {
        let bytes = text.as_bytes();
        let mut out = [0u8; 32];
        let mut index = 0;
        while index < 32 {
            out[index] = (nibble(bytes[2 * index]) << 4) | nibble(bytes[2 * index + 1]);
            index += 1;
        }
        out
    }

    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }

    #[test]
    fn the_generator_is_on_the_curve() {
        assert!(is_on_curve(&GX, &GY));
    }

    #[test]
    fn a_changed_coordinate_is_not() {
        let mut y = GY;
        y[31] ^= 1;
        assert!(!is_on_curve(&GX, &y));
        assert!(!is_on_curve(&[0; 32], &[0; 32]));
    }

    #[test]
    fn coordinates_at_or_above_p_are_refused() {
        // x + p does not fit in 256 bits for the generator, but p itself and all-ones do not pass.
        let p = hex32("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        assert!(!is_on_curve(&p, &GY));
        assert!(!is_on_curve(&GX, &[0xff; 32]));
    }

    #[test]
    fn modular_arithmetic_wraps_correctly() {
        let one = [1, 0, 0, 0];
        let p_minus_one = sub(&P, &one).0;
        assert_eq!(add_mod(&p_minus_one, &one), [0; 4]);
        assert_eq!(sub_mod(&[0; 4], &one), p_minus_one);
        // (p-1)^2 = 1 mod p
        assert_eq!(mul_mod(&p_minus_one, &p_minus_one), one);
    }
}
