//! The one timing loop of the `bench` figures.

use std::time::Instant;

/// Best of `rounds` timed runs after one warm-up, in ns per tick (the machine is shared: the
/// minimum is the figure least disturbed by other work).
pub(super) fn per_tick(ticks: usize, rounds: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..rounds.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e9 / ticks as f64
        })
        .fold(f64::INFINITY, f64::min)
}
