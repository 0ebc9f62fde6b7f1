//! The built-in suites as a libtest harness, so that `cargo test` and `cargo nextest run` list
//! and run every case (each in its own process, on this host's /dev/kvm).

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    gmemconf::cli::harness_main(args, std::path::PathBuf::from(env!("CARGO_BIN_EXE_gmemconf")))
}
