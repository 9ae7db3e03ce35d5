//! The login limits, decided from the recent attempts alone (pure): [`Sessions::begin_login`]
//! records an attempt, reads what came before it, and asks here.
//!
//! Nothing anyone else does locks an account. Failed logins count per account *and* client
//! address (an IPv4 address or an IPv6 /64): past `max_failures` that address is refused for
//! that account, and every other address still gets in at once. An address failing on many
//! accounts is refused past `max_address_failures`, for every account. An account failing from
//! many addresses is slowed down, never refused: each login to it waits (before its password is
//! checked) a delay that doubles with each failure from other addresses beyond one address's
//! worth (`max_failures`), up to `max_delay`.
//!
//! [`Sessions::begin_login`]: super::Sessions::begin_login

use std::time::Duration;

/// How password logins are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins to one account from one address within `window` after which that address is
    /// refused for that account.
    pub max_failures: u32,
    /// Failed logins from one address, to any accounts, within `window` after which that address
    /// is refused.
    pub max_address_failures: u32,
    /// Open registrations from one address within `window` after which that address is refused.
    pub max_registrations: u32,
    /// The window failures (and registrations) are counted in.
    pub window: Duration,
    /// The longest a login to an account failing from many addresses is slowed down.
    pub max_delay: Duration,
}

/// The first delay of a slowed-down login; each further failure from elsewhere doubles it.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);

/// The attempts in the window that a new one is judged by, itself included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recent {
    /// The times of the attempts on this account from this address, newest first (the first
    /// `max_failures + 1` are enough).
    pub(crate) pair: Vec<u64>,
    /// The times of the attempts from this address on any account, newest first (the first
    /// `max_address_failures + 1` are enough).
    pub(crate) address: Vec<u64>,
    /// How many attempts on this account came from other addresses (up to
    /// [`LoginLimits::elsewhere_cap`]).
    pub(crate) elsewhere: u64,
}

/// Which limit refused a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Too many failures on this account from this address.
    AccountAddress,
    /// Too many failures from this address on any accounts.
    Address,
}

impl Limit {
    /// The limit's name, as the metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            Self::AccountAddress => "login_account_address",
            Self::Address => "login_address",
        }
    }
}

/// What happens to a login attempt before its password is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password, after waiting `delay`.
    Allow {
        /// How long to wait first (zero unless the account fails from many addresses).
        delay: Duration,
    },
    /// Refused without a check: try again after `retry_after` seconds.
    Refuse {
        /// The limit reached.
        limit: Limit,
        /// Seconds until the attempt that is one too many leaves the window.
        retry_after: u64,
    },
}

impl LoginLimits {
    /// The most attempts from elsewhere worth counting: beyond that the delay is `max_delay` anyway.
    pub(crate) fn elsewhere_cap(&self) -> u64 {
        u64::from(self.max_failures) + 32
    }

    /// The verdict on an attempt made at `now`, from the attempts in the window (`recent`,
    /// itself included).
    pub(crate) fn decide(&self, recent: &Recent, now: u64) -> Verdict {
        let over = |times: &[u64], max: u32| {
            let one_too_many = times.get(usize::try_from(max).ok()?)?;
            Some(one_too_many.saturating_add(self.window.as_secs()).saturating_sub(now).max(1))
        };
        let refusals = [
            (Limit::AccountAddress, over(&recent.pair, self.max_failures)),
            (Limit::Address, over(&recent.address, self.max_address_failures)),
        ];
        let longest = refusals
            .into_iter()
            .filter_map(|(limit, wait)| Some((limit, wait?)))
            .max_by_key(|(_, retry_after)| *retry_after);
        match longest {
            Some((limit, retry_after)) => Verdict::Refuse { limit, retry_after },
            None => Verdict::Allow { delay: self.delay(recent.elsewhere) },
        }
    }

    /// The delay of a login to an account with `elsewhere` recent attempts from other addresses:
    /// none up to one address's worth (`max_failures`), then [`FIRST_DELAY`], doubling with each
    /// one more, up to `max_delay`.
    pub(crate) fn delay(&self, elsewhere: u64) -> Duration {
        let excess = elsewhere.saturating_sub(u64::from(self.max_failures));
        if excess == 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(excess - 1).unwrap_or(u32::MAX).min(31);
        FIRST_DELAY.saturating_mul(1 << doublings).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LoginLimits = LoginLimits {
        max_failures: 3,
        max_address_failures: 5,
        max_registrations: 10,
        window: Duration::from_secs(900),
        max_delay: Duration::from_secs(3),
    };

    #[test]
    fn refusals_per_account_and_address_and_per_address() {
        let now = 10_000;
        // (attempts on this account from this address, from this address on any account, verdict)
        let cases: &[(&[u64], &[u64], Verdict)] = &[
            // A first attempt from an address without failures is never refused.
            (&[now], &[now], Verdict::Allow { delay: Duration::ZERO }),
            // `max_failures` failures, then this one: refused until the oldest that counts leaves.
            (
                &[now, 9_900, 9_500, 9_200],
                &[now, 9_900, 9_500, 9_200],
                Verdict::Refuse { limit: Limit::AccountAddress, retry_after: 100 },
            ),
            (&[now, 9_900, 9_500], &[now, 9_900, 9_500], Verdict::Allow { delay: Duration::ZERO }),
            // Leaving this second: at least one.
            (&[now, now, now, 9_100], &[now; 4], Verdict::Refuse { limit: Limit::AccountAddress, retry_after: 1 }),
            // This address failed on other accounts: the address limit.
            (
                &[now],
                &[now, 9_990, 9_980, 9_970, 9_960, 9_300],
                Verdict::Refuse { limit: Limit::Address, retry_after: 200 },
            ),
            (&[now], &[now, 9_990, 9_980, 9_970, 9_960], Verdict::Allow { delay: Duration::ZERO }),
            // Both: the longer wait.
            (
                &[now, 9_990, 9_980, 9_970],
                &[now, 9_990, 9_980, 9_970, 9_960, 9_950],
                Verdict::Refuse { limit: Limit::AccountAddress, retry_after: 870 },
            ),
        ];
        for (pair, address, verdict) in cases {
            let recent = Recent { pair: pair.to_vec(), address: address.to_vec(), elsewhere: 0 };
            assert_eq!(LIMITS.decide(&recent, now), *verdict, "{pair:?} {address:?}");
        }
    }

    #[test]
    fn an_account_failing_from_many_addresses_is_slowed_down_never_refused() {
        let ms = Duration::from_millis;
        for (elsewhere, delay) in [
            (0, Duration::ZERO),
            (3, Duration::ZERO), // one address's worth: an attacker at one address slows nobody
            (4, ms(250)),
            (5, ms(500)),
            (6, ms(1_000)),
            (7, ms(2_000)),
            (8, ms(3_000)),
            (9, ms(3_000)),
            (LIMITS.elsewhere_cap(), ms(3_000)),
            (u64::MAX, ms(3_000)),
        ] {
            assert_eq!(LIMITS.delay(elsewhere), delay, "{elsewhere}");
            let recent = Recent { pair: vec![1], address: vec![1], elsewhere };
            assert_eq!(LIMITS.decide(&recent, 1), Verdict::Allow { delay }, "{elsewhere}");
        }
        assert_eq!(LoginLimits { max_delay: Duration::ZERO, ..LIMITS }.delay(100), Duration::ZERO, "off");
    }
}
