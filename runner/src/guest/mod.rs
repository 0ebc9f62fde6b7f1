//! Small guest programs, assembled at run time, that touch guest memory and report over port IO.

pub mod program;
pub mod protocol;
pub mod run;

pub use program::{BoardPages, Program};
pub use run::{GuestReport, HypercallAnswer, run_program, run_program_answering};
