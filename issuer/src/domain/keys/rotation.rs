//! When keys change: the rotation policy and the planner that decides, from the published keys
//! alone, what the scheduled step does. Pure: no I/O, time given.

use super::{KeyInfo, KeyState, MAX_PUBLISHED_KEYS};
use std::time::Duration;

/// The default of the `replica_sync` setting: how often each `serve` process applies due rotation
/// steps and re-reads the key set in the background. A new key becomes active only once every
/// process has had the time to publish it: see [`RotationPolicy::publish_margin`].
pub const REPLICA_SYNC: Duration = Duration::from_secs(5);

/// How stale the key set a process serves and checks admin tokens against may be: reading it
/// compares the cheap key-set version with the database at most once per this interval (by the
/// injected clock) and rebuilds only when it moved. So a revocation in one process reaches every
/// other within about this long, not at the next background sync.
pub const KEY_SET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The timing rules of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long a new key is published before it may sign.
    pub publish_lead: Duration,
    /// How long a key stays published after it stopped signing.
    pub retire_delay: Duration,
    /// The interval of each process's background sync (`replica_sync`); the publish margin is
    /// derived from it.
    pub replica_sync: Duration,
}

impl RotationPolicy {
    /// What is added to `publish_lead` before a new key may sign: twice the sync interval.
    ///
    /// The lead counts from `published_at`, but verifiers can only fetch the key once every
    /// process serves it. A process serves a key set at most [`KEY_SET_CHECK_INTERVAL`] old
    /// when it is read, and its background sync re-reads it every `replica_sync`; that sync runs
    /// with `MissedTickBehavior::Delay`, so a slow sync (or a commit that waited for the lock
    /// after `published_at` was taken) pushes the next one back by up to a whole interval. Twice
    /// the interval covers that, with [`KEY_SET_CHECK_INTERVAL`] well inside it. Keep
    /// `publish_margin >= 2 * replica_sync` when changing either.
    pub fn publish_margin(&self) -> Duration {
        self.replica_sync.saturating_mul(2)
    }

    /// The whole lead a new key gets before it may sign: `publish_lead + publish_margin`.
    pub fn lead(&self) -> Duration {
        self.publish_lead.saturating_add(self.publish_margin())
    }

    /// The earliest moment a key published at `published_at` may sign.
    pub fn earliest_activation(&self, published_at: u64) -> u64 {
        published_at.saturating_add(self.lead().as_secs())
    }
}

/// What the scheduled step should do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Retiring keys whose delay has passed: they leave the key set.
    pub(crate) retire: Vec<String>,
    /// A next key whose time has come: it becomes active.
    pub(crate) promote: Option<String>,
    /// A key to create.
    pub(crate) create: Option<Create>,
}

/// A key the scheduled step creates.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// No key at all (first start): one that signs at once.
    Active,
    /// The next key, taking over at the given time.
    Next {
        /// When it takes over (Unix seconds).
        activate_after: u64,
    },
}

impl Plan {
    /// True when nothing is due.
    pub(crate) fn is_empty(&self) -> bool {
        self.retire.is_empty() && self.promote.is_none() && self.create.is_none()
    }

