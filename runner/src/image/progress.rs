//! Progress of the long steps on stderr: a spinner with the step's latest output on a terminal,
//! one line per step otherwise (CI logs), nothing with --quiet. stdout stays for the result.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Spinner,
    Lines,
    Quiet,
}

impl Mode {
    /// Spinners on a terminal, lines elsewhere, nothing when asked to be quiet.
    pub fn for_stderr(quiet: bool) -> Mode {
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Spinner,
            (false, false) => Mode::Lines,
        }
    }
}

pub struct Step {
    name: String,
    mode: Mode,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Step {
    pub fn start(mode: Mode, name: impl Into<String>) -> Step {
        let name = name.into();
        let bar = (mode == Mode::Spinner).then(|| {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if mode == Mode::Lines {
            eprintln!("gmemconf image: {name} ...");
        }
        Step { name, mode, bar, started: Instant::now() }
    }

    /// What the step is doing now (e.g. the last line make printed).
    pub fn detail(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.trim().to_string());
        }
    }

    /// A line that stays above the spinner (or is printed plainly).
    pub fn note(&self, text: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.suspend(|| eprintln!("gmemconf image: {text}")),
            (None, Mode::Lines) => eprintln!("gmemconf image: {text}"),
            _ => {}
        }
    }

    pub fn done(self) -> Duration {
        let took = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != Mode::Quiet {
            eprintln!("gmemconf image: {} done in {:.1} s", self.name, took.as_secs_f64());
        }
        took
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
