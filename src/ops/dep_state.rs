//! The verdicts of the dependency checks ([`super::deps`]) with their flap thresholds: a
//! dependency turns unhealthy after `failureThreshold` consecutive failed checks and healthy
//! again after `successThreshold` passing ones.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// One dependency's check state.
#[derive(Debug, Clone, Default)]
pub struct DepState {
    /// Current verdict.
    pub healthy: bool,
    /// Consecutive failures.
    pub fails: u32,
    /// Consecutive successes.
    pub oks: u32,
    /// Last check result detail.
    pub detail: String,
    /// Last check, ms.
    pub checked_at: i64,
}

/// Per-shard (used on shard 0) dependency states by name.
#[derive(Debug, Default)]
pub struct Deps {
    /// States.
    pub states: RefCell<BTreeMap<String, DepState>>,
}

/// Applies one check result with the thresholds.
pub fn apply(st: &mut DepState, ok: bool, detail: String, fail_t: u32, ok_t: u32, now: i64) {
    if ok {
        st.oks += 1;
        st.fails = 0;
        if !st.healthy && st.oks >= ok_t.max(1) {
            st.healthy = true;
        }
    } else {
        st.fails += 1;
        st.oks = 0;
        if st.healthy && st.fails >= fail_t.max(1) {
            st.healthy = false;
        }
    }
    st.detail = detail;
    st.checked_at = now;
}
