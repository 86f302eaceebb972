//! Faithful simulators of the Axle and Canopy Connect APIs, their hosted consent pages and
//! their webhook senders, with scenario and fault controls.
//!
//! One listener serves everything:
//! - Axle API at `{base}/axle` (Ignition page at `{base}/axle/ignition-ui/?token=ign_…`);
//! - Canopy API at `{base}/canopy/api/v1.0.0` (widget at `{base}/canopy/c/{alias}`);
//! - controls at `{base}/_sandbox/…` (faults, deliveries, API calls, clock, and per-vendor
//!   scenarios).
//!
//! Switching a client to the real vendor is only a change of base URL and credentials.
//!
//! Each simulator knows one default account (the credentials below) and can know more, from
//! its configuration or added at run time ([`AxleSim::add_account`], [`CanopySim::add_team`],
//! or the control API): each account sees only its own data, as two customers of the vendor
//! would. Every API call is logged with the identifiers of the credentials it carried
//! ([`CallLog`], `GET /_sandbox/calls`), never the secrets.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod axle;
pub mod calls;
pub mod canopy;
pub mod clock;
pub mod delivery;
pub mod faults;

pub use axle::{AxleAccount, AxleSim, AxleSimConfig};
pub use calls::{ApiCall, CallLog};
pub use canopy::{CanopySim, CanopySimConfig, CanopyTeam};
pub use clock::SandboxClock;
pub use delivery::{DeliveryAttempt, DeliveryLog, RetrySchedule, WebhookRequest, WebhookSender};
pub use faults::{FaultEffect, FaultRule, FaultTarget, Faults};

/// Default listen address of a stand-alone sandbox.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8090";

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub addr: SocketAddr,
    /// The URL the outside world uses to reach this listener (hosted pages and redirects are
    /// built from it). Defaults to `http://{bound addr}`.
    pub public_base_url: Option<String>,
    pub axle: axle::AxleSimConfig,
    pub canopy: canopy::CanopySimConfig,
}

/// Listens on `127.0.0.1:8090`. Axle credentials: `x-client-id: cli_sandbox`,
/// `x-client-secret: axle-sandbox-secret` ([`axle::DEFAULT_CLIENT_ID`],
/// [`axle::DEFAULT_CLIENT_SECRET`]); Canopy's are documented on [`canopy::CanopySimConfig`].
impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.parse().expect("valid default addr"),
            public_base_url: None,
            axle: axle::AxleSimConfig::default(),
            canopy: canopy::CanopySimConfig::default(),
        }
    }
}

