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
    /// For journald (the systemd unit's choice): each line starts with its syslog
    /// priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), without a
    /// timestamp, which journald adds.
    Journald,
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
    /// Make a policy signing key pair (`NAME.pub`, `NAME.key`) in minisign format.
    Keygen {
        /// Where to write the two files.
        #[arg(short, long, default_value = ".")]
        dir: PathBuf,
        /// Base name of the files.
        #[arg(short, long)]
        name: String,
        /// Encrypt the secret key with the password in this file; without it the
        /// secret key is written unencrypted (mode 0600): keep it offline.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Sign, verify and show policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the SNCF -> CSU chain of the Metz topology on loopback: a camera simulator,
    /// both gateways, fresh certificates and signed policies. Prints the URLs to open.
    Demo {
        /// Where to write certificates, policies, configurations and logs (default: a
        /// new directory under the system's temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Let the system choose every port instead of the fixed ones (8554 for the
        /// CSU's RTSP, ...), for tests or a machine where those are taken.
        #[arg(long)]
        ephemeral_ports: bool,
        /// Write the CSU's and the SNCF's listener addresses there as JSON once ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Serve the built-in video fixtures as live RTSP cameras (a camera simulator for
    /// tests and demonstrations).
    Camsim {
        /// Where RTSP listens.
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: std::net::SocketAddr,
        /// Server ports for RTP over UDP, FIRST-LAST.
        #[arg(long, default_value = "32000-32999")]
        udp_ports: String,
        /// The account the cameras accept, as USER:PASSWORD.
        #[arg(long, default_value = "admin:admin")]
        user: String,
        /// A camera as ID=FIXTURE (fixtures: h264-main, h264-baseline, h265-main);
        /// repeat for several. Default: the SNCF station cameras of the Metz topology.
        #[arg(long = "camera")]
        cameras: Vec<crate::camsim::SimulatedCamera>,
        /// Write the bound address there as JSON once ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Read the access journal: verify its chain, show records, export the register.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make development certificates (a CA per organisation, a certificate per site).
    #[command(subcommand)]
    Pki(PkiCommand),
}

/// `passerelle pki ...`: development certificates with the profile links require.
/// Production sites use their organisation's PKI with the same profile.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Make a CA: `NAME-ca.pem` and `NAME-ca.key` (mode 0600).
    Init {
        /// Where to write the files.
        #[arg(short, long, default_value = ".")]
        dir: PathBuf,
        /// The CA's name, usually the organisation's.
        #[arg(short, long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a site certificate: the site id as its only DNS name, serverAuth and
    /// clientAuth; writes `SITE.pem` and `SITE.key` (mode 0600).
    Issue {
        /// The CA certificate.
        #[arg(long)]
        ca_cert: PathBuf,
        /// The CA key.
        #[arg(long)]
        ca_key: PathBuf,
        /// The site id (a DNS name, such as csu.metz.example).
        #[arg(long)]
        site: String,
        /// Where to write the files.
        #[arg(short, long, default_value = ".")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// `passerelle policy ...`: the signed-policy tools, interoperable with `minisign`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Sign a policy file: writes `policy.toml.minisig`, or
    /// `policy.toml.<signer>.minisig` with `--signer`, as `minisign -S` would.
    Sign {
        /// The policy file.
        policy: PathBuf,
        /// The secret key (`passerelle keygen` or `minisign -G`).
        #[arg(short = 's', long)]
        key: PathBuf,
        /// A file holding the key's password, if it is encrypted.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Name this signature (for k-of-n signing by several people).
        #[arg(long)]
        signer: Option<String>,
    },
    /// Verify a policy's signatures against trusted public keys and print it.
    Verify {
        /// The policy file; its signature files are found next to it.
        policy: PathBuf,
        /// A trusted public key file (repeat for several).
        #[arg(short = 'p', long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// How many distinct trusted keys must have signed.
        #[arg(short = 'k', long, default_value_t = 1)]
        signatures_required: usize,
    },
    /// Verify a policy and its signatures in DIR, then swap them in atomically where
    /// the configuration reads its policy; a SIGHUP applies it without dropping streams.
    Install {
        /// The directory holding `policy.toml` and its `.minisig` files.
        dir: PathBuf,
        /// The gateway's configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a policy's grants without checking signatures.
    Show {
        /// The policy file.
        policy: PathBuf,
    },
}

/// `passerelle audit ...`: the access journal, as an auditor reads it.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the signed checkpoints; name the first edited, removed
    /// or reordered record. Exit 0 intact, 1 otherwise.
    Verify {
        /// The journal directory (`[audit] dir`).
        dir: PathBuf,
        /// The journal's public key (minisign format).
        #[arg(short = 'p', long)]
        key: PathBuf,
    },
    /// Print the records matching every filter given, as JSON Lines.
    Show {
        /// The journal directory.
        dir: PathBuf,
        /// Cameras matching this pattern (`*` one segment, `**` any depth).
        #[arg(long)]
        camera: Option<String>,
        /// A partner site.
        #[arg(long)]
        partner: Option<String>,
        /// An agent.
        #[arg(long)]
        agent: Option<String>,
        /// An intervention id.
        #[arg(long)]
        intervention: Option<String>,
        /// Records at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<jiff::Timestamp>,
        /// Records before this time (RFC 3339).
        #[arg(long)]
        until: Option<jiff::Timestamp>,
    },
    /// Write the access register: one row per viewing session.
    Export {
        /// The journal directory.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
}

/// Formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header row.
    Csv,
}
