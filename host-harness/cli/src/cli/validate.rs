//! `host-harness validate`: exit 0 when the filter accepts its configuration; otherwise exit 1 with one line
//! that carries the filter's own error (like `envoy --mode validate`, for CI pipelines).

use std::process::ExitCode;

use clap::Args;

use super::FilterArgs;

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The filter and its configuration.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Starts one VM with the configuration and reports the verdict.
pub fn run(args: &ValidateArgs) -> ExitCode {
    match args.filter.start_vm() {
        Ok(_) => {
            println!(
                "{}: configuration accepted by {}",
                args.filter.config.display(),
                args.filter.filter_path().display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", super::one_line(&err));
            ExitCode::from(1)
        }
    }
}
