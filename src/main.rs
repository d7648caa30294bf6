use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(rolltest::cli::main())
}
