//! Results: the event record and what is rendered from it.

pub mod console;
pub mod event;
pub mod render;

pub use event::{CaseEvent, Counts, Outcome};
