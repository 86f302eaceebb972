//! `coverwatch`: serve, migrate, run the vendor sandbox alone, hash an API key, check its own
//! health, rotate the keys that seal secrets at rest, or operate a running server (`deliveries`,
//! `links`, `events`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coverwatch::auth::DevKey;
use coverwatch::config::Config;

#[derive(Parser)]
#[command(
    name = "coverwatch",
    version,
    about = "Monitor users' insurance policies through Axle and Canopy Connect behind one gRPC API"
)]
struct Cli {
    /// Configuration file; `COVERWATCH_*` environment variables override it.
    #[arg(
        long,
        global = true,
        default_value = "coverwatch.toml",
        env = "COVERWATCH_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC API, the webhook listener and the workers (migrations run first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Run only the Axle and Canopy simulators, on `sandbox_addr`.
    #[cfg(feature = "sandbox")]
    Sandbox,
    /// Print the SHA-256 of an API key, for `tenants[].api_key_sha256`.
    HashKey {
        /// The API key to hash.
        key: String,
    },
    /// GET this process's own webhook listener (`/readyz` by default) and exit 0 on `200`, 1
    /// otherwise: the container health check (the runtime image has no curl).
    Healthcheck {
        /// The path to ask for (`/healthz`: alive; `/readyz`: ready for work).
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
    },
    /// Manage the keys that seal secrets at rest (`encryption_keys`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    #[command(flatten)]
    Ops(coverwatch::cli::OpsCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every sealed value with the active (first) key of `encryption_keys`, while the
    /// service runs, in batches, printing progress. Afterwards the other keys can be removed.
    Rotate {
        /// Rows re-sealed per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
    },
}

/// `coverwatch keys rotate`: re-seal, report, and say which keys are no longer needed.
async fn rotate_keys(config: &Config, batch: u64) -> anyhow::Result<()> {
    let store = coverwatch::app::connect_store(config).await?;
    let active = store.active_key_id().to_owned();
    println!("re-sealing with key `{active}`, {batch} rows per transaction");
    let report = store
        .reseal_all(batch, |p| {
            println!(
                "{}: {}/{} checked, {} re-sealed",
                p.kind, p.checked, p.total, p.resealed
            );
        })
        .await
        .context("key rotation stopped (what was re-sealed so far stays re-sealed)")?;
    let by_key = store.sealed_key_ids().await?;
    store.close().await;
    let total: u64 = report.resealed.iter().map(|(_, n)| n).sum();
    if report.remaining > 0 {
        anyhow::bail!(
            "{} values changed while they were being re-sealed and still use another key; run `coverwatch keys rotate` again",
            report.remaining
        );
    }
    let retired: Vec<&str> = config
        .encryption_keys
        .iter()
        .map(|k| k.id.as_str())
        .filter(|id| *id != active)
        .collect();
    let sealed = by_key.values().sum::<u64>();
    println!("done: {total} values re-sealed; all {sealed} sealed values use key `{active}`");
    if !retired.is_empty() {
        println!(
            "no longer needed, and can be removed from encryption_keys: {}",
            retired.join(", ")
        );
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers at once and returns the wait for either. Installed
/// before the service listens and says it is ready: a handler installed only when the wait is
/// first polled left a window in which a supervisor's SIGTERM, sent as soon as the process
/// answered, killed it without a graceful shutdown.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt()).and_then(|interrupt| {
            signal(SignalKind::terminate()).map(|terminate| (interrupt, terminate))
        });
        async move {
            match handlers {
                Ok((mut interrupt, mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::HashKey { key } = &cli.command {
        println!("{}", coverwatch::auth::hash_key(key));
        return Ok(());
    }
    let cli = match cli.command {
        // A client of a running server: no logging set-up, and a failure is one line.
        Command::Ops(command) => {
            if let Err(error) = coverwatch::cli::run(command, &cli.config).await {
                eprintln!("coverwatch: {error}");
                std::process::exit(1);
            }
            return Ok(());
        }
        command => Cli { command, ..cli },
    };
    let config = Config::load(&cli.config)?;
    let telemetry = coverwatch::telemetry::init(&config)?;
    match cli.command {
        Command::HashKey { .. } | Command::Ops(_) => unreachable!("handled above"),
        Command::Healthcheck { path, timeout } => {
            match coverwatch::healthcheck::check(&config, &path, Duration::from_secs(timeout)).await
            {
                Ok(body) => println!("{body}"),
                Err(reason) => {
                    eprintln!("unhealthy: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Command::Keys {
            command: KeysCommand::Rotate { batch },
        } => rotate_keys(&config, batch).await?,
        Command::Migrate => {
            coverwatch::app::connect_store(&config).await?;
            tracing::info!("migrations applied");
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox => {
            let stop = stop_signal();
            let sandbox = coverwatch_sandbox::Sandbox::start(coverwatch_sandbox::SandboxConfig {
                addr: config.sandbox_addr,
                ..Default::default()
            })
            .await
            .context("cannot start the sandbox")?;
            println!(
                "sandbox on {}  (Axle API {}, Canopy API {}); ctrl-c to stop",
                sandbox.base_url(),
                sandbox.axle_base_url(),
                sandbox.canopy_base_url()
            );
            stop.await;
            sandbox.shutdown().await;
        }
        Command::Serve => {
            let (grpc_scheme, http_scheme) = (
                if config.grpc.tls.is_some() {
                    "TLS"
                } else {
                    "plaintext"
                },
                if config.http.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
            );
            let stop = stop_signal();
            let app = coverwatch::start(config, Default::default()).await?;
            match &app.dev_key {
                DevKey::Generated(key) => println!(
                    "\nNo tenants configured: development tenant `dev` with API key (shown once):\n  {key}\nCall with: authorization: Bearer {key}\n"
                ),
                DevKey::Configured => {
                    println!("No tenants configured: development tenant `dev` uses dev_api_key.")
                }
                DevKey::None => {}
            }
            println!(
                "gRPC on {} ({grpc_scheme})  webhooks on {http_scheme}://{}",
                app.grpc_addr, app.http_addr
            );
            #[cfg(feature = "sandbox")]
            if let Some(sandbox) = &app.sandbox {
                println!("vendor sandbox on {}", sandbox.base_url());
            }
            stop.await;
            tracing::info!("shutting down");
            app.shutdown().await;
        }
    }
    // Export the last spans; blocking, so off the runtime's workers.
    if telemetry.exporting() {
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    }
    Ok(())
}
