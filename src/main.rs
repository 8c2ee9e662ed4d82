//! The `roomcast` command line: serve, usersig gen|verify, profile check.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use roomcast::auth::usersig::{self, PrivateMapKey, UserBufCheck};
use roomcast::config::Config;
use roomcast::profile;

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "CDN relay and transcoding gateway for real-time rooms"
)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (no file needed: embedded defaults).
    Serve {
        /// Configuration file (default: ./roomcast.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Generate or verify a UserSig (TLS-Sig-API v2).
    Usersig {
        #[command(subcommand)]
        command: UsersigCommand,
    },
    /// Validate relay profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
}

#[derive(Subcommand)]
enum UsersigCommand {
    /// Print a UserSig alone on stdout.
    Gen {
        #[arg(long)]
        sdkappid: u64,
        #[arg(long)]
        key: String,
        #[arg(long)]
        userid: String,
        /// Validity in seconds (default 180 days).
        #[arg(long, default_value_t = usersig::DEFAULT_EXPIRE_SECS)]
        expire: u64,
    },
    /// Exit 0 and print the decoded fields if valid; exit 1 with the reason otherwise.
    Verify {
        #[arg(long)]
        sdkappid: u64,
        #[arg(long)]
        key: String,
        #[arg(long)]
        userid: String,
        #[arg(long)]
        sig: String,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Validate profile files; exit 1 with `file:line: field: reason` lines.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            init_logging(cli.log_format);
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Usersig { command } => usersig_cmd(command),
        Command::Profile {
            command: ProfileCommand::Check { files },
        } => profile_check(&files),
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    // libav's own chatter (encoder statistics) stays out of the gateway's log.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    let mut cfg = Config::load(config.as_deref()).context("configuration")?;
    if let Some(dev) = cfg
        .ensure_dev_credentials()
        .context("development credentials")?
    {
        let app = &cfg.apps[0];
        tracing::warn!(
            file = %dev.path.display(),
            created = dev.created,
            "no [[apps]] or [[api.credentials]] configured: using development credentials"
        );
        tracing::info!(
            "try: roomcast usersig gen --sdkappid {} --key {} --userid alice",
            app.sdkappid,
            app.secret_key
        );
    }
    let profiles = match profile::load_all(Some(&cfg.profiles_dir)) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                tracing::error!("profile: {e}");
            }
            anyhow::bail!("{} invalid relay profile(s)", errors.len());
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(roomcast::server::run(cfg, profiles))?;
    Ok(())
}

fn usersig_cmd(cmd: UsersigCommand) -> ExitCode {
    match cmd {
        UsersigCommand::Gen {
            sdkappid,
            key,
            userid,
            expire,
        } => {
            println!(
                "{}",
                usersig::generate(sdkappid, &key, &userid, expire, roomcast::unix_now(), None)
            );
            ExitCode::SUCCESS
        }
        UsersigCommand::Verify {
            sdkappid,
            key,
            userid,
            sig,
        } => match usersig::verify(
            &sig,
            sdkappid,
            &key,
            &userid,
            roomcast::unix_now(),
            UserBufCheck::Any,
        ) {
            Ok(doc) => {
                println!("identifier: {}", doc.identifier);
                println!("sdkappid: {}", doc.sdkappid);
                println!("time: {}", doc.time);
                println!("expire: {} (until {})", doc.expire, doc.expires_at());
                if let Some(buf) = &doc.userbuf {
                    println!("userbuf: {}", hex_string(buf));
                    if let Ok(pmk) = PrivateMapKey::parse(buf) {
                        println!("privatemapkey: {pmk:?}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("invalid: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn profile_check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        match profile::load_file(f) {
            Ok(p) => println!("{}: ok ({})", f.display(), p.name),
            Err(e) => {
                println!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
