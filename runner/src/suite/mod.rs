//! The suite language: YAML files of cases, each a list of steps with expectations.

pub mod args;
pub mod baseline;
pub mod embedded;
pub mod error;
pub mod excerpt;
pub mod expect;
pub mod load;
pub mod matrix;
pub mod model;
pub mod names;
pub mod node;
pub mod parse_op;
pub mod parse_proc;
pub mod parse_race;
pub mod requirement;
pub mod step;

pub use error::LoadError;
pub use model::{Case, Source, Suite};
pub use requirement::{Need, Requirement};
