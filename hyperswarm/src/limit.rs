//! A per-address budget for the requests a node answers: a flood from one address
//! is answered up to [`PER_SECOND`] a second and the rest dropped, so it costs bounded
//! work and memory (one counter per address heard from this second) and others are
//! still answered. JS answers everything; peers behind one address (a NAT, or every
//! test peer on loopback) share the budget, so it is far above what honest ones send.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Requests answered per address and second.
pub const PER_SECOND: u32 = 2_000;
/// Addresses counted at most in one second: past it, new ones are dropped that second.
const MAX_ADDRESSES: usize = 65_536;

/// Counts requests per address over one-second windows.
#[derive(Debug)]
pub struct RateLimit {
    window: Instant,
    counts: HashMap<Ipv4Addr, u32>,
    per_second: u32,
}

impl RateLimit {
    /// A budget of [`PER_SECOND`] starting at `now`.
    pub fn new(now: Instant) -> RateLimit {
        RateLimit::with_budget(now, PER_SECOND)
    }

    /// A budget of `per_second` requests per address, starting at `now`.
    pub fn with_budget(now: Instant, per_second: u32) -> RateLimit {
        RateLimit {
            window: now,
            counts: HashMap::new(),
            per_second,
        }
    }

    /// Whether a request from `ip` at `now` is within its budget (and counts it).
    pub fn allow(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.counts.clear();
        }
        if self.counts.len() >= MAX_ADDRESSES && !self.counts.contains_key(&ip) {
            return false;
        }
        let count = self.counts.entry(ip).or_insert(0);
        *count = count.saturating_add(1);
        *count <= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budget_renewed_every_second() {
        let start = Instant::now();
        let mut limit = RateLimit::new(start);
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let allowed = (0..PER_SECOND + 500)
            .filter(|_| limit.allow(a, start))
            .count();
        assert_eq!(allowed, PER_SECOND as usize);
        assert!(limit.allow(b, start), "another address is not held up");
        assert!(limit.allow(a, start + Duration::from_secs(1)));
    }
}
