//! The operator CLI: `coverwatch deliveries|tenants|connections|links|events …`, a client of a running server's gRPC
//! API (AdminService with an admin key, MonitoringService with a tenant's API key). Tables for
//! people, `--json` for scripts; every failure is one clear line on stderr and exit code 1.

mod client;
mod connections;
mod deliveries;
mod events;
mod links;
mod output;
mod tenants;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use coverwatch_core::LinkId;
use coverwatch_proto::v1;

/// The operator commands, flattened into the binary's own subcommands.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Look into the webhook inbox and replay deliveries (AdminService: needs an admin key).
    Deliveries {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Create, list, disable and enable tenants; create and revoke their API keys
    /// (AdminService: needs an admin key).
    Tenants {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Give tenants their own vendor accounts: put, get, list and delete vendor connections
    /// (AdminService: needs an admin key).
    Connections {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
    /// Show a link: its state and latest policies (MonitoringService: a tenant's API key).
    Links {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: LinksCommand,
    },
    /// Follow a tenant's events live (MonitoringService: a tenant's API key).
    Events {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: EventsCommand,
    },
}

/// Where the server is and how to authenticate; accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's gRPC address: `host:port`, `http://host:port` or `https://host:port`.
    /// Default: `grpc_addr` of the configuration (a wildcard address read as loopback).
    #[arg(long, global = true, env = "COVERWATCH_ADDR")]
    pub addr: Option<String>,
    /// An admin key (its SHA-256 is listed in `admin_api_key_sha256`), for `deliveries`,
    /// `tenants` and `connections`.
    #[arg(
        long,
        global = true,
        env = "COVERWATCH_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,
    /// A tenant's API key, for `links` and `events`. Without it the admin key is sent (in the
    /// development setup one key is both).
    #[arg(
        long,
        global = true,
        env = "COVERWATCH_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The PEM CA certificate that signed the server's certificate (for `https://` addresses).
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON for scripts (one document; one line per event for `events tail`), in the
    /// proto3 JSON mapping with the `.proto` field names.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List stored deliveries, oldest first, without their bodies.
    List {
        #[command(flatten)]
        filter: DeliveryFilterArgs,
        /// At most this many deliveries.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Show one delivery with its raw headers and body.
    Show {
        /// The delivery (`dlv_...`).
        id: String,
    },
    /// Put deliveries back to be processed again: the ones named, or every one matching a
    /// filter (`--status` required), with a progress bar. `--dry-run` lists them and changes
    /// nothing.
    Replay {
        /// The deliveries (`dlv_...`); every one is checked before any is replayed.
        #[arg(
            required_unless_present = "status",
            conflicts_with_all = ["status", "provider", "link", "since"]
        )]
        ids: Vec<String>,
        /// Replay the deliveries with this status.
        #[arg(long, value_enum)]
        status: Option<ReplayableStatus>,
        /// Only deliveries from this vendor.
        #[arg(long, value_enum, requires = "status")]
        provider: Option<ProviderArg>,
        /// Only deliveries known to belong to this link (`lnk_...`).
        #[arg(long, value_parser = parse_link_id, requires = "status")]
        link: Option<String>,
        /// Only deliveries received at or after this time (RFC 3339, or a date for midnight UTC).
        #[arg(long, value_parser = parse_time, requires = "status")]
        since: Option<DateTime<Utc>>,
        /// List what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The conditions of `deliveries list`; every one set must hold.
#[derive(Debug, Clone, Args)]
pub struct DeliveryFilterArgs {
    /// Only deliveries with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only deliveries from this vendor.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
    /// Only deliveries known to belong to this link (`lnk_...`).
    #[arg(long, value_parser = parse_link_id)]
    pub link: Option<String>,
    /// Only deliveries received at or after this time (RFC 3339, or a date for midnight UTC).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create an enabled tenant with no key yet (follow with `tenants key create`).
    Create {
        /// The tenant's id: lowercase letters, digits, `-` and `_`, at most 64.
        id: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants by id: configured and created ones, their state and key counts.
    List {
        /// At most this many tenants.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Show one tenant and its API keys (ids and labels; never the keys).
    Get {
        /// The tenant's id.
        id: String,
    },
    /// Refuse the tenant's API calls (PERMISSION_DENIED) on every replica; its webhooks are
    /// still stored and processed.
    Disable {
        /// The tenant's id.
        id: String,
    },
    /// Accept the tenant's API calls again.
    Enable {
        /// The tenant's id.
        id: String,
    },
    /// Create or revoke a tenant's API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it, once, alone on stdout; only its SHA-256 is kept.
    Create {
        /// The tenant the key authenticates.
        tenant: String,
        /// What the key is for (for example `billing-service prod`).
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a key made by `key create`: it stops working on every replica.
    Revoke {
        /// The key's record id (`key_...`), as `tenants get` lists it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Create or replace a tenant's connection to a vendor. The settings are checked by the
    /// vendor's plug-in (and by the vendor, where it has a cheap authenticated call) before
    /// they are saved; a bad one is named by its path (`settings.client_secret`).
    Put {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The vendor (`axle`, `canopy`).
        #[arg(long)]
        provider: String,
        /// A JSON object with the vendor's settings, the keys of its `[vendors.<provider>]`
        /// configuration section.
        #[arg(long)]
        settings_file: PathBuf,
    },
    /// Show one connection, without its secrets.
    Get {
        /// The connection (`conn_...`).
        id: String,
    },
    /// List a tenant's connections by provider.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// At most this many connections.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Delete a connection no live link uses.
    Delete {
        /// The connection (`conn_...`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// The link, its state, and a summary of its latest policy snapshots.
    Show {
        /// The link (`lnk_...`).
        #[arg(value_parser = parse_link_id)]
        link_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are recorded, one line each, until Ctrl-C: first the stored ones
    /// after the starting point, then live ones.
    Tail {
        /// Start after this cursor (0: from the first event). Default: only new events.
        #[arg(long, conflicts_with = "consumer")]
        after: Option<i64>,
        /// Start after the cursor this consumer acknowledged (AckEvents). Tail never
        /// acknowledges anything itself.
        #[arg(long)]
        consumer: Option<String>,
        /// Only events of this link (`lnk_...`).
        #[arg(long, value_parser = parse_link_id)]
        link: Option<String>,
        /// Only events of links with this user_id.
        #[arg(long)]
        user: Option<String>,
        /// Only events of this kind (for example `policy.updated`); repeat for several.
        #[arg(long = "kind", value_parser = parse_kind)]
        kinds: Vec<v1::EventKind>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Pending,
    Done,
    Dead,
    Unmatched,
}

/// The statuses ReplayDelivery accepts (a pending delivery is with the worker already).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReplayableStatus {
    Dead,
    Unmatched,
    Done,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    Axle,
    Canopy,
}

impl From<StatusArg> for v1::DeliveryStatus {
    fn from(value: StatusArg) -> Self {
        match value {
            StatusArg::Pending => Self::Pending,
            StatusArg::Done => Self::Done,
            StatusArg::Dead => Self::Dead,
            StatusArg::Unmatched => Self::Unmatched,
        }
    }
}

impl From<ReplayableStatus> for v1::DeliveryStatus {
    fn from(value: ReplayableStatus) -> Self {
        match value {
            ReplayableStatus::Dead => Self::Dead,
            ReplayableStatus::Unmatched => Self::Unmatched,
            ReplayableStatus::Done => Self::Done,
        }
    }
}

impl From<ProviderArg> for v1::Provider {
    fn from(value: ProviderArg) -> Self {
        match value {
            ProviderArg::Axle => Self::Axle,
            ProviderArg::Canopy => Self::Canopy,
        }
    }
}

fn parse_link_id(value: &str) -> Result<String, String> {
    value
        .parse::<LinkId>()
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

fn parse_kind(value: &str) -> Result<v1::EventKind, String> {
    value
        .parse::<coverwatch_core::EventKind>()
        .map(v1::EventKind::from)
}

/// RFC 3339 (`2026-12-01T00:00:00Z`), or a bare date read as midnight UTC.
fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .ok_or_else(|| {
            "not a time: use RFC 3339 (2026-12-01T00:00:00Z) or a date (2026-12-01)".to_owned()
        })
}

/// Why a command failed, as the operator reads it.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Run one operator command. `config` is only read when `--addr` is not given.
pub async fn run(command: OpsCommand, config: &Path) -> Result<(), CliError> {
    match command {
        OpsCommand::Deliveries {
            connection,
            command,
        } => {
            let admin = client::Server::connect(&connection, config)
                .await?
                .admin(&connection)?;
            deliveries::run(admin, command, connection.json).await
        }
        OpsCommand::Tenants {
            connection,
            command,
        } => {
            let admin = client::Server::connect(&connection, config)
                .await?
                .admin(&connection)?;
            tenants::run(admin, command, connection.json).await
        }
        OpsCommand::Connections {
            connection,
            command,
        } => {
            let admin = client::Server::connect(&connection, config)
                .await?
                .admin(&connection)?;
            connections::run(admin, command, connection.json).await
        }
        OpsCommand::Links {
            connection,
            command: LinksCommand::Show { link_id },
        } => {
            let monitoring = client::Server::connect(&connection, config)
                .await?
                .monitoring(&connection)?;
            links::show(monitoring, &link_id, connection.json).await
        }
        OpsCommand::Events {
            connection,
            command:
                EventsCommand::Tail {
                    after,
                    consumer,
                    link,
                    user,
                    kinds,
                },
        } => {
            let monitoring = client::Server::connect(&connection, config)
                .await?
                .monitoring(&connection)?;
            let request = v1::WatchEventsRequest {
                after_cursor: after.unwrap_or(0),
                filter: Some(v1::EventFilter {
                    link_id: link,
                    user_id: user,
                    kinds: kinds.into_iter().map(|k| k as i32).collect(),
                }),
                consumer,
            };
            let from_now = request.consumer.is_none() && after.is_none();
            events::tail(monitoring, request, from_now, connection.json).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_date() {
        assert_eq!(
            parse_time("2026-12-01T01:02:03+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T00:02:03+00:00"
        );
        assert_eq!(
            parse_time("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-12-01 00:00"] {
            assert!(parse_time(bad).unwrap_err().contains("RFC 3339"), "{bad}");
        }
    }

    #[test]
    fn kinds_use_the_event_vocabulary() {
        assert_eq!(
            parse_kind("policy.updated").unwrap(),
            v1::EventKind::PolicyUpdated
        );
        assert!(parse_kind("POLICY_UPDATED").is_err());
        assert!(parse_link_id("lnk_nope").is_err());
    }
}
