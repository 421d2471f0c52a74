//! The `stevedore` command: serve (the default), validate a configuration, and maintenance.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use stevedore::config::{Config, ProcessEnv, Secret};
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
    /// Manage auth.builtin's users (works with the server stopped, or through its
    /// http.debug.addr while it runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage auth.builtin's roles and their rules (server stopped, or through its
    /// http.debug.addr while it runs).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Delete pushed blobs that no manifest references any more (as distribution's
    /// garbage-collect). Safe while the server runs: it then asks the server (through
    /// http.debug.addr) to collect, sparing uploads in progress and blobs being read.
    /// With storage.s3 it works on the shared bucket while the replicas serve, holding the
    /// bucket's lease (exit status 75 when another run holds it): unreferenced pushed blobs
    /// go two-phase (recorded at one run, deleted at a later one after
    /// storage.maintenance.gc.grace), and cached content over proxy.maxsize / proxy.ttl
    /// least recently used first, by the replicas' access records.
    #[command(alias = "garbage-collect")]
    Gc {
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests that no tag reaches.
        #[arg(long, short = 'm')]
        delete_untagged: bool,
        /// Keep blobs created or used more recently than this (default 10m when the server
        /// is running, 0s when it is not; with storage.s3, storage.maintenance.gc.grace).
        #[arg(long)]
        grace: Option<String>,
        config: PathBuf,
    },
    /// With storage.s3: evict cached content of the shared bucket over proxy.maxsize (and
    /// unused for proxy.ttl), least recently used first by the replicas' access records,
    /// holding the bucket's lease (exit status 75 when another run holds it). Pushed
    /// content is never touched. (A filesystem store's server evicts by itself.)
    Evict {
        /// Report what would be evicted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        config: PathBuf,
    },
    /// Fetch the images of a warm list into a running server's cache now (through
    /// http.debug.addr); prints one line per image and a summary. Exits 1 when any failed.
    Warm {
        /// The warm list: `[REGISTRY/]REPO(:TAG|@DIGEST) [OS/ARCH,…]` a line, `#` comments.
        file: PathBuf,
        /// The server's configuration (for http.debug.addr and http.debug.token).
        #[arg(long, env = "REGISTRY_CONFIGURATION_PATH")]
        config: PathBuf,
        /// The debug listener to ask, when not http.debug.addr (e.g. that says port 0).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Write listed images (their listed platforms, and their referrers) from this registry's
    /// content to an OCI image-layout tar (`skopeo copy oci-archive:FILE:REPO:TAG …` reads
    /// it). Asks the running server through http.debug.addr, or works on the store when the
    /// server is stopped.
    Export {
        /// Image list: `REPO:TAG` or `REPO@DIGEST` per line, optionally followed by platforms
        /// (`linux/amd64,linux/arm64`); `#` comments.
        #[arg(long)]
        list: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// The other side's previous bundle (or its index.json): leave out the blobs it had.
        #[arg(long)]
        since: Option<PathBuf>,
        config: PathBuf,
    },
    /// Verify every blob of a bundle written by `export` (or any OCI image-layout tar whose
    /// index.json names REPO:TAG), then serve its images as cached content.
    Import {
        /// Adopt the content as pushed (kept until deleted) rather than cached.
        #[arg(long)]
        as_pushed: bool,
        bundle: PathBuf,
        config: PathBuf,
    },
    /// Drop the cached content of one image (REPO:TAG) or repository (REPO) at once: tags,
    /// manifests, and blobs nothing else references.
    Purge {
        /// Also purge pushed tags and manifests.
        #[arg(long)]
        pushed: bool,
        image: String,
        config: PathBuf,
    },
    /// Re-hash every stored blob; report (and with --quarantine move aside) those whose bytes
    /// do not match their digest. Exits 1 when any is corrupt.
    Verify {
        #[arg(long)]
        quarantine: bool,
        config: PathBuf,
    },
}

