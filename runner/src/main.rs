fn main() -> std::process::ExitCode {
    gmemconf::cli::main()
}
