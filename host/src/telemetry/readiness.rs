//! Readiness per dependency (Kafka, the lake, Elasticsearch), for `GET /ready`: what was last
//! seen of each, and how long ago.

use super::Telemetry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// A dependency `/ready` reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Kafka,
    Lake,
    Elasticsearch,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DependencyStatus {
    pub ready: bool,
    /// What was last seen: "up", or the error.
    pub detail: String,
    /// Seconds since this status was set.
    pub age_seconds: f64,
    #[serde(skip)]
    at: Option<Instant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub dependencies: BTreeMap<Dependency, DependencyStatus>,
}

impl Telemetry {
    /// Notes what was last seen of `dependency` (`Ok` = reachable).
    pub fn set_ready(&self, dependency: Dependency, seen: Result<(), String>) {
        let (ready, detail) = match seen {
            Ok(()) => (true, "up".to_string()),
            Err(e) => (false, e),
        };
        let mut map = self.readiness.lock().expect("readiness lock");
        let status = map.entry(dependency).or_insert(DependencyStatus {
            ready,
            detail: String::new(),
            age_seconds: 0.0,
            at: None,
        });
        status.ready = ready;
        status.detail = detail;
        status.at = Some(Instant::now());
    }

    /// Ready when every dependency that reported is reachable and `expected` have all reported.
    pub fn readiness(&self, expected: &[Dependency]) -> Readiness {
        let map = self.readiness.lock().expect("readiness lock");
        let mut dependencies = BTreeMap::new();
        for d in expected {
            let status = match map.get(d) {
                Some(s) => DependencyStatus {
                    age_seconds: s.at.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                    ..s.clone()
                },
                None => DependencyStatus {
                    ready: false,
                    detail: "not checked yet".into(),
                    age_seconds: 0.0,
                    at: None,
                },
            };
            dependencies.insert(*d, status);
        }
        Readiness {
            ready: dependencies.values().all(|s| s.ready),
            dependencies,
        }
    }
}
