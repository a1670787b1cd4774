//! `infra-stage`: the hosts of `inventory/staging.toml` as Docker containers that
//! converge the working tree of the state repository.

use clap::Parser;
use infra_bootstrap::Failure;
use infra_bootstrap::bootstrap::Usage;
use infra_bootstrap::stage::{self, Args};

fn print_hint(hint: Option<&str>) {
    if let Some(hint) = hint {
        for (i, line) in hint.lines().enumerate() {
            let lead = if i == 0 { "hint: " } else { "      " };
            eprintln!("{lead}{line}");
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let _ = err.print();
            return std::process::ExitCode::from(64);
        }
    };
    match stage::run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(err) => {
            let (code, failure) = if let Some(Usage(f)) = err.downcast_ref::<Usage>() {
                (64, Some(f))
            } else {
                (1, err.downcast_ref::<Failure>())
            };
            if let Some(f) = failure {
                eprintln!("error: {}", f.message);
                print_hint(f.hint.as_deref());
            } else {
                eprintln!("error: {err}");
                for cause in err.chain().skip(1) {
                    eprintln!("Caused by: {cause}");
                }
            }
            std::process::ExitCode::from(code)
        }
    }
}
