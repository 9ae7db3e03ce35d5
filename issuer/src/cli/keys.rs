//! `issuer keys list`: the key table.

use super::utc;
use issuer::domain::keys::KeyInfo;

pub(super) fn print_table(keys: &[KeyInfo]) {
    let time = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), utc);
    println!(
        "{:<43}  {:<8}  {:<20}  {:<20}  {:<20}  {:<20}",
        "KID", "STATE", "PUBLISHED", "ACTIVE", "RETIRING", "GONE"
    );
    for key in keys {
        println!(
            "{:<43}  {:<8}  {:<20}  {:<20}  {:<20}  {:<20}",
            key.kid,
            key.state.as_str(),
            utc(key.published_at),
            time(key.activated_at.or(key.activate_after)),
            time(key.retiring_at),
            time(key.retired_at.or(key.revoked_at)),
        );
    }
}
