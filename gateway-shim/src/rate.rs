//! Rate limits and the per-IP connection cap (DESIGN §8). They hold across all cores, so they
//! are shared: `governor`'s keyed limiters (a concurrent map of GCRA cells, one atomic update
//! per check) and a mutex-guarded connection count touched only at connect and disconnect.
//! A request pays one or two uncontended atomic updates; that is the price of limits a client
//! cannot dodge by spreading its connections over cores.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::GatewayLimits;

/// What a request costs against the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodClass {
    /// Send code, sign in, sign up, authenticate.
    Login,
    /// Message writes.
    Send,
    /// Uploads and downloads: a file moves in thousands of parts, so they have their own,
    /// larger allowance rather than eating into the session's other requests.
    Media,
    Other,
}

#[derive(Debug)]
pub struct RateLimits {
    clock: DefaultClock,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    logins_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    codes_per_phone: DefaultKeyedRateLimiter<String>,
    sends_per_session: DefaultKeyedRateLimiter<u64>,
    requests_per_session: DefaultKeyedRateLimiter<u64>,
    media_per_session: DefaultKeyedRateLimiter<u64>,
    connections: Mutex<HashMap<IpAddr, u32>>,
    connections_per_ip_max: u32,
}

fn quota(per: u32, period: Duration) -> Quota {
    let count = NonZeroU32::new(per).unwrap_or(NonZeroU32::MIN);
    // `with_period` is None only for a zero period; the periods here are constants above zero.
    Quota::with_period(period / count.get()).map_or(Quota::per_second(count), |quota| quota.allow_burst(count))
}

impl RateLimits {
    pub fn new(limits: &GatewayLimits) -> RateLimits {
        let second = Duration::from_secs(1);
        RateLimits {
            clock: DefaultClock::default(),
            per_ip: DefaultKeyedRateLimiter::keyed(quota(limits.requests_per_ip_per_second, second)),
            logins_per_ip: DefaultKeyedRateLimiter::keyed(quota(limits.logins_per_ip_per_minute, 60 * second)),
            codes_per_phone: DefaultKeyedRateLimiter::keyed(quota(limits.codes_per_phone_per_hour, 3600 * second)),
            sends_per_session: DefaultKeyedRateLimiter::keyed(quota(limits.sends_per_session_per_second, second)),
            requests_per_session: DefaultKeyedRateLimiter::keyed(quota(limits.requests_per_session_per_second, second)),
            media_per_session: DefaultKeyedRateLimiter::keyed(quota(
                limits.media_requests_per_session_per_second,
                second,
            )),
            connections: Mutex::new(HashMap::new()),
            connections_per_ip_max: limits.connections_per_ip_max,
        }
    }

    /// Checks a request; `Err(seconds)` is the `FLOOD_WAIT` to answer. `session` is the
    /// connection's authorization, if it has one.
    pub fn check_request(&self, ip: IpAddr, session: Option<u64>, class: MethodClass) -> Result<(), u32> {
        self.check(&self.per_ip, &ip)?;
        match class {
            MethodClass::Login => self.check(&self.logins_per_ip, &ip),
            MethodClass::Send => match session {
                Some(session) => self.check(&self.sends_per_session, &session),
                None => Ok(()),
            },
            MethodClass::Media => match session {
                Some(session) => self.check(&self.media_per_session, &session),
                None => Ok(()),
            },
            MethodClass::Other => match session {
                Some(session) => self.check(&self.requests_per_session, &session),
                None => Ok(()),
            },
        }
    }

    /// Checks sending another login code to `phone`.
    pub fn check_code(&self, phone: &str) -> Result<(), u32> {
        self.check(&self.codes_per_phone, &phone.to_owned())
    }

    /// Counts a new connection from `ip`; `false` if the IP is at its cap.
    pub fn connect(&self, ip: IpAddr) -> bool {
        let mut connections = self.lock();
        let count = connections.entry(ip).or_insert(0);
        if *count >= self.connections_per_ip_max {
            return false;
        }
        *count += 1;
        true
    }

    pub fn disconnect(&self, ip: IpAddr) {
        let mut connections = self.lock();
        if let Some(count) = connections.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                connections.remove(&ip);
            }
        }
    }

    /// Forgets the state of keys that have been quiet long enough to be back at full burst, so
    /// the limiters do not grow with every IP and phone ever seen.
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.logins_per_ip.retain_recent();
        self.codes_per_phone.retain_recent();
        self.sends_per_session.retain_recent();
        self.requests_per_session.retain_recent();
        self.media_per_session.retain_recent();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Each critical section is one counter update, so a poisoned map is still consistent.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check<K: Hash + Eq + Clone>(&self, limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), u32> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A burst past a limit gets a flood wait in whole seconds, per key; the connection cap
    // holds per IP and frees on disconnect.
    #[test]
    fn limits_hold_per_key() {
        let limits = GatewayLimits { logins_per_ip_per_minute: 3, connections_per_ip_max: 2, ..Default::default() };
        let rates = RateLimits::new(&limits);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            rates.check_request(ip, None, MethodClass::Login).unwrap();
        }
        let wait = rates.check_request(ip, None, MethodClass::Login).unwrap_err();
        assert!((1..=60).contains(&wait), "waits {wait} s");
        rates.check_request(other, None, MethodClass::Login).unwrap();
        rates.check_request(ip, None, MethodClass::Other).unwrap();

        // Media has its own allowance per session: spending it leaves other requests alone.
        let limits = GatewayLimits { media_requests_per_session_per_second: 5, ..Default::default() };
        let media_rates = RateLimits::new(&limits);
        for _ in 0..5 {
            media_rates.check_request(ip, Some(7), MethodClass::Media).unwrap();
        }
        assert!(media_rates.check_request(ip, Some(7), MethodClass::Media).is_err());
        media_rates.check_request(ip, Some(7), MethodClass::Other).unwrap();
        media_rates.check_request(ip, Some(8), MethodClass::Media).unwrap();

        assert!(rates.connect(ip) && rates.connect(ip));
        assert!(!rates.connect(ip));
        assert!(rates.connect(other));
        rates.disconnect(ip);
        assert!(rates.connect(ip));
    }
}
