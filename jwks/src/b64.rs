//! Strict base64url (RFC 4648 §5) without padding, as JWS compact serialization requires.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// No padding on either side, and non-zero trailing bits refused, so every value has exactly one
/// encoding (a token cannot be altered without changing its bytes).
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Decodes strict base64url; `None` for anything else (padding, `+`, `/`, white space,
/// a non-canonical last character, an impossible length).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    STRICT.decode(text).ok()
}

/// Decodes into a fixed-size array; `None` if the length differs.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Check the encoded length first so that a huge value is never decoded.
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    decode(text)?.try_into().ok()
}

/// Encodes as base64url without padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn refuses_everything_but_canonical_unpadded_base64url() {
        assert_eq!(decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode("Zm8").as_deref(), Some(&b"fo"[..]));
        assert!(decode("Zm8=").is_none(), "padding");
        assert!(decode("Zm9").is_none(), "non-canonical last character");
        assert!(decode("Zm 9v").is_none(), "white space");
        assert!(decode("Zm9v\n").is_none(), "new line");
        assert!(decode("+/+/").is_none(), "standard alphabet");
        assert!(decode("Z").is_none(), "impossible length");
        assert_eq!(decode("-_-_").as_deref(), Some(&[0xfb, 0xff, 0xbf][..]));
    }

    #[test]
    fn fixed_size_decoding_checks_the_length() {
        assert_eq!(decode_array::<3>("Zm9v"), Some(*b"foo"));
        assert_eq!(decode_array::<2>("Zm9v"), None);
        assert_eq!(decode_array::<4>("Zm9v"), None);
    }
}
