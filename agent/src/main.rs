//! The `infra-agent` binary: parse flags, run the command, map the result to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = infra_agent::cli::parse();
    match infra_agent::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            ExitCode::from(infra_agent::cli::exit::INVALID)
        }
    }
}
