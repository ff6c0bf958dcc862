//! The command line: one binary, one subcommand per job.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// passerelle: share live camera streams between organisations under signed conventions.
#[derive(Debug, Parser)]
#[command(name = "passerelle", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PASSERELLE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. It always starts, even with a missing or refused policy:
    /// then nothing crosses the boundary but local viewing works.
    Run {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Write the bound listener addresses there as JSON once ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check a configuration (exit 64 if bad) and its policy (exit 65 if refused),
    /// and print the effective grants.
    Check {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Check the configuration only, not the policy.
        #[arg(long)]
        config_only: bool,
    },
}
