//! `havctl`: see `havctl --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = havctl::commands::Cli::parse();
    match havctl::commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("havctl: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
