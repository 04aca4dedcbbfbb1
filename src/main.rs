//! The `ferrolvm` binary: lvm-compatible commands.

use clap::Parser;

/// One malloc arena for the whole process (glibc builds): each blocking
/// thread otherwise gets its own arena, and with 30 concurrent lvmd calls
/// those held 12.1 of a 19.4 MiB peak; with one, the peak was 12.3 MiB
/// and the 30 creates no slower (README, "The node level"). An operator's
/// own `MALLOC_ARENA_MAX` wins. musl's allocator has no arenas.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt before any thread exists; it only sets a limit.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn main() {
    one_malloc_arena();
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
