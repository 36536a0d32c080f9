//! `dingrec`: wiring only. The library does the work (see `dingrec::cli`).

use clap::Parser as _;

fn main() {
    let cli = dingrec::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dingrec: cannot start the async runtime: {e}");
            std::process::exit(dingrec::cli::EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(dingrec::cli::dispatch(cli));
    std::process::exit(code);
}
