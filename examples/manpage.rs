//! Writes the man pages, generated from the command line's clap definitions (`cli.rs`):
//! `passerelle.1` and one page per subcommand (`passerelle-run.1`,
//! `passerelle-policy-install.1`, ...). `scripts/package` runs it before `cargo deb`.
//!
//! Usage: `cargo run --release --example manpage -- OUT_DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use passerelle::cli::Cli;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: manpage OUT_DIR");
        return ExitCode::from(64);
    };
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(Cli::command(), &dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("manpage: writing to {}: {error}", dir.display());
            ExitCode::FAILURE
        }
    }
}
