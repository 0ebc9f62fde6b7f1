//! (c) Wall time of each suite, run as `gmemconf run` runs it (each case in its own process).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// (suite, seconds, cases) for each suite file given, or each built-in suite.
pub fn wall_times(exe: &Path, files: &[PathBuf]) -> Result<Vec<(String, f64, usize)>, String> {
    let sources = crate::run::suite_sources(files)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let mut out = Vec::new();
    for source in sources {
        let suite = crate::suite::load::load(&source).map_err(|e| format!("{e:?}"))?;
        let arg = match &source {
            crate::suite::Source::File(p) => p.display().to_string(),
            crate::suite::Source::Embedded(_) => String::new(),
        };
        let mut cmd = Command::new(exe);
        cmd.arg("run").stdout(Stdio::null()).stderr(Stdio::null());
        if arg.is_empty() {
            cmd.args(["-f", &format!("{}::", suite.name)]);
        } else {
            cmd.arg(&arg);
        }
        let start = Instant::now();
        cmd.status().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        out.push((suite.name.clone(), start.elapsed().as_secs_f64(), suite.cases.len()));
    }
    Ok(out)
}
