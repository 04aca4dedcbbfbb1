//! The `ferrolvm` binary: lvm-compatible commands.

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FERROLVM_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = ferrolvm::cli::Cli::parse();
    if let Err(e) = ferrolvm::cli::run(cli) {
        eprintln!("  {e}");
        std::process::exit(e.exit_code());
    }
}
