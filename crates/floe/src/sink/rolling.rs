//! When a sink commits: the rolling state every sink shares.
//!
//! ```text
//!  committed ──────────── through          a sink's stream positions: rows before `committed`
//!      │   pending rows/bytes  │           are in its target exactly once; rows up to `through`
//!      └──────────────────────-┘           were handed to `write` and are not committed yet
//!
//!  roll when  pending bytes ≥ rolling.size_mb
//!         or  now ≥ first pending input + rolling.interval_seconds
//!         or  now ≥ last input + rolling.inactivity_seconds (when set)
//! ```
//!
//! "Input" counts every stream row a micro-batch read, also rows the SQL filtered out: a
//! pipeline whose rows are all filtered away still moves its position on the same schedule.

use std::time::{Duration, Instant};

use crate::config::Rolling;

/// The positions and pending amounts of one sink, and its roll schedule.
#[derive(Debug, Clone)]
pub struct RollState {
    committed: u64,
    through: u64,
    pending_rows: u64,
    pending_bytes: usize,
    first_pending: Option<Instant>,
    last_input: Option<Instant>,
    interval: Duration,
    size_bytes: usize,
    inactivity: Option<Duration>,
}

impl RollState {
    /// A sink committed through `committed`, rolling per `rolling`.
    pub fn new(rolling: &Rolling, committed: u64) -> Self {
        RollState {
            committed,
            through: committed,
            pending_rows: 0,
            pending_bytes: 0,
            first_pending: None,
            last_input: None,
            interval: Duration::from_secs(rolling.interval_seconds),
            size_bytes: (rolling.size_mb as usize).saturating_mul(1024 * 1024),
            inactivity: rolling.inactivity_seconds.map(Duration::from_secs),
        }
    }

    /// The committed position: every stream row before it is in the target exactly once.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The position after the last row handed to the sink.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Rows written but not committed.
    pub fn pending_rows(&self) -> u64 {
        self.pending_rows
    }

    /// Bytes (in memory, Arrow) written but not committed.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The input moved on to `through` (a micro-batch was read, whatever it produced).
    pub fn input(&mut self, through: u64) {
        if through > self.through {
            let now = Instant::now();
            self.first_pending.get_or_insert(now);
            self.last_input = Some(now);
            self.through = through;
        }
    }

    /// `rows` rows of `bytes` bytes were written.
    pub fn wrote(&mut self, rows: u64, bytes: usize) {
        self.pending_rows += rows;
        self.pending_bytes += bytes;
    }

    /// Whether the pending rows should be committed now.
    pub fn should_roll(&self) -> bool {
        self.through > self.committed
            && (self.pending_bytes >= self.size_bytes || self.roll_deadline().is_some_and(|t| Instant::now() >= t))
    }

    /// When the next time-based roll (interval or inactivity) is due, if anything is pending.
    pub fn roll_deadline(&self) -> Option<Instant> {
        let interval = self.first_pending.map(|t| t + self.interval)?;
        let idle = self.inactivity.zip(self.last_input).map(|(d, t)| t + d);
        Some(idle.map_or(interval, |idle| idle.min(interval)))
    }

    /// A commit attempt ended: nothing is pending any more, and when it landed the committed
    /// position is `through`. (After a failed one the sink is reopened from the catalog, so the
    /// position stays.)
    pub fn finish_commit(&mut self, landed: bool) {
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.first_pending = None;
        self.last_input = None;
        if landed {
            self.committed = self.through;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolling(interval: u64, size_mb: u64, inactivity: Option<u64>) -> Rolling {
        Rolling {
            interval_seconds: interval,
            size_mb,
            inactivity_seconds: inactivity,
            ..Rolling::default()
        }
    }

    #[test]
    fn nothing_pending_never_rolls() {
        let s = RollState::new(&rolling(0, 0, None), 7);
        assert!(!s.should_roll());
        assert_eq!(s.roll_deadline(), None);
        assert_eq!((s.committed(), s.through()), (7, 7));
    }

    #[test]
    fn size_rolls_and_a_landed_commit_moves_the_position() {
        let mut s = RollState::new(&rolling(3600, 1, None), 0);
        s.input(10);
        s.wrote(10, 512 * 1024);
        assert!(!s.should_roll());
        s.input(20);
        s.wrote(10, 512 * 1024);
        assert!(s.should_roll());
        s.finish_commit(true);
        assert_eq!((s.committed(), s.through(), s.pending_rows()), (20, 20, 0));
        assert!(!s.should_roll());
    }

    #[test]
    fn filtered_input_rolls_on_the_interval() {
        let mut s = RollState::new(&rolling(0, 64, None), 0);
        s.input(5);
        assert_eq!(s.pending_rows(), 0);
        assert!(
            s.should_roll(),
            "an empty micro-batch still moves the position on schedule"
        );
    }

    #[test]
    fn inactivity_comes_before_the_interval() {
        let mut s = RollState::new(&rolling(3600, 64, Some(1)), 0);
        s.input(1);
        let deadline = s.roll_deadline().expect("pending");
        assert!(deadline < Instant::now() + Duration::from_secs(2));
    }

    #[test]
    fn a_failed_commit_keeps_the_position() {
        let mut s = RollState::new(&rolling(3600, 64, None), 3);
        s.input(9);
        s.wrote(6, 100);
        s.finish_commit(false);
        assert_eq!(s.committed(), 3);
        assert_eq!(s.pending_rows(), 0);
    }
}
