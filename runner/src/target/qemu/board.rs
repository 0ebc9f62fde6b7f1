//! Where the boot manager posts each case's final event and the host-side trials wait for theirs.

use crate::report::event::CaseEvent;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct Board {
    state: Mutex<State>,
    posted: Condvar,
}

#[derive(Default)]
struct State {
    results: HashMap<String, CaseEvent>,
    /// Set when no more results will come, with why.
    closed: Option<String>,
}

impl Board {
    pub fn post(&self, e: CaseEvent) {
        if let Ok(mut s) = self.state.lock() {
            s.results.insert(e.id.clone(), e);
        }
        self.posted.notify_all();
    }

    /// No more results will come; trials still waiting get `why`.
    pub fn close(&self, why: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.closed.get_or_insert_with(|| why.to_string());
        }
        self.posted.notify_all();
    }

    /// The final event of case `id`, once posted.
    pub fn wait(&self, id: &str) -> Result<CaseEvent, String> {
        let mut s = self.state.lock().map_err(|_| "the boot manager failed".to_string())?;
        loop {
            if let Some(e) = s.results.remove(id) {
                return Ok(e);
            }
            if let Some(why) = &s.closed {
                return Err(format!("no result for {id}: {why}"));
            }
            s = self.posted.wait(s).map_err(|_| "the boot manager failed".to_string())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_gets_its_event_or_the_reason_there_is_none() {
        let board = Arc::new(Board::default());
        let b = board.clone();
        let waiter = std::thread::spawn(move || (b.wait("s::a"), b.wait("s::b")));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let e: CaseEvent = serde_json::from_str(
            r#"{"id":"s::a","outcome":"pass","duration_ms":1,"location":"l","reference":"r","rerun":"x"}"#,
        )
        .expect("event");
        board.post(e);
        board.close("the target broke");
        let (a, b) = waiter.join().expect("joins");
        assert_eq!(a.expect("posted").id, "s::a");
        assert_eq!(b.expect_err("never posted"), "no result for s::b: the target broke");
    }
}
