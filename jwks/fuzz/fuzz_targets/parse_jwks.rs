//! Any bytes as a JWKS document, and the policy parser: neither may panic.
#![no_main]

use jwks::{KeySet, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = KeySet::parse(data) {
        for skipped in set.skipped() {
            let _ = skipped.to_string();
        }
        let _ = set.kids().count();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = Policy::parse(text) {
            let _ = policy.route("GET", "/api/x");
        }
    }
});
