//! The `roomcast` command line: serve, usersig gen|verify, profile check, status.

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
    /// Print a running gateway's live status (JSON), signed with an API credential.
    Status {
        /// What to show.
        #[arg(value_enum, default_value_t = StatusPart::All)]
        part: StatusPart,
        /// The gateway's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// API credential (also ROOMCAST_SECRET_ID / ROOMCAST_SECRET_KEY).
        #[arg(long, env = "ROOMCAST_SECRET_ID")]
        secret_id: String,
        #[arg(long, env = "ROOMCAST_SECRET_KEY", hide_env_values = true)]
        secret_key: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusPart {
    All,
    Node,
    Rooms,
    Tasks,
    Ingests,
    Recordings,
    Cluster,
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
            roomcast::media::tune_allocator();
            init_logging(cli.log_format);
            roomcast::panics::install();
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
        Command::Status {
            part,
            http,
            secret_id,
            secret_key,
        } => match status(part, &http, &secret_id, &secret_key) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("roomcast status: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// One signed GET of the status API over plain HTTP/1.1; the body if 200.
fn status(
    part: StatusPart,
    http: &str,
    secret_id: &str,
    secret_key: &str,
) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let path = match part {
        StatusPart::All => "/v1/status",
        StatusPart::Node => "/v1/status/node",
        StatusPart::Rooms => "/v1/status/rooms",
        StatusPart::Tasks => "/v1/status/tasks",
        StatusPart::Ingests => "/v1/status/ingests",
        StatusPart::Recordings => "/v1/status/recordings",
        StatusPart::Cluster => "/v1/status/cluster",
    };
    let host = http.trim_start_matches("http://").trim_end_matches('/');
    let now = roomcast::unix_now();
    let auth = roomcast::auth::tc3::authorization_for(
        secret_id,
        secret_key,
        now,
        host,
        ("GET", path, ""),
        "application/json",
        b"",
    );
    let mut s = std::net::TcpStream::connect(host).with_context(|| format!("connect to {host}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nX-TC-Timestamp: {now}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    let code = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(code == "200", "HTTP {code}: {}", body.trim());
    Ok(body.to_owned())
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    // libav's own chatter (encoder statistics) stays out of the gateway's log.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    let mut cfg = Config::load(config.as_deref()).context("configuration")?;
    ask_for_huge_pages(cfg.runtime.huge_pages());
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.runtime.io_threads())
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(roomcast::server::run(cfg, profiles))?;
    Ok(())
}

/// Asks glibc's allocator for transparent huge pages, as
/// `media::huge_pages` plans: by starting this process again (the same
/// process id, arguments and descriptors) with `GLIBC_TUNABLES` set, which
/// only returns if that failed. Runs before any thread or socket starts.
fn ask_for_huge_pages(wanted: bool) {
    use roomcast::media::huge_pages::{Keep, Plan, plan};
    let kernel = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    let preload = std::env::var("LD_PRELOAD").ok();
    match plan(
        wanted,
        kernel.as_deref(),
        tunables.as_deref(),
        preload.as_deref(),
    ) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        Plan::Restart { tunables } => {
            use std::os::unix::process::CommandExt;
            tracing::info!(
                "memory: starting again with GLIBC_TUNABLES={tunables} (runtime.huge_pages)"
            );
            let mut args = std::env::args_os();
            let err = std::process::Command::new("/proc/self/exe")
                .arg0(args.next().unwrap_or_default())
                .args(args)
                .env("GLIBC_TUNABLES", &tunables)
                .exec();
            tracing::warn!("memory: could not start again ({err}); going on without huge pages");
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        Plan::Restart { .. } => {
            tracing::info!(
                huge_pages = false,
                "memory: this build's C library has no huge-page tunable"
            );
        }
        Plan::Keep(why) => {
            let on = matches!(why, Keep::AlreadySet(true) | Keep::KernelAlways);
            tracing::info!(huge_pages = on, "memory: {why}");
        }
    }
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
