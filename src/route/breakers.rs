//! Circuit breakers per model: a model that keeps failing is skipped for a while, then one
//! trial request decides whether it is back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Half-open: one trial request is out.
    trial: bool,
}

/// A circuit breaker per model: after `failures` consecutive failures the model is skipped
/// for `open_for`; then a single trial request is let through, and its outcome closes or
/// re-opens the circuit.
#[derive(Debug, Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, BreakerState>>,
}

impl Breakers {
    /// Whether a request may go to `model` now.
    pub fn allow(&self, model: &str) -> bool {
        let mut states = self.states.lock().expect("breaker lock");
        let Some(s) = states.get_mut(model) else {
            return true;
        };
        match s.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if s.trial => false,
            Some(_) => {
                s.trial = true;
                true
            }
        }
    }

    pub fn success(&self, model: &str) {
        let mut states = self.states.lock().expect("breaker lock");
        if let Some(s) = states.get_mut(model) {
            *s = BreakerState::default();
        }
    }

    /// Returns true when this failure opened the circuit.
    pub fn failure(&self, model: &str, failures: u32, open_for: Duration) -> bool {
        let mut states = self.states.lock().expect("breaker lock");
        let s = states.entry(model.to_string()).or_default();
        s.consecutive_failures += 1;
        if s.trial || s.consecutive_failures >= failures.max(1) {
            let was_closed = s.open_until.is_none() || s.trial;
            s.open_until = Some(Instant::now() + open_for);
            s.trial = false;
            if was_closed {
                metrics::counter!("qm_circuit_opened_total", "model" => model.to_string())
                    .increment(1);
            }
            return was_closed;
        }
        false
    }

    pub fn is_open(&self, model: &str) -> bool {
        let states = self.states.lock().expect("breaker lock");
        states
            .get(model)
            .and_then(|s| s.open_until)
            .is_some_and(|u| Instant::now() < u)
    }
}
