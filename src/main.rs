//! The `stevedore` command: serve (the default), validate a configuration, and maintenance.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use stevedore::config::{Config, LogFormat, ProcessEnv};
use stevedore::metrics::Metrics;

#[derive(Parser)]
#[command(
    name = "stevedore",
    version,
    about = "A pull-through caching container registry mirror (Docker Registry V2 / OCI Distribution).",
    long_about = "With no arguments, serves a Docker Hub mirror on 0.0.0.0:5000 with data under ./data.\n\
                  REGISTRY_* environment variables override configuration keys as in distribution \
                  (e.g. REGISTRY_HTTP_ADDR, REGISTRY_STORAGE_DELETE_ENABLED)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry (with a distribution-style config.yml, or the default mirror).
    Serve {
        /// Configuration file; also read from REGISTRY_CONFIGURATION_PATH.
        #[arg(env = "REGISTRY_CONFIGURATION_PATH")]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the REGISTRY_* overrides) without serving.
    Check { config: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match Config::load(Some(&config), &ProcessEnv) {
            Ok(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STEVEDORE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sled=warn", config.log.level.as_str())));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.formatter {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            let what = path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "default configuration".into());
            eprintln!("stevedore: {what}: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stevedore: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_async(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("stevedore: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(config: Config) -> Result<(), stevedore::StartError> {
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| stevedore::StartError::Bind {
                addr: addr.to_string(),
                source,
            })
    };
    let listener = bind(config.http.addr).await?;
    let debug_listener = match config.http.debug.addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let local =
        |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        addr = %local(&listener),
        debug = debug_listener.as_ref().map(local).unwrap_or_default(),
        root = %config.storage.filesystem.rootdirectory.display(),
        upstream = config.proxy.remoteurl.as_deref().unwrap_or("none"),
        version = env!("CARGO_PKG_VERSION"),
        "stevedore listening"
    );
    let app = stevedore::App::open(config, metrics).await?;
    stevedore::run(app, listener, debug_listener, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
