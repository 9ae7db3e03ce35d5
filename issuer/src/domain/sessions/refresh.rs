//! The refresh decision: what a presented refresh token is, from its row alone. Pure: the
//! rotation in [`Sessions::rotate`](super::Sessions::rotate) reads the row, asks here, and writes.

use crate::store::from_db_time;
use crate::store::sessions::RefreshTokenRow;
use std::time::Duration;

/// What to do with a presented refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Spendable: spend it and store its successor.
    Rotate,
    /// Spent before, outside the grace window: a reuse, which revokes the whole family.
    Reused,
    /// Refused, nothing changes.
    Refuse(Refusal),
}

/// Why a refresh token is refused without revoking anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its family was revoked (logout, reuse, a disabled user, a removed client).
    RevokedFamily,
    /// It, or its family, is past its lifetime.
    Expired,
    /// It was issued to another client.
    AnotherClient,
    /// Its user is disabled (a deleted user's tokens are gone with it).
    DisabledUser,
}

impl Refusal {
    /// The reason, for the log and the domain error.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::RevokedFamily => "revoked family",
            Self::Expired => "expired refresh token",
            Self::AnotherClient => "refresh token of another client",
            Self::DisabledUser => "disabled or deleted user",
        }
    }
}

/// The earliest spend time that still counts as the same use: `None` without a grace window (the
/// default), so that any earlier use makes this one a reuse, whatever the clocks of concurrent
/// requests say.
pub(crate) fn grace_floor(now: u64, grace: Duration) -> Option<u64> {
    (!grace.is_zero()).then(|| now.saturating_sub(grace.as_secs()))
}

/// The decision for `token`, presented by `client_id` at `now`. A reuse is detected first, even
/// for a revoked or expired family or another client's token (revoking again changes nothing).
pub(crate) fn decide(token: &RefreshTokenRow, client_id: &str, now: u64, grace_floor: Option<u64>) -> Decision {
    let reused = token.spent_at.is_some_and(|spent| grace_floor.is_none_or(|floor| from_db_time(spent) <= floor));
    if reused {
        return Decision::Reused;
    }
    if token.family_revoked_at.is_some() {
        return Decision::Refuse(Refusal::RevokedFamily);
    }
    if from_db_time(token.expires_at) <= now || from_db_time(token.family_expires_at) <= now {
        return Decision::Refuse(Refusal::Expired);
    }
    if token.client_id != client_id {
        return Decision::Refuse(Refusal::AnotherClient);
    }
    Decision::Rotate
}

/// Why a rotation spent nothing, from the token's row as it is after the attempt: `None` for a
/// reuse (a concurrent use that won has spent it, too), else the refusal. A token the row says is
/// spendable was refused for the one condition of the spend that the row does not show: its user
/// is disabled.
pub(crate) fn unspent(token: &RefreshTokenRow, client_id: &str, now: u64, grace_floor: Option<u64>) -> Option<Refusal> {
    match decide(token, client_id, now, grace_floor) {
        Decision::Reused => None,
        Decision::Refuse(refusal) => Some(refusal),
        Decision::Rotate => Some(Refusal::DisabledUser),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn token() -> RefreshTokenRow {
        RefreshTokenRow {
            family_id: "f".to_owned(),
            user_id: "u".to_owned(),
            client_id: "web".to_owned(),
            issued_at: 999_000,
            expires_at: 1_100_000,
            spent_at: None,
            family_expires_at: 1_200_000,
            family_revoked_at: None,
        }
    }

    #[test]
    fn every_case_of_the_decision() {
        let grace = grace_floor(NOW, Duration::from_secs(10));
        assert_eq!(grace, Some(NOW - 10));
        assert_eq!(grace_floor(NOW, Duration::ZERO), None);
        let with = |change: fn(&mut RefreshTokenRow)| {
            let mut token = token();
            change(&mut token);
            token
        };
        let cases: Vec<(&str, RefreshTokenRow, &str, Option<u64>, Decision)> = vec![
            ("fresh", token(), "web", None, Decision::Rotate),
            ("spent, no grace", with(|t| t.spent_at = Some(999_999)), "web", None, Decision::Reused),
            ("spent this very second, no grace", with(|t| t.spent_at = Some(1_000_000)), "web", None, Decision::Reused),
            ("spent within the grace", with(|t| t.spent_at = Some(999_995)), "web", grace, Decision::Rotate),
            ("spent at the grace floor", with(|t| t.spent_at = Some(999_990)), "web", grace, Decision::Reused),
            ("spent before the grace", with(|t| t.spent_at = Some(999_000)), "web", grace, Decision::Reused),
            (
                "reuse wins over a revoked family",
                with(|t| {
                    t.spent_at = Some(999_000);
                    t.family_revoked_at = Some(999_500);
                }),
                "web",
                None,
                Decision::Reused,
            ),
            ("reuse by another client", with(|t| t.spent_at = Some(999_000)), "other", None, Decision::Reused),
            (
                "revoked family",
                with(|t| t.family_revoked_at = Some(999_500)),
                "web",
                None,
                Decision::Refuse(Refusal::RevokedFamily),
            ),
            ("expired token", with(|t| t.expires_at = 1_000_000), "web", None, Decision::Refuse(Refusal::Expired)),
            (
                "expired family",
                with(|t| t.family_expires_at = 999_999),
                "web",
                None,
                Decision::Refuse(Refusal::Expired),
            ),
            ("another client's", token(), "other", None, Decision::Refuse(Refusal::AnotherClient)),
        ];
        for (name, token, client, floor, expected) in cases {
            assert_eq!(decide(&token, client, NOW, floor), expected, "{name}");
        }
    }

    #[test]
    fn an_unspent_rotation_is_explained_by_the_row() {
        let spent = RefreshTokenRow { spent_at: Some(999_999), ..token() };
        assert_eq!(unspent(&spent, "web", NOW, None), None, "another use won: a reuse");
        assert_eq!(unspent(&token(), "web", NOW, None), Some(Refusal::DisabledUser));
        let revoked = RefreshTokenRow { family_revoked_at: Some(999_999), ..token() };
        assert_eq!(unspent(&revoked, "web", NOW, None), Some(Refusal::RevokedFamily));
        assert_eq!(unspent(&token(), "other", NOW, None), Some(Refusal::AnotherClient));
    }
}
