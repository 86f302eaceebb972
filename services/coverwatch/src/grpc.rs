//! The gRPC edge: authenticate, decode, call the engine, encode. No business rules here.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use coverwatch_core::provider::ReconnectStep;
use coverwatch_core::{ProviderId, TenantId};
use coverwatch_engine::{Engine, EngineError, EventQuery, LinkRequest, UnitFailure};
use coverwatch_proto::convert::{self, FieldError};
use coverwatch_proto::detail::DetailCodecs;
use coverwatch_proto::v1;
use coverwatch_proto::v1::monitoring_service_server::MonitoringService;
use coverwatch_store::{EventFilter, LinkFilter};
use futures::{Stream, StreamExt};
use secrecy::SecretString;
use tokio::sync::{Semaphore, watch};
use tonic::{Request, Response, Status};

use crate::auth::ApiKeys;

const DEFAULT_LINK_PAGE: u32 = 50;
const MAX_LINK_PAGE: u32 = 500;
const DEFAULT_EVENT_PAGE: u32 = 100;
const MAX_EVENT_PAGE: u32 = 1000;
const DEFAULT_HISTORY_PAGE: u32 = 20;
const MAX_HISTORY_PAGE: u32 = 100;

pub struct MonitoringApi {
    engine: Engine,
    keys: ApiKeys,
    /// Open event streams end when this turns true, so that shutdown does not wait on them.
    shutdown: watch::Receiver<bool>,
    watch_streams: WatchStreams,
    /// The vendors' codecs for the detail events carry (see `providers::detail_codecs`).
    details: Arc<DetailCodecs>,
}

impl MonitoringApi {
    pub fn new(
        engine: Engine,
        keys: ApiKeys,
        shutdown: watch::Receiver<bool>,
        max_watch_streams_per_tenant: usize,
        details: DetailCodecs,
    ) -> Self {
        Self {
            engine,
            keys,
            shutdown,
            watch_streams: WatchStreams::new(max_watch_streams_per_tenant),
            details: Arc::new(details),
        }
    }

    fn tenant<T>(
        &self,
        request: &Request<T>,
    ) -> impl std::future::Future<Output = Result<TenantId, Status>> + Send + 'static {
        self.keys.tenant_of(request)
    }
}

/// The one mapping from engine errors to gRPC statuses.
pub fn status(err: EngineError) -> Status {
    use coverwatch_core::provider::{ProviderError, RejectionKind};
    match &err {
        EngineError::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
        EngineError::NotFound { .. } => Status::not_found(err.to_string()),
        EngineError::FailedPrecondition(_) | EngineError::ProviderNotConfigured(_) => {
            Status::failed_precondition(err.to_string())
        }
        EngineError::Store(e) if e.is_unavailable() => {
            Status::unavailable("the database is unavailable; nothing was changed, retry later")
        }
        EngineError::Store(e) => {
            tracing::error!(error = %e, "store error");
            Status::internal("internal storage error")
        }
        // A panic message may quote any data the failing code held; it goes to the log only.
        EngineError::Panicked(message) => {
            tracing::error!(panic = %message, "request failed: a panic was caught");
            Status::internal("internal error; nothing was changed")
        }
        EngineError::Provider(provider_error) => {
            let message = err.to_string();
            let status = match provider_error {
                ProviderError::Unavailable { .. } => Status::unavailable(message),
                ProviderError::Rejected { kind, .. } => match kind {
                    RejectionKind::InvalidArgument => Status::invalid_argument(message),
                    RejectionKind::FailedPrecondition => Status::failed_precondition(message),
                    RejectionKind::NotFound => Status::not_found(message),
                    // The vendor refusing *our* credentials is our misconfiguration, not the
                    // caller's: they are authenticated with us.
                    RejectionKind::Unauthenticated | RejectionKind::PermissionDenied => {
                        Status::failed_precondition(message)
                    }
                },
                ProviderError::Unsupported { .. } => Status::failed_precondition(message),
                ProviderError::Malformed { .. } => Status::unavailable(message),
            };
            match convert::vendor_error_detail(provider_error) {
                Some(detail) => convert::with_vendor_error_detail(status, &detail),
                None => status,
            }
        }
    }
}

pub(crate) fn field(err: FieldError) -> Status {
    err.into()
}

pub(crate) fn link_id(value: &str) -> Result<coverwatch_core::LinkId, Status> {
    convert::link_id(value, "link_id").map_err(field)
}

