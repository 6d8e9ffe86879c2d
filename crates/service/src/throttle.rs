//! Throttling failed authentication per client address.
//!
//! Each address has a token bucket of [`AuthFailureLimit::burst`]
//! attempts, refilled at `burst` per [`AuthFailureLimit::period`]. An
//! authentication attempt from an address is let through while its bucket
//! holds at least one attempt, and takes one from it only if it fails: valid
//! requests cost nothing, however many arrive at once. Failures that were
//! already under way when the bucket ran dry still count: the bucket goes
//! into debt, and the address waits until it is repaid, so that guessing
//! with many requests at once gains nothing over the limit's rate. Once the
//! bucket is empty, every further attempt from the address is refused
//! (RESOURCE_EXHAUSTED / 429, naming the wait) *without checking the
//! credentials*, valid ones included: checking them would let a guessing
//! script learn when it guessed right, which is what the limit exists to
//! stop. That is how Vault and similar systems treat a locked-out client.
//! Requests from other addresses are never slowed, and requests that
//! authenticate no token (a signed-in dashboard session, `/healthz`) are
//! not affected.
//!
//! IPv6 addresses are grouped by their /64 (one host usually has a whole
//! /64), and IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! This is a small map of our own rather than a crate such as `governor`:
//! a failure must be counted only once known (after the check that lets the
//! attempt through), the retry time must be named, and the memory must have
//! a hard bound. At most [`MAX_ADDRESSES`] addresses are tracked; when the map is
//! full, buckets that have refilled are dropped first (they hold nothing a
//! new bucket would not), then the fullest ones, so an attacker spreading
//! over many addresses cannot grow the map, and the addresses that failed
//! most are the last to be forgotten.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use latchkey_core::Error;

/// The address a request came from, as the server saw it (the peer of
/// the connection; behind a proxy, the proxy). The server puts it in each
/// request's extensions; the interfaces hand it to
/// [`Service::authenticate`](crate::Service::authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How many failed authentications an address may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailureLimit {
    /// Failures allowed at once (the bucket's size); 0 turns throttling off.
    pub burst: u32,
    /// How long the bucket takes to refill from empty.
    pub period: Duration,
}

impl Default for AuthFailureLimit {
    /// 20 failures a minute per address: a guessing script is stopped
    /// after 20 tries, then gets one every 3 s; someone mistyping a token
    /// never notices.
    fn default() -> Self {
        Self {
            burst: 20,
            period: Duration::from_secs(60),
        }
    }
}

/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    attempts: f64,
    updated: Instant,
}

/// The buckets of every address that failed lately.
pub(crate) struct Throttle {
    limit: AuthFailureLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    max: usize,
}

/// An attempt let through; [`Throttle::settle`] counts it if it failed.
#[must_use]
#[derive(Clone, Copy)]
pub(crate) struct Attempt(Option<IpAddr>);

impl Throttle {
    pub(crate) fn new(limit: AuthFailureLimit) -> Self {
        Self::with_max(limit, MAX_ADDRESSES)
    }

