//! `callgate run [--config FILE]` and `callgate check-config [--config FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use callgate::config::{Config, ConfigSource};
use clap::{Parser, Subcommand};

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for bad input data (EX_DATAERR).
const EXIT_DATA: u8 = 65;
const DEFAULT_CONFIG: &str = "config/callgate.toml";

#[derive(Parser)]
#[command(name = "callgate", version, about = "Telephony gateway between a cloud PBX and Bitrix24 CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(ConfigArg),
    /// Validate the configuration (file + CALLGATE__* environment) and exit: 0 ok, 64 errors.
    CheckConfig(ConfigArg),
    /// Import personal managers (CSV `number,user_id`) into the store's index snapshot; a
    /// running callgate sees them after a restart (use POST /api/v1/portals/{id}/index live).
    ImportIndex {
        #[command(flatten)]
        config: ConfigArg,
        /// Portal id.
        #[arg(long)]
        portal: i64,
        /// Replace the portal's whole index instead of adding to it.
        #[arg(long)]
        replace: bool,
        /// The CSV file.
        file: PathBuf,
    },
    /// Make a development certificate: a throw-away CA (`ca.pem`) and a server certificate
    /// signed by it (`cert.pem`, `key.pem`) for `sip.tls_cert`/`http.tls_cert` (see certs/README.md).
    GenCert {
        /// Folder to write into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Names and addresses the certificate is for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file (default: config/callgate.toml; missing default file = built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let (path, required) = match &arg.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    ConfigSource::from_process(&path, required).and_then(|src| Config::load(&src)).map_err(|errs| {
        eprint!("{errs}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(arg) => match load(&arg) {
            Ok(_) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::GenCert { out, names } => match callgate::tls::write_dev_pki(&out, &names) {
            Ok(()) => {
                println!("wrote {0}/ca.pem, {0}/cert.pem, {0}/key.pem for {1}", out.display(), names.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gen-cert failed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::ImportIndex { config, portal, replace, file } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            match callgate::app::import_index(&cfg, portal, &file, replace) {
                Ok(n) => {
                    println!("imported {n} rows into portal {portal}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("import failed: {e:#}");
                    ExitCode::from(EXIT_DATA)
                }
            }
        }
        Command::Run(arg) => {
            let cfg = match load(&arg) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            callgate::telemetry::init(&cfg.log);
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(callgate::app::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "callgate failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
