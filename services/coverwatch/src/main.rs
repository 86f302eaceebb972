//! `coverwatch`: serve, migrate, run the vendor sandbox alone, or hash an API key.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coverwatch::auth::DevKey;
use coverwatch::config::{Config, LogFormat};

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
    Sandbox,
    /// Print the SHA-256 of an API key, for `tenants[].api_key_sha256`.
    HashKey {
        /// The API key to hash.
        key: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::HashKey { key } = &cli.command {
        println!("{}", coverwatch::auth::hash_key(key));
        return Ok(());
    }
    let config = Config::load(&cli.config)?;
    init_logging(config.log_format);
    match cli.command {
        Command::HashKey { .. } => unreachable!("handled above"),
        Command::Migrate => {
            coverwatch::app::connect_store(&config).await?;
            tracing::info!("migrations applied");
        }
        Command::Sandbox => {
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
            stop_signal().await;
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
            if let Some(sandbox) = &app.sandbox {
                println!("vendor sandbox on {}", sandbox.base_url());
            }
            stop_signal().await;
            tracing::info!("shutting down");
            app.shutdown().await;
        }
    }
    Ok(())
}
