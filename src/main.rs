//! The `mtls-shield` binary: parse the command line and print one clear line on error.
use std::process::ExitCode;

// The one place the binary writes to stderr itself: the error line a failed command ends with.
#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    match mtls_shield::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mtls-shield: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
