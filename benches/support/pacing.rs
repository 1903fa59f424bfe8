//! GitHub's secondary limits in a bench: Registrar paces itself on its default settings
//! (those limits less `mutation_headroom_percent`), on a clock `scale` times faster than
//! GitHub's, and the fake is told to enforce the same limits on the same clock.

use std::time::Duration;

/// GitHub's documented secondary limits on content-creating requests: a minute, an hour.
pub const PER_MINUTE: usize = 80;
pub const PER_HOUR: usize = 500;

/// A budget minute and hour at `scale`.
pub fn clock(scale: u32) -> (Duration, Duration) {
    (Duration::from_secs(60) / scale, Duration::from_secs(3600) / scale)
}

/// Registrar's default pacing, on the scaled clock (the fake's `configure` turns it off).
pub fn default_pacing(c: &mut registrar::config::Config, scale: u32) {
    let (minute, hour) = clock(scale);
    let defaults = registrar::config::GithubConfig::default();
    c.forge.github.mutation_interval_ms = defaults.mutation_interval_ms / scale as u64;
    c.forge.github.max_mutations_per_minute = defaults.max_mutations_per_minute;
    c.forge.github.max_mutations_per_hour = defaults.max_mutations_per_hour;
    c.forge.github.mutation_headroom_percent = defaults.mutation_headroom_percent;
    c.forge.github.budget_minute_ms = minute.as_millis() as u64;
    c.forge.github.budget_hour_ms = hour.as_millis() as u64;
}

/// The fault that makes the fake answer any mutation over GitHub's limits with 403.
pub fn enforced(scale: u32) -> crate::support::fake_github::Faults {
    let (minute, hour) = clock(scale);
    crate::support::fake_github::Faults {
        secondary_budget: Some((PER_MINUTE, minute, PER_HOUR, hour)),
        ..Default::default()
    }
}
