//! The `mtls-shield` binary: parse the command line and print one clear line on error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match mtls_shield::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mtls-shield: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