impl SandboxConfig {
    /// The default config on `127.0.0.1:0`, for tests.
    pub fn for_tests() -> Self {
        Self {
            addr: "127.0.0.1:0".parse().expect("valid addr"),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// What every simulator shares: the public base URL, the clock, the fault registry, the
/// webhook sender (whose log is `deliveries`) and the log of API calls answered.
#[derive(Clone, Debug)]
pub struct SimContext {
    /// `http://127.0.0.1:PORT` (no trailing slash), or the configured public base URL.
    pub base_url: String,
    pub clock: SandboxClock,
    pub faults: Faults,
    pub webhooks: WebhookSender,
    pub deliveries: DeliveryLog,
    pub calls: CallLog,
}

impl SimContext {
    /// A context that is not attached to a listener, for unit tests of one simulator.
    /// Must be called inside a tokio runtime (it starts the webhook worker).
    pub fn detached(base_url: impl Into<String>) -> Self {
        let clock = SandboxClock::new();
        let faults = Faults::new();
        let deliveries = DeliveryLog::new();
        let webhooks = WebhookSender::start(faults.clone(), clock.clone(), deliveries.clone());
        Self {
            base_url: base_url.into(),
            clock,
            faults,
            webhooks,
            deliveries,
            calls: CallLog::new(),
        }
    }
}

pub struct Sandbox;

impl Sandbox {
    /// Binds the listener, builds both simulators and serves until [`SandboxHandle::shutdown`].
    pub async fn start(cfg: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: cfg.addr,
                source,
            })?;
        let addr = listener.local_addr()?;
        let base_url = cfg
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let ctx = SimContext::detached(base_url);
        let axle = AxleSim::new(cfg.axle.clone(), ctx.clone());
        let canopy = CanopySim::new(cfg.canopy.clone(), ctx.clone());
        let app = Sandbox::router(&ctx, &axle, &canopy);

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        tracing::info!(%addr, base_url = %ctx.base_url, "sandbox listening");
        Ok(SandboxHandle {
            addr,
            ctx,
            axle,
            canopy,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The full router (vendor APIs, hosted pages and controls), for embedding in another server.
    pub fn router(ctx: &SimContext, axle: &AxleSim, canopy: &CanopySim) -> Router {
        Router::new()
            .nest("/axle", axle::router(axle.clone()))
            .nest("/canopy", canopy::router(canopy.clone()))
            .nest("/_sandbox/axle", axle::control_router(axle.clone()))
            .nest("/_sandbox/canopy", canopy::control_router(canopy.clone()))
            .merge(control_router(ctx.clone()))
    }
}

/// A running sandbox.
pub struct SandboxHandle {
    addr: SocketAddr,
    ctx: SimContext,
    axle: AxleSim,
    canopy: CanopySim,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or the configured public base URL), no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.ctx.base_url
    }

    /// What a client uses instead of `https://sandbox.axle.insure`.
    pub fn axle_base_url(&self) -> String {
        format!("{}/axle", self.ctx.base_url)
    }

    /// What a client uses instead of `https://app.usecanopy.com/api/v1.0.0`.
    pub fn canopy_base_url(&self) -> String {
        format!("{}/canopy/api/v1.0.0", self.ctx.base_url)
    }

    pub fn axle(&self) -> &AxleSim {
        &self.axle
    }

    pub fn canopy(&self) -> &CanopySim {
        &self.canopy
    }

    pub fn faults(&self) -> &Faults {
        &self.ctx.faults
    }

    pub fn clock(&self) -> &SandboxClock {
        &self.ctx.clock
    }

    pub fn deliveries(&self) -> &DeliveryLog {
        &self.ctx.deliveries
    }

    pub fn context(&self) -> &SimContext {
        &self.ctx
    }

    /// Every API call either simulator answered, with the credentials' identifiers it carried.
    pub fn calls(&self) -> &CallLog {
        &self.ctx.calls
    }

    /// Stops accepting connections, releases hanging requests and waits (up to 5 s) for
    /// in-flight requests to finish.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    /// Serves until the task ends (for a stand-alone binary).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ctx.faults.release_hangs();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        // Dropping without `shutdown` still stops the server: a test that forgets must not leak
        // a listener into the next one.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ctx.faults.release_hangs();
    }
}

// ---------------------------------------------------------------------------------------------
// Shared controls: /_sandbox/health, /_sandbox/faults, /_sandbox/deliveries, /_sandbox/clock.

fn control_router(ctx: SimContext) -> Router {
    Router::new()
        .route(
            "/_sandbox/health",
            get(|| async { Json(json!({"ok": true})) }),
        )
        .route(
            "/_sandbox/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/faults/endpoints", get(list_endpoints))
        .route("/_sandbox/faults/{id}", delete(remove_fault))
        .route(
            "/_sandbox/deliveries",
            get(list_deliveries).delete(clear_deliveries),
        )
        .route("/_sandbox/calls", get(list_calls).delete(clear_calls))
        .route("/_sandbox/clock", get(get_clock))
        .route("/_sandbox/clock/advance", post(advance_clock))
        .route("/_sandbox/clock/reset", post(reset_clock))
        .with_state(ctx)
}

async fn list_faults(State(ctx): State<SimContext>) -> Json<Vec<FaultRule>> {
    Json(ctx.faults.list())
}

async fn add_fault(State(ctx): State<SimContext>, Json(rule): Json<FaultRule>) -> Response {
    let id = ctx.faults.add(rule);
    let rule = ctx.faults.list().into_iter().find(|r| r.id == id);
    (StatusCode::CREATED, Json(json!({ "id": id, "rule": rule }))).into_response()
}

async fn clear_faults(State(ctx): State<SimContext>) -> StatusCode {
    ctx.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(ctx): State<SimContext>, Path(id): Path<u64>) -> StatusCode {
    if ctx.faults.remove(id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn list_endpoints(State(ctx): State<SimContext>) -> Json<Vec<String>> {
    Json(ctx.faults.endpoints())
}

#[derive(Deserialize)]
struct DeliveryFilter {
    vendor: Option<String>,
    event_type: Option<String>,
}

async fn list_deliveries(
    State(ctx): State<SimContext>,
    Query(filter): Query<DeliveryFilter>,
) -> Json<Vec<DeliveryAttempt>> {
    Json(
        ctx.deliveries
            .filtered(filter.vendor.as_deref(), filter.event_type.as_deref()),
    )
}

async fn clear_deliveries(State(ctx): State<SimContext>) -> StatusCode {
    ctx.deliveries.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CallFilter {
    vendor: Option<String>,
}

async fn list_calls(
    State(ctx): State<SimContext>,
    Query(filter): Query<CallFilter>,
) -> Json<Vec<ApiCall>> {
    Json(match filter.vendor {
        Some(vendor) => ctx.calls.of(&vendor),
        None => ctx.calls.all(),
    })
}

async fn clear_calls(State(ctx): State<SimContext>) -> StatusCode {
    ctx.calls.clear();
    StatusCode::NO_CONTENT
}

fn clock_json(ctx: &SimContext) -> Json<serde_json::Value> {
    Json(json!({
        "now": ctx.clock.now_rfc3339(),
        "offset_seconds": ctx.clock.offset().num_seconds(),
    }))
}

async fn get_clock(State(ctx): State<SimContext>) -> Json<serde_json::Value> {
    clock_json(&ctx)
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(
    State(ctx): State<SimContext>,
    Json(by): Json<Advance>,
) -> Json<serde_json::Value> {
    ctx.clock.advance(chrono::Duration::seconds(by.seconds));
    clock_json(&ctx)
}

async fn reset_clock(State(ctx): State<SimContext>) -> Json<serde_json::Value> {
    ctx.clock.reset();
    clock_json(&ctx)
}