/// Where `user` and `role` find the registry.
#[derive(clap::Args)]
struct AccountsTarget {
    /// The registry's configuration (its storage root; http.debug.addr and http.debug.token to
    /// reach it while it runs).
    #[arg(long, env = "REGISTRY_CONFIGURATION_PATH")]
    config: PathBuf,
    /// The debug listener to ask while the server runs, when not http.debug.addr (e.g. that
    /// says port 0).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from --password-file or the first line of stdin.
    Add {
        name: String,
        /// A role to give (repeatable): read-all, write-all, admin or a custom role.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Set a user's password (from --password-file or the first line of stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Delete a user.
    Del {
        name: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// List users: `NAME<TAB>ROLE,ROLE` per line.
    List {
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Give a user a role.
    Grant {
        name: String,
        role: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Take a role from a user.
    Revoke {
        name: String,
        role: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
}

#[derive(Subcommand)]
enum RoleCommand {
    /// Add a custom role (with no rules).
    Add {
        name: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Delete a custom role nobody holds.
    Del {
        name: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// List roles: `NAME<TAB>KIND<TAB>GLOB=ACTIONS …` per line.
    List {
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Let a role do ACTIONS (pull,push,delete or *) on the repositories matching GLOB
    /// (`*` matches any characters, `/` included); replaces the role's rule for GLOB. The
    /// role `anonymous` (requests without credentials) may only be granted pull.
    Grant {
        role: String,
        glob: String,
        actions: String,
        #[command(flatten)]
        target: AccountsTarget,
    },
    /// Remove a role's rule for GLOB.
    Revoke {
        role: String,
        glob: String,
        #[command(flatten)]
        target: AccountsTarget,
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
        Command::Gc {
            dry_run,
            delete_untagged,
            grace,
            config,
        } => gc(config, dry_run, delete_untagged, grace),
        Command::Evict { dry_run, config } => {
            bucket_job(config, stevedore::maintenance::Job::Evict, dry_run, None)
        }
        Command::Verify { quarantine, config } => verify(config, quarantine),
        Command::User { command } => user(command),
        Command::Role { command } => role(command),
        Command::Warm { file, config, addr } => warm(file, config, addr),
        Command::Export {
            list,
            output,
            since,
            config,
        } => content(&config, "export", |c| {
            use stevedore::http::debug::content::{absolute, export, with_query};
            let (list, output, since) = (
                absolute(&list),
                absolute(&output),
                since.map(|s| absolute(&s)),
            );
            let mut q = vec![
                ("list", list.to_string_lossy().into_owned()),
                ("output", output.to_string_lossy().into_owned()),
            ];
            q.extend(
                since
                    .iter()
                    .map(|s| ("since", s.to_string_lossy().into_owned())),
            );
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let request = with_query("/debug/export", &q);
            Box::pin(stevedore::http::debug::content::offline_or_server(
                c,
                request,
                move |app| async move { export(&app, &list, &output, since.as_deref()).await },
            ))
        }),
        Command::Import {
            as_pushed,
            bundle,
            config,
        } => content(&config, "import", |c| {
            use stevedore::http::debug::content::{absolute, import, with_query};
            let bundle = absolute(&bundle);
            let pushed = as_pushed.to_string();
            let request = with_query(
                "/debug/import",
                &[("bundle", &bundle.to_string_lossy()), ("pushed", &pushed)],
            );
            Box::pin(stevedore::http::debug::content::offline_or_server(
                c,
                request,
                move |app| async move { import(&app, &bundle, as_pushed).await },
            ))
        }),
        Command::Purge {
            pushed,
            image,
            config,
        } => content(&config, "purge", |c| {
            use stevedore::http::debug::content::{purge, with_query};
            let request = with_query(
                "/debug/purge",
                &[("image", &image), ("pushed", &pushed.to_string())],
            );
            Box::pin(stevedore::http::debug::content::offline_or_server(
                c,
                request,
                move |app| async move { purge(&app, &image, pushed).await },
            ))
        }),
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

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(Some(path), &ProcessEnv).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

/// `--grace`, parsed; exit status 2 when it does not parse.
fn parse_grace(grace: Option<&str>) -> Result<Option<std::time::Duration>, ExitCode> {
    match grace.map(stevedore::config::units::parse_duration) {
        None => Ok(None),
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(e)) => {
            eprintln!("stevedore gc: --grace: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `stevedore gc` / `evict` on a shared bucket: one run of the job, its JSON report on
/// stdout. Exit status 75 (EX_TEMPFAIL) when another run holds the bucket's lease.
fn bucket_job(
    config: PathBuf,
    job: stevedore::maintenance::Job,
    dry_run: bool,
    grace: Option<String>,
) -> ExitCode {
    let name = match job {
        stevedore::maintenance::Job::Gc => "gc",
        stevedore::maintenance::Job::Evict => "evict",
    };
    let config = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    let grace = match parse_grace(grace.as_deref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    if config.storage.s3.is_none() {
        eprintln!(
            "stevedore {name}: storage.s3 is not configured (a filesystem store's server evicts by itself; `stevedore gc` collects it)"
        );
        return ExitCode::from(2);
    }
    let result = runtime().block_on(stevedore::maintenance::run_command(
        &config, job, dry_run, grace,
    ));
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("report serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.lease_held() => {
            eprintln!("stevedore {name}: {e}");
            ExitCode::from(75)
        }
        Err(e) => {
            eprintln!("stevedore {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gc(path: PathBuf, dry_run: bool, delete_untagged: bool, grace: Option<String>) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.storage.s3.is_some() {
        if delete_untagged {
            eprintln!(
                "stevedore gc: --delete-untagged is not supported on storage.s3 yet (delete manifests through the API)"
            );
            return ExitCode::from(2);
        }
        drop(config);
        return bucket_job(path, stevedore::maintenance::Job::Gc, dry_run, grace);
    }
    init_logging(&config);
    let grace = match parse_grace(grace.as_deref()) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let debug_addr = config.http.debug.addr;
    let token = config.http.debug.token.clone();
    let result = runtime().block_on(async move {
        let metrics = Arc::new(Metrics::new());
        // Opens the index before any file: with the server running this fails on its lock
        // having touched nothing, and the server is asked instead.
        match stevedore::App::open_offline(config, metrics).await {
            Ok(app) => {
                let options = stevedore::lifecycle::GcOptions {
                    dry_run,
                    delete_untagged,
                    grace: grace.unwrap_or_default(),
                };
                app.gc(&options)
                    .await
                    .map(|r| serde_json::to_string(&r).expect("report serializes"))
                    .map_err(|e| e.to_string())
            }
            // The index is held by a running server: ask it.
            Err(stevedore::StartError::Index {
                source: source @ stevedore::index::IndexError::Locked(_),
                ..
            }) => match debug_addr {
                Some(addr) => {
                    let grace = grace.map(|g| format!("{}s", g.as_secs())).unwrap_or_else(|| "10m".into());
                    let query = format!("dryrun={dry_run}&untagged={delete_untagged}&grace={grace}");
                    stevedore::http::debug::request_gc(addr, token.as_ref().map(Secret::expose), &query).await
                }
                None => Err(format!(
                    "{source} (is the server running? set http.debug.addr so gc can ask it, or stop it)"
                )),
            },
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stevedore gc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn warm(file: PathBuf, config: PathBuf, addr: Option<std::net::SocketAddr>) -> ExitCode {
    let config = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let list = match std::fs::read_to_string(&file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stevedore warm: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    // Checked here too, so a typo is reported before any server is asked.
    if let Err(e) = stevedore::oci::image_list::parse_list(&list) {
        eprintln!("stevedore warm: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    let Some(addr) = addr.or(config.http.debug.addr) else {
        eprintln!("stevedore warm: the configuration sets no http.debug.addr to reach the server");
        return ExitCode::from(2);
    };
    let token = config.http.debug.token.clone();
    let asked = runtime().block_on(stevedore::http::debug_warm::request_warm(
        addr,
        token.as_ref().map(Secret::expose),
        list,
    ));
    match asked {
        Ok(report) => {
            print!("{}", stevedore::mirror::warm::summary(&report));
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("stevedore warm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an export, import or purge (`run` builds it from the configuration); prints its JSON
/// report.
fn content(
    config: &std::path::Path,
    name: &str,
    run: impl FnOnce(
        Config,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>>>>,
) -> ExitCode {
    let config = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    match runtime().block_on(run(config)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stevedore {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(config: PathBuf, quarantine: bool) -> ExitCode {
    let config = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    if config.storage.s3.is_some() {
        eprintln!(
            "stevedore verify: reads storage.filesystem only; with storage.s3 the store checks each object's digest as it is written"
        );
        return ExitCode::from(2);
    }
    let root = config.storage.filesystem.rootdirectory.clone();
    match runtime().block_on(stevedore::lifecycle::verify::verify(&root, quarantine)) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("report serializes")
            );
            if report.corrupt.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("stevedore verify: {}: {e}", root.display());
            ExitCode::FAILURE
        }
    }
}

use stevedore::auth::builtin::manage::{self, AccountOp};

/// A new password: the first line of `file`, or of stdin; hashed here, so the plain text
/// never leaves this process.
fn new_password_hash(file: Option<&std::path::Path>) -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _};
    let line = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("password: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    manage::hash_password(&line).map_err(|e| e.to_string())
}

fn user(command: UserCommand) -> ExitCode {
    let (target, op) = match command {
        UserCommand::Add {
            name,
            roles,
            password_file,
            target,
        } => match new_password_hash(password_file.as_deref()) {
            Ok(hash) => (target, AccountOp::UserAdd { name, hash, roles }),
            Err(e) => return fail("user add", &e),
        },
        UserCommand::Passwd {
            name,
            password_file,
            target,
        } => match new_password_hash(password_file.as_deref()) {
            Ok(hash) => (target, AccountOp::UserPasswd { name, hash }),
            Err(e) => return fail("user passwd", &e),
        },
        UserCommand::Del { name, target } => (target, AccountOp::UserDel { name }),
        UserCommand::List { target } => (target, AccountOp::UserList),
        UserCommand::Grant { name, role, target } => (target, AccountOp::UserGrant { name, role }),
        UserCommand::Revoke { name, role, target } => {
            (target, AccountOp::UserRevoke { name, role })
        }
    };
    accounts(&target, &op)
}

fn role(command: RoleCommand) -> ExitCode {
    let (target, op) = match command {
        RoleCommand::Add { name, target } => (target, AccountOp::RoleAdd { name }),
        RoleCommand::Del { name, target } => (target, AccountOp::RoleDel { name }),
        RoleCommand::List { target } => (target, AccountOp::RoleList),
        RoleCommand::Grant {
            role,
            glob,
            actions,
            target,
        } => (
            target,
            AccountOp::RoleGrant {
                name: role,
                repository: glob,
                actions,
            },
        ),
        RoleCommand::Revoke { role, glob, target } => (
            target,
            AccountOp::RoleRevoke {
                name: role,
                repository: glob,
            },
        ),
    };
    accounts(&target, &op)
}

fn fail(what: &str, e: &str) -> ExitCode {
    eprintln!("stevedore {what}: {e}");
    ExitCode::FAILURE
}

/// Applies `op` to the index under the configuration's storage root, or, when a running
/// server holds it, asks that server through its debug listener.
fn accounts(target: &AccountsTarget, op: &AccountOp) -> ExitCode {
    let config = match load(&target.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if config.auth.builtin.is_none() {
        eprintln!(
            "note: auth.builtin is not configured: these users and roles take effect once it is"
        );
    }
    let path = config.storage.filesystem.rootdirectory.join("index");
    let result = match stevedore::index::Index::open(&path) {
        Ok(index) => manage::apply(&index, op).map_err(|e| e.to_string()),
        Err(source @ stevedore::index::IndexError::Locked(_)) => match target
            .addr
            .or(config.http.debug.addr)
            .filter(|a| a.port() != 0)
        {
            Some(addr) => runtime().block_on(stevedore::http::debug_accounts::request_accounts(
                addr,
                config.http.debug.token.as_ref().map(Secret::expose),
                op,
            )),
            None => Err(format!(
                "{source} (set http.debug.addr so this command can ask the running server, or stop it)"
            )),
        },
        Err(e) => Err(format!("index at {}: {e}", path.display())),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stevedore: {}", e.trim_end());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    stevedore::logging::init(config);
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
    // Before "listening" is logged: a SIGTERM from then on is a graceful stop (drain,
    // notification flush), never the default action's abrupt exit.
    let shutdown = shutdown_signal();
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
        root = %config.storage.local_root().display(),
        s3 = config.storage.s3.as_ref().map(|s| s.bucket.as_str()).unwrap_or("none"),
        upstream = config.proxy.remoteurl.as_deref().unwrap_or("none"),
        tls = config.http.tls.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "stevedore listening"
    );
    let app = stevedore::App::open(config, metrics).await?;
    if let Some(tls) = app.tls.clone() {
        // Registered before serving, so a SIGHUP never finds the default (terminating) action.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_tls_on_sighup(tls, hup));
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    stevedore::run(app, listener, debug_listener, shutdown).await;
    Ok(())
}

/// Reads the TLS certificate and key again on every SIGHUP (a bad pair keeps the old one).
async fn reload_tls_on_sighup(
    tls: Arc<stevedore::http::tls::ServerTls>,
    mut hup: tokio::signal::unix::Signal,
) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the TLS certificate");
        let _ = tls.reload();
    }
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed at the call, not at first poll.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            _ => std::future::pending().await,
        }
    }
}