impl MonitoringApi {
    /// One in-app reconnect step, shared by the three RPCs that differ only in the step.
    async fn reconnect_step(
        &self,
        tenant: &TenantId,
        link: &str,
        step: ReconnectStep,
    ) -> Result<v1::Link, Status> {
        let id = link_id(link)?;
        let link = self
            .engine
            .reconnect_step(tenant, &id, step)
            .await
            .map_err(status)?;
        Ok(link.into())
    }

    async fn event_query(
        &self,
        tenant: &TenantId,
        after_cursor: i64,
        filter: Option<&v1::EventFilter>,
        consumer: Option<&str>,
    ) -> Result<EventQuery, Status> {
        let after_cursor = convert::after_cursor(after_cursor, "after_cursor").map_err(field)?;
        let filter = convert::event_filter(filter, "filter").map_err(field)?;
        let mut query = EventQuery {
            after_cursor,
            filter: EventFilter {
                link_id: filter.link_id,
                user_id: filter.user_id,
                kinds: filter.kinds,
            },
        };
        if let Some(consumer) = consumer {
            self.engine
                .resume_consumer(tenant, &mut query, consumer)
                .await
                .map_err(status)?;
        }
        Ok(query)
    }
}

/// Open `WatchEvents` streams per tenant. Each stream holds a [`WatchSlot`] and gives it back
/// when it ends, however it ends (the caller hangs up, shutdown, an error).
#[derive(Clone)]
struct WatchStreams {
    max_per_tenant: usize,
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
}

struct WatchSlot {
    tenant: TenantId,
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl WatchStreams {
    fn new(max_per_tenant: usize) -> Self {
        Self {
            max_per_tenant,
            open: Arc::default(),
        }
    }

    fn acquire(&self, tenant: &TenantId) -> Result<WatchSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(tenant.clone()).or_insert(0);
        if *count >= self.max_per_tenant {
            return Err(Status::resource_exhausted(format!(
                "this tenant already has {} open WatchEvents streams, the most allowed; close one first",
                self.max_per_tenant
            )));
        }
        *count += 1;
        Ok(WatchSlot {
            tenant: tenant.clone(),
            open: self.open.clone(),
        })
    }
}

/// How many `WatchEvents` streams are open on this server, across tenants (for the metrics).
#[derive(Clone)]
pub(crate) struct OpenStreams(Arc<Mutex<HashMap<TenantId, usize>>>);

impl OpenStreams {
    pub(crate) fn total(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

impl MonitoringApi {
    pub(crate) fn open_streams(&self) -> OpenStreams {
        OpenStreams(self.watch_streams.open.clone())
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MonitoringService for MonitoringApi {
    async fn start_link(
        &self,
        request: Request<v1::StartLinkRequest>,
    ) -> Result<Response<v1::StartLinkResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let provider: ProviderId = convert::required_provider_choice(
            r.provider,
            "provider",
            &r.provider_id,
            "provider_id",
            self.engine.providers().kinds(),
        )
        .map_err(field)?;
        let started = self
            .engine
            .start_link(
                &tenant,
                LinkRequest {
                    provider,
                    user_id: convert::user_id(&r.user_id, "user_id").map_err(field)?,
                    metadata: convert::metadata(&r.metadata, "metadata").map_err(field)?,
                    redirect_uri: r.redirect_uri,
                    replace_link_id: convert::optional_link_id(
                        r.replace_link_id.as_deref(),
                        "replace_link_id",
                    )
                    .map_err(field)?,
                    requirement_set_id: r.requirement_set_id,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(v1::StartLinkResponse {
            link: Some(started.link.into()),
            session_url: started.session_url,
        }))
    }

    async fn complete_link(
        &self,
        request: Request<v1::CompleteLinkRequest>,
    ) -> Result<Response<v1::CompleteLinkResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let id = link_id(&r.link_id)?;
        let code = convert::required_string(&r.auth_code, "auth_code").map_err(field)?;
        let link = self
            .engine
            .complete_link(&tenant, &id, SecretString::from(code.to_owned()))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::CompleteLinkResponse {
            link: Some(link.into()),
        }))
    }

    async fn get_link(
        &self,
        request: Request<v1::GetLinkRequest>,
    ) -> Result<Response<v1::GetLinkResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let link = self.engine.get_link(&tenant, &id).await.map_err(status)?;
        Ok(Response::new(v1::GetLinkResponse {
            link: Some(link.into()),
        }))
    }

