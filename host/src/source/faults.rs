//! When a Kafka error stops the run. librdkafka retries most errors on its own, so the loop must
//! not give up on a broker restart or an idle connection closed; but an error that waiting cannot
//! heal must stop the run at once, naming it, instead of leaving `run --once` waiting forever and
//! a live host consuming nothing behind a WARN per poll.
//!
//! [`Faults`] decides, without I/O: an error of a [`FaultClass::Fatal`] kind stops at once; any
//! other stops once errors have kept coming for `kafka.error_give_up_ms` with nothing healthy in
//! between (a message consumed, a broker seen up). The consumer's callbacks and the loop feed it.

use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// Whether waiting can heal an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// An unsupported codec, an authentication or authorization failure, a TLS failure, an
    /// unknown topic, a partition with no offset under `auto_offset_reset = error`.
    Fatal,
    /// Anything librdkafka retries itself (a broker down, a timeout).
    Transient,
}

pub fn classify(code: Option<RDKafkaErrorCode>) -> FaultClass {
    use RDKafkaErrorCode as C;
    match code {
        Some(
            C::NotImplemented
            | C::BadCompression
            | C::SSL
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::AutoOffsetReset
            | C::Fatal,
        ) => FaultClass::Fatal,
        _ => FaultClass::Transient,
    }
}

/// Errors seen since the consumer was last healthy.
#[derive(Debug, Default)]
pub struct Faults {
    /// The first error since the last healthy sign, and when it came.
    since: Option<(Instant, String)>,
    /// The newest error.
    last: Option<String>,
    /// An error that waiting cannot heal.
    fatal: Option<String>,
    /// When an error was last worth a log line.
    logged: Option<Instant>,
    /// Errors since the last log line.
    unlogged: u64,
}

/// An error worth a log line: the first after a healthy spell, then one every this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Faults {
    /// An error (`what`: its text, cause included). Returns how many errors it stands for when it
    /// is worth a log line (the first of a spell, then one every 10 s), else `None`.
    pub fn error(
        &mut self,
        code: Option<RDKafkaErrorCode>,
        what: String,
        now: Instant,
    ) -> Option<u64> {
        if classify(code) == FaultClass::Fatal && self.fatal.is_none() {
            self.fatal = Some(what.clone());
        }
        self.since.get_or_insert_with(|| (now, what.clone()));
        self.last = Some(what);
        self.unlogged += 1;
        let due = self
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// A healthy sign: a message consumed, a broker up. Transient errors are forgiven; a fatal
    /// one is not (it was seen, and the run stops on it).
    pub fn healthy(&mut self) {
        self.since = None;
        self.logged = None;
        self.unlogged = 0;
    }

    /// Why the run must stop now, if it must: a fatal error, or errors for `give_up` with nothing
    /// healthy in between.
    pub fn verdict(&self, now: Instant, give_up: Duration) -> Option<String> {
        if let Some(fatal) = &self.fatal {
            return Some(format!("Kafka: {fatal} (waiting cannot heal this)"));
        }
        let (since, first) = self.since.as_ref()?;
        let lasting = now.duration_since(*since);
        if lasting < give_up {
            return None;
        }
        let last = self.last.as_deref().unwrap_or(first);
        Some(format!(
            "Kafka: errors for {} s without a message or a broker up (kafka.error_give_up_ms = {}); the first: {first}; the last: {last}",
            lasting.as_secs(),
            give_up.as_millis()
        ))
    }

    /// What is wrong now, for `/ready`: the fatal error, else the newest since the last healthy
    /// sign.
    pub fn current(&self) -> Option<&str> {
        self.fatal
            .as_deref()
            .or(self.since.as_ref().and(self.last.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode as C;

    const GIVE_UP: Duration = Duration::from_secs(60);

    #[test]
    fn an_unsupported_codec_stops_the_run_at_once() {
        let mut faults = Faults::default();
        let t0 = Instant::now();
        faults.error(
            Some(C::NotImplemented),
            "Message consumption error: NotImplemented".into(),
            t0,
        );
        let why = faults.verdict(t0, GIVE_UP).expect("fatal");
        assert!(
            why.contains("NotImplemented") && why.contains("cannot heal"),
            "{why}"
        );
        // A message consumed afterwards does not make it go away: the run stops on it.
        faults.healthy();
        assert!(faults.verdict(t0, GIVE_UP).is_some());
    }

    #[test]
    fn authentication_authorization_and_tls_failures_are_fatal() {
        for code in [
            C::Authentication,
            C::SaslAuthenticationFailed,
            C::SSL,
            C::TopicAuthorizationFailed,
            C::GroupAuthorizationFailed,
            C::UnknownTopicOrPartition,
        ] {
            assert_eq!(classify(Some(code)), FaultClass::Fatal, "{code:?}");
        }
        for code in [
            C::AllBrokersDown,
            C::BrokerTransportFailure,
            C::OperationTimedOut,
        ] {
            assert_eq!(classify(Some(code)), FaultClass::Transient, "{code:?}");
        }
        assert_eq!(classify(None), FaultClass::Transient);
    }

    #[test]
    fn a_broker_down_is_waited_for_until_the_give_up_time() {
        let mut faults = Faults::default();
        let t0 = Instant::now();
        faults.error(Some(C::AllBrokersDown), "all brokers down".into(), t0);
        faults.error(
            Some(C::BrokerTransportFailure),
            "connection refused".into(),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(faults.verdict(t0 + Duration::from_secs(59), GIVE_UP), None);
        assert_eq!(faults.current(), Some("connection refused"));
        let why = faults
            .verdict(t0 + Duration::from_secs(61), GIVE_UP)
            .expect("given up");
        assert!(
            why.contains("all brokers down") && why.contains("connection refused"),
            "{why}"
        );
    }

    #[test]
    fn a_healthy_sign_forgives_transient_errors() {
        let mut faults = Faults::default();
        let t0 = Instant::now();
        faults.error(Some(C::AllBrokersDown), "down".into(), t0);
        faults.healthy();
        assert_eq!(faults.current(), None);
        // The clock starts again at the next error.
        faults.error(
            Some(C::AllBrokersDown),
            "down".into(),
            t0 + Duration::from_secs(100),
        );
        assert_eq!(faults.verdict(t0 + Duration::from_secs(130), GIVE_UP), None);
    }

    #[test]
    fn a_repeating_error_is_logged_once_every_ten_seconds_with_its_count() {
        let mut faults = Faults::default();
        let t0 = Instant::now();
        assert_eq!(faults.error(None, "e".into(), t0), Some(1));
        for ms in 1..100 {
            assert_eq!(
                faults.error(None, "e".into(), t0 + Duration::from_millis(ms)),
                None
            );
        }
        assert_eq!(
            faults.error(None, "e".into(), t0 + Duration::from_secs(10)),
            Some(100)
        );
    }
}