    fn with_max(limit: AuthFailureLimit, max: usize) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit.burst) / self.limit.period.as_secs_f64().max(1e-3)
    }

    /// The attempts a bucket holds at `now` (negative: in debt).
    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        (bucket.attempts + elapsed * self.per_second()).min(f64::from(self.limit.burst))
    }

    /// Lets an attempt from `client` through, or refuses it naming the wait.
    pub(crate) fn begin(&self, client: Option<ClientAddr>) -> Result<Attempt, Error> {
        let Some(ClientAddr(ip)) = client.filter(|_| self.limit.burst > 0) else {
            return Ok(Attempt(None));
        };
        let key = key(ip);
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let attempts = buckets
            .get(&key)
            .map_or(f64::from(self.limit.burst), |b| self.refilled(*b, now));
        if attempts < 1.0 {
            let wait = ((1.0 - attempts) / self.per_second()).ceil().max(1.0);
            // The refusal is recorded as an `auth.failure` by `authenticate`.
            tracing::warn!(client = %ip, "authentication refused: too many failures from this address");
            return Err(Error::resource_exhausted(format!(
                "Too many failed authentications from {ip}; try again in {wait} s"
            ))
            .with_retry_after(Duration::from_secs_f64(wait)));
        }
        Ok(Attempt(Some(key)))
    }

    /// Takes one attempt from the bucket of the attempt's address if it
    /// failed (the credentials were refused).
    pub(crate) fn settle(&self, attempt: Attempt, failed: bool) {
        let (Some(key), true) = (attempt.0, failed) else {
            return;
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let attempts = match buckets.get(&key) {
            Some(b) => self.refilled(*b, now),
            None => {
                self.make_room(&mut buckets, now);
                f64::from(self.limit.burst)
            }
        };
        buckets.insert(
            key,
            Bucket {
                attempts: attempts - 1.0,
                updated: now,
            },
        );
    }

    /// Makes room for one more address (see the module's notes).
    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        if buckets.len() < self.max {
            return;
        }
        let full = f64::from(self.limit.burst);
        buckets.retain(|_, b| self.refilled(*b, now) < full);
        while buckets.len() >= self.max {
            let fullest = buckets
                .iter()
                .max_by(|a, b| {
                    self.refilled(*a.1, now)
                        .total_cmp(&self.refilled(*b.1, now))
                })
                .map(|(k, _)| *k);
            match fullest {
                Some(k) => buckets.remove(&k),
                None => break,
            };
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<ClientAddr> {
        Some(ClientAddr(s.parse().unwrap()))
    }

    fn fail(t: &Throttle, a: &str) -> Result<(), Error> {
        let attempt = t.begin(addr(a))?;
        t.settle(attempt, true);
        Ok(())
    }

    const LIMIT: AuthFailureLimit = AuthFailureLimit {
        burst: 3,
        period: Duration::from_secs(60),
    };

    #[test]
    fn failures_use_the_bucket_and_successes_do_not() {
        let t = Throttle::new(LIMIT);
        for _ in 0..10 {
            let attempt = t.begin(addr("10.0.0.1")).unwrap();
            t.settle(attempt, false);
        }
        for _ in 0..3 {
            fail(&t, "10.0.0.1").unwrap();
        }
        let e = fail(&t, "10.0.0.1").unwrap_err();
        assert_eq!(e.kind(), latchkey_core::ErrorKind::ResourceExhausted);
        assert!(e.message().contains("try again in 20 s"), "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
        // Another address is not affected; no address at all never is.
        fail(&t, "10.0.0.2").unwrap();
        for _ in 0..10 {
            fail_none(&t);
        }
    }

    fn fail_none(t: &Throttle) {
        let attempt = t.begin(None).unwrap();
        t.settle(attempt, true);
    }

    #[test]
    fn valid_attempts_at_once_cost_nothing_and_failures_at_once_all_count() {
        let t = Throttle::new(LIMIT);
        let valid: Vec<Attempt> = (0..100)
            .map(|_| t.begin(addr("10.0.0.1")).unwrap())
            .collect();
        for attempt in valid {
            t.settle(attempt, false);
        }
        // Ten failures under way at once: all let through, all counted.
        let guesses: Vec<Attempt> = (0..10)
            .map(|_| t.begin(addr("10.0.0.1")).unwrap())
            .collect();
        for attempt in guesses {
            t.settle(attempt, true);
        }
        let e = t.begin(addr("10.0.0.1")).err().unwrap();
        // 7 attempts in debt plus the one wanted, at one per 20 s.
        assert!(e.message().contains("try again in 160 s"), "{e}");
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(LIMIT);
        fail(&t, "2001:db8:1:2::1").unwrap();
        fail(&t, "2001:db8:1:2::ffff").unwrap();
        fail(&t, "2001:db8:1:2:aaaa::1").unwrap();
        assert!(fail(&t, "2001:db8:1:2::9").is_err());
        fail(&t, "2001:db8:1:3::1").unwrap();
        for _ in 0..3 {
            fail(&t, "::ffff:10.0.0.9").unwrap();
        }
        assert!(fail(&t, "10.0.0.9").is_err());
    }

    #[test]
    fn the_map_is_bounded_and_keeps_the_worst_offenders() {
        let t = Throttle::with_max(LIMIT, 100);
        for _ in 0..3 {
            fail(&t, "10.9.9.9").unwrap();
        }
        for i in 0..10_000u32 {
            let [a, b, c, d] = (0x0b00_0000 + i).to_be_bytes();
            fail(&t, &format!("{a}.{b}.{c}.{d}")).unwrap();
            assert!(t.tracked() <= 100);
        }
        assert!(fail(&t, "10.9.9.9").is_err(), "still throttled");
    }

    #[test]
    fn a_zero_burst_turns_it_off() {
        let t = Throttle::new(AuthFailureLimit {
            burst: 0,
            period: Duration::from_secs(60),
        });
        for _ in 0..100 {
            fail(&t, "10.0.0.1").unwrap();
        }
    }
}