    async fn list_links(
        &self,
        request: Request<v1::ListLinksRequest>,
    ) -> Result<Response<v1::ListLinksResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(convert::link_id(&r.page_token, "page_token").map_err(|_| {
                Status::invalid_argument("page_token: not a token returned by ListLinks")
            })?)
        };
        let filter = LinkFilter {
            user_id: convert::optional_user_id(r.user_id.as_deref(), "user_id").map_err(field)?,
            provider: convert::provider_choice(
                r.provider,
                "provider",
                &r.provider_id,
                "provider_id",
                self.engine.providers().kinds(),
            )
            .map_err(field)?,
            states: convert::link_states(&r.states, "states").map_err(field)?,
            after,
            limit: u64::from(
                convert::page_size(r.page_size, DEFAULT_LINK_PAGE, MAX_LINK_PAGE, "page_size")
                    .map_err(field)?,
            ),
        };
        let page = self
            .engine
            .list_links(&tenant, &filter)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListLinksResponse {
            links: page.links.into_iter().map(|r| r.link.into()).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn start_reconnect(
        &self,
        request: Request<v1::StartReconnectRequest>,
    ) -> Result<Response<v1::StartReconnectResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let id = link_id(&r.link_id)?;
        let started = self
            .engine
            .start_reconnect(&tenant, &id, r.redirect_uri)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::StartReconnectResponse {
            link: Some(started.link.into()),
            session_url: started.session_url,
        }))
    }

    async fn descope(
        &self,
        request: Request<v1::DescopeRequest>,
    ) -> Result<Response<v1::DescopeResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let link = self.engine.descope(&tenant, &id).await.map_err(status)?;
        Ok(Response::new(v1::DescopeResponse {
            link: Some(link.into()),
        }))
    }

    async fn refresh_link(
        &self,
        request: Request<v1::RefreshLinkRequest>,
    ) -> Result<Response<v1::RefreshLinkResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let link = self.engine.refresh(&tenant, &id).await.map_err(status)?;
        Ok(Response::new(v1::RefreshLinkResponse {
            link: Some(link.into()),
        }))
    }

    async fn submit_reconnect_credentials(
        &self,
        request: Request<v1::SubmitReconnectCredentialsRequest>,
    ) -> Result<Response<v1::SubmitReconnectCredentialsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let username = convert::required_string(&r.username, "username").map_err(field)?;
        let step = ReconnectStep::Credentials {
            carrier: r.carrier,
            username: SecretString::from(username.to_owned()),
            password: r.password.map(SecretString::from),
            third_field: r.third_field.map(SecretString::from),
        };
        Ok(Response::new(v1::SubmitReconnectCredentialsResponse {
            link: Some(self.reconnect_step(&tenant, &r.link_id, step).await?),
        }))
    }

    async fn select_verification_option(
        &self,
        request: Request<v1::SelectVerificationOptionRequest>,
    ) -> Result<Response<v1::SelectVerificationOptionResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let key = convert::required_string(&r.option_key, "option_key").map_err(field)?;
        let step = ReconnectStep::VerificationOption {
            key: key.to_owned(),
        };
        Ok(Response::new(v1::SelectVerificationOptionResponse {
            link: Some(self.reconnect_step(&tenant, &r.link_id, step).await?),
        }))
    }

    async fn submit_verification_code(
        &self,
        request: Request<v1::SubmitVerificationCodeRequest>,
    ) -> Result<Response<v1::SubmitVerificationCodeResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let code = convert::required_string(&r.code, "code").map_err(field)?;
        let step = ReconnectStep::VerificationCode {
            code: SecretString::from(code.to_owned()),
        };
        Ok(Response::new(v1::SubmitVerificationCodeResponse {
            link: Some(self.reconnect_step(&tenant, &r.link_id, step).await?),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::GetPolicyResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let id = link_id(&r.link_id)?;
        let policy_id = convert::required_string(&r.policy_id, "policy_id").map_err(field)?;
        let term = convert::policy_term(r.term, "term").map_err(field)?;
        let stored = self
            .engine
            .get_policy(&tenant, &id, policy_id, term)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::GetPolicyResponse {
            policy: Some(stored.policy.into()),
            term: v1::PolicyTerm::from(stored.term) as i32,
            fetched_at: Some(convert::timestamp(stored.fetched_at)),
        }))
    }

    async fn get_policy_history(
        &self,
        request: Request<v1::GetPolicyHistoryRequest>,
    ) -> Result<Response<v1::GetPolicyHistoryResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let id = link_id(&r.link_id)?;
        let policy_id = convert::required_string(&r.policy_id, "policy_id").map_err(field)?;
        let term = convert::policy_term(r.term, "term").map_err(field)?;
        let limit = convert::page_size(
            r.page_size,
            DEFAULT_HISTORY_PAGE,
            MAX_HISTORY_PAGE,
            "page_size",
        )
        .map_err(field)?;
        let after_version = history_position(&r)?;
        let page = self
            .engine
            .policy_history(
                &tenant,
                &id,
                policy_id,
                term,
                after_version,
                u64::from(limit),
            )
            .await
            .map_err(status)?;
        #[allow(deprecated)] // next_after_version: still filled for released callers
        Ok(Response::new(v1::GetPolicyHistoryResponse {
            versions: page
                .versions
                .into_iter()
                .map(|entry| v1::PolicyVersion {
                    version: entry.version.version,
                    fetched_at: Some(convert::timestamp(entry.version.fetched_at)),
                    policy: Some(entry.version.policy.into()),
                    changes: entry.changes.into_iter().map(Into::into).collect(),
                })
                .collect(),
            next_after_version: page.next_after_version,
            next_page_token: page
                .next_after_version
                .map(|version| format!("v{version}"))
                .unwrap_or_default(),
        }))
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::ListPoliciesResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let policies = self
            .engine
            .list_policies(&tenant, &id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListPoliciesResponse {
            policies: policies.into_iter().map(|p| p.policy.into()).collect(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<v1::GetAccountRequest>,
    ) -> Result<Response<v1::GetAccountResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let stored = self
            .engine
            .get_account(&tenant, &id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::GetAccountResponse {
            account: Some(stored.account.into()),
            fetched_at: Some(convert::timestamp(stored.fetched_at)),
        }))
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let query = self
            .event_query(
                &tenant,
                r.after_cursor,
                r.filter.as_ref(),
                r.consumer.as_deref(),
            )
            .await?;
        let limit =
            convert::page_size(r.page_size, DEFAULT_EVENT_PAGE, MAX_EVENT_PAGE, "page_size")
                .map_err(field)?;
        let events = self
            .engine
            .list_events(&tenant, &query, u64::from(limit))
            .await
            .map_err(status)?;
        let next_cursor = events.last().map_or(query.after_cursor, |e| e.cursor);
        Ok(Response::new(v1::ListEventsResponse {
            events: events
                .into_iter()
                .map(|event| convert::event_to_proto(event, &self.details))
                .collect(),
            next_cursor,
        }))
    }

    async fn ack_events(
        &self,
        request: Request<v1::AckEventsRequest>,
    ) -> Result<Response<v1::AckEventsResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let cursor = self
            .engine
            .ack_events(&tenant, &r.consumer, r.cursor)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AckEventsResponse { cursor }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let tenant = self.tenant(&request).await?;
        let slot = self.watch_streams.acquire(&tenant)?;
        let r = request.into_inner();
        let query = self
            .event_query(
                &tenant,
                r.after_cursor,
                r.filter.as_ref(),
                r.consumer.as_deref(),
            )
            .await?;
        let mut shutdown = self.shutdown.clone();
        let details = Arc::clone(&self.details);
        let stopping = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let stream = self
            .engine
            .watch_events(tenant, query)
            .map(move |item| {
                // The stream owns the slot: dropping the stream frees it.
                let _held = &slot;
                item.map(|event| convert::event_to_proto(event, &details))
                    .map_err(status)
            })
            .take_until(stopping)
            .chain(futures::stream::once(async {
                Err(Status::unavailable(
                    "the stream ended; resume with the cursor of the last event you processed",
                ))
            }));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Limits every gRPC call shares: a deadline (the caller's `grpc-timeout`, at most the
/// configured request timeout) answered DEADLINE_EXCEEDED, and a bounded number of calls at
/// work at once, so that callers can never take every database connection from webhook ingest
/// and the workers. A call that finds no free slot within the queue timeout is answered
/// UNAVAILABLE, which clients retry with backoff. Health and reflection need no database and
/// are never shed.
#[derive(Clone)]
pub struct CallLimitsLayer {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    request_timeout: Duration,
}

impl CallLimitsLayer {
    pub fn new(slots: usize, queue_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            queue_timeout,
            request_timeout,
        }
    }
}