    /// The step due at `now` for the `published` keys: retire keys whose delay has passed,
    /// promote a next key whose time has come, publish a next key one lead ahead of the end of
    /// the rotation period, and on a first start create the first key.
    pub(crate) fn for_tick(published: &[KeyInfo], now: u64, policy: &RotationPolicy) -> Self {
        let retire: Vec<String> = published
            .iter()
            .filter(|key| key.state == KeyState::Retiring)
            .filter(|key| now >= key.retiring_at.unwrap_or(0).saturating_add(policy.retire_delay.as_secs()))
            .map(|key| key.kid.clone())
            .collect();
        let active = published.iter().find(|key| key.state == KeyState::Active);
        let next = published.iter().find(|key| key.state == KeyState::Next);
        let mut plan = Self { retire, ..Self::default() };
        match (active, next) {
            (None, None) => plan.create = Some(Create::Active),
            // Not made by the issuer (it never leaves a next key without an active one): recover.
            (None, Some(next)) => plan.promote = Some(next.kid.clone()),
            (Some(_), Some(next)) => {
                let earliest = policy.earliest_activation(next.published_at);
                if now >= earliest && now >= next.activate_after.unwrap_or(earliest) {
                    plan.promote = Some(next.kid.clone());
                }
            }
            (Some(active), None) => {
                let due =
                    active.activated_at.unwrap_or(active.published_at).saturating_add(policy.rotation_period.as_secs());
                // A full key set publishes nothing more; the active key signs on until retiring
                // keys retire (only reachable with a retire delay far beyond the period).
                let remaining = published.len() - plan.retire.len();
                if now.saturating_add(policy.lead().as_secs()) >= due && remaining < MAX_PUBLISHED_KEYS {
                    let activate_after = due.max(policy.earliest_activation(now));
                    plan.create = Some(Create::Next { activate_after });
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::SigningKey;

    const MINUTE: u64 = 60;
    const PERIOD: u64 = 60 * MINUTE;
    /// The publish lead (5 min) plus twice the sync interval (5 s).
    const LEAD: u64 = 5 * MINUTE + 10;
    const RETIRE: u64 = 6 * MINUTE;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            rotation_period: Duration::from_secs(PERIOD),
            publish_lead: Duration::from_secs(5 * MINUTE),
            retire_delay: Duration::from_secs(RETIRE),
            replica_sync: Duration::from_secs(5),
        }
    }

    /// A key in `state`, with its times: published, activate_after, activated, retiring.
    fn key(state: KeyState, published_at: u64, times: [Option<u64>; 3]) -> KeyInfo {
        let signing = SigningKey::generate().expect("key");
        let [activate_after, activated_at, retiring_at] = times;
        KeyInfo {
            kid: format!("{}-{published_at}", state.as_str()),
            state,
            public_key: signing.public_key().clone(),
            published_at,
            activate_after,
            activated_at,
            retiring_at,
            retired_at: None,
            revoked_at: None,
        }
    }

    fn active(at: u64) -> KeyInfo {
        key(KeyState::Active, at, [None, Some(at), None])
    }

    fn next(published_at: u64, activate_after: u64) -> KeyInfo {
        key(KeyState::Next, published_at, [Some(activate_after), None, None])
    }

    fn retiring(since: u64) -> KeyInfo {
        key(KeyState::Retiring, 0, [None, Some(0), Some(since)])
    }

    fn plan(retire: &[&str], promote: Option<&str>, create: Option<Create>) -> Plan {
        Plan {
            retire: retire.iter().map(|kid| (*kid).to_owned()).collect(),
            promote: promote.map(str::to_owned),
            create,
        }
    }

    #[test]
    fn the_plan_for_each_situation() {
        assert_eq!(policy().lead().as_secs(), LEAD);
        let cases: Vec<(&str, Vec<KeyInfo>, u64, Plan)> = vec![
            ("first start", vec![], 1000, plan(&[], None, Some(Create::Active))),
            ("an active key mid-period", vec![active(0)], PERIOD / 2, Plan::default()),
            ("one second before the lead", vec![active(0)], PERIOD - LEAD - 1, Plan::default()),
            (
                "one lead before the period ends",
                vec![active(0)],
                PERIOD - LEAD,
                plan(&[], None, Some(Create::Next { activate_after: PERIOD })),
            ),
            (
                "long overdue: the next key still waits a whole lead",
                vec![active(0)],
                10 * PERIOD,
                plan(&[], None, Some(Create::Next { activate_after: 10 * PERIOD + LEAD })),
            ),
            (
                "next key before its lead (activate_after is not enough)",
                vec![active(0), next(100, 50)],
                100 + LEAD - 1,
                Plan::default(),
            ),
            ("next key after its lead", vec![active(0), next(100, 50)], 100 + LEAD, plan(&[], Some("next-100"), None)),
            ("next key scheduled later than its lead", vec![active(0), next(100, 5000)], 4999, Plan::default()),
            (
                "next key at its scheduled time",
                vec![active(0), next(100, 5000)],
                5000,
                plan(&[], Some("next-100"), None),
            ),
            (
                "a next key without an active one is promoted",
                vec![next(100, 5000)],
                200,
                plan(&[], Some("next-100"), None),
            ),
            ("retiring before the delay", vec![active(0), retiring(10)], 10 + RETIRE - 1, Plan::default()),
            ("retiring after the delay", vec![active(0), retiring(10)], 10 + RETIRE, plan(&["retiring-0"], None, None)),
        ];
        for (name, keys, now, expected) in cases {
            assert_eq!(Plan::for_tick(&keys, now, &policy()), expected, "{name}");
        }
    }

    #[test]
    fn a_full_key_set_publishes_no_next_key() {
        let mut keys = vec![active(0)];
        keys.extend((1..MAX_PUBLISHED_KEYS).map(|_| retiring(1_000_000)));
        assert!(Plan::for_tick(&keys, 10 * PERIOD, &policy()).is_empty());
    }
}