impl<S> tower::Layer<S> for CallLimitsLayer {
    type Service = CallLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLimits<S> {
    inner: S,
    limits: CallLimitsLayer,
}

fn needs_no_database(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for CallLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not necessarily ready; the one polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(limits.request_timeout, |d| d.min(limits.request_timeout));
        let shed = !needs_no_database(request.uri().path());
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let permit = if shed {
                let wait = limits.queue_timeout.min(deadline);
                match tokio::time::timeout(wait, limits.slots.acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        return Ok(Status::unavailable(
                            "the server is busy; nothing was done, retry with backoff",
                        )
                        .into_http());
                    }
                }
            } else {
                None
            };
            let remaining = deadline.saturating_sub(started.elapsed());
            // A streaming call's answer is ready once its stream is set up: only that part runs
            // under the deadline and holds the slot, not the stream itself.
            // A handler that panics fails its own call, answered INTERNAL, and nothing else:
            // unwinding past here would take down the whole HTTP/2 connection, and with it
            // every other call the client has multiplexed on it.
            let answer = coverwatch_engine::isolated(remaining, inner.call(request)).await;
            drop(permit);
            match answer {
                Ok(result) => result,
                Err(UnitFailure::Panicked(message)) => {
                    tracing::error!(panic = %message, "gRPC call panicked; answered INTERNAL");
                    Ok(Status::internal("the call failed on an internal error").into_http())
                }
                Err(UnitFailure::TimedOut(_)) => Ok(Status::deadline_exceeded(
                    "the deadline passed before the call finished; it was abandoned",
                )
                .into_http()),
            }
        })
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 spec.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = value.strip_suffix(unit)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Where GetPolicyHistory starts: after the version a `page_token` (`v<version>`, opaque to
/// callers) names, or after the deprecated `after_version` that released callers still send.
fn history_position(r: &v1::GetPolicyHistoryRequest) -> Result<i32, Status> {
    #[allow(deprecated)] // the released field, honoured until a v2 of the contract
    let after_version = r.after_version;
    if r.page_token.is_empty() {
        return Ok(after_version);
    }
    if after_version != 0 {
        return Err(Status::invalid_argument(
            "after_version: must not be set together with page_token",
        ));
    }
    r.page_token
        .strip_prefix('v')
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            Status::invalid_argument("page_token: not a token returned by GetPolicyHistory")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)] // after_version: the released field is still honoured
    fn history_pages_by_token_or_by_the_released_after_version() {
        let request = |page_token: &str, after_version: i32| v1::GetPolicyHistoryRequest {
            page_token: page_token.into(),
            after_version,
            ..Default::default()
        };
        assert_eq!(history_position(&request("", 0)).unwrap(), 0);
        assert_eq!(history_position(&request("", 7)).unwrap(), 7);
        assert_eq!(history_position(&request("v3", 0)).unwrap(), 3);
        for bad in ["3", "v", "v-1", "vx", "v99999999999", "é"] {
            let err = history_position(&request(bad, 0)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().starts_with("page_token: "), "{bad}: {err:?}");
        }
        let err = history_position(&request("v3", 3)).unwrap_err();
        assert!(err.message().starts_with("after_version: "), "{err:?}");
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "5s", "-5S", "5", "5é", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_panicking_call_is_answered_internal_and_the_next_call_is_served() {
        use tower::{Layer, Service, ServiceExt};
        let inner = tower::service_fn(|request: http::Request<()>| async move {
            if request.uri().path().ends_with("/Panics") {
                panic!("a bug in one handler");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut service =
            CallLimitsLayer::new(1, Duration::from_secs(1), Duration::from_secs(5)).layer(inner);
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let answer = service
            .ready()
            .await
            .unwrap()
            .call(call("/coverwatch.v1.MonitoringService/Panics"))
            .await
            .unwrap();
        let status = Status::from_header_map(answer.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("a bug"), "{status:?}");
        // The one database slot was given back, and the service still answers.
        let answer = service
            .ready()
            .await
            .unwrap()
            .call(call("/coverwatch.v1.MonitoringService/GetLink"))
            .await
            .unwrap();
        assert!(Status::from_header_map(answer.headers()).is_none());
    }

    #[test]
    fn watch_slots_are_counted_per_tenant_and_freed_on_drop() {
        let streams = WatchStreams::new(2);
        let a: TenantId = "tenant-a".parse().unwrap();
        let b: TenantId = "tenant-b".parse().unwrap();
        let first = streams.acquire(&a).unwrap();
        let _second = streams.acquire(&a).unwrap();
        assert_eq!(
            streams.acquire(&a).err().map(|s| s.code()),
            Some(tonic::Code::ResourceExhausted)
        );
        let _other = streams
            .acquire(&b)
            .expect("another tenant has its own slots");
        drop(first);
        let _again = streams.acquire(&a).expect("a closed stream frees its slot");
    }
}
