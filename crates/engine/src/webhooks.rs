//! Taking in a vendor delivery: authenticate the raw bytes, store them durably, and only then
//! acknowledge. Processing happens later, in the inbox worker.

use coverwatch_core::ProviderId;
use coverwatch_core::webhook::{InboundWebhook, WebhookRejection};
use std::sync::Arc;

use coverwatch_core::Provider;
use coverwatch_core::ids::ConnectionId;
use coverwatch_store::{IngestQueue, Ingested, NewDelivery, StoreError};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::inbox::Matched;
use crate::links::token_hash;
use crate::token_cache::TokenOwner;
use crate::{Engine, EngineError, IngestError};

/// The largest delivery we store. Vendor events are small JSON documents; anything near this is
/// not one of them.
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// The longest per-link path token looked up; ours are far shorter, so a longer one is not ours.
const MAX_TOKEN_LEN: usize = 256;

/// What a per-link webhook token is replaced with in a stored delivery's path.
pub const REDACTED_TOKEN: &str = "[token]";

impl Engine {
    /// Authenticate and store a delivery. `Ok` means it is durably stored (or was already):
    /// the caller may acknowledge it.
    pub async fn ingest_webhook(
        &self,
        provider: &str,
        webhook: InboundWebhook,
    ) -> Result<Ingested, IngestError> {
        self.ingest_webhook_traced(provider, webhook, &tracing::Span::none())
            .await
    }

    /// [`Self::ingest_webhook`], reported under `span` (the listener's span for this request,
    /// not yet entered: its parent is chosen here, once the delivery is authenticated and its
    /// link known — see [`crate::trace`]). The span gets the link and delivery ids, and its
    /// trace context is stored with the delivery for the worker to continue.
    pub async fn ingest_webhook_traced(
        &self,
        provider: &str,
        webhook: InboundWebhook,
        span: &tracing::Span,
    ) -> Result<Ingested, IngestError> {
        if webhook.body.len() > MAX_WEBHOOK_BYTES {
            return Err(IngestError::TooLarge {
                size: webhook.body.len(),
                limit: MAX_WEBHOOK_BYTES,
            });
        }
        let kind: ProviderId = provider
            .parse()
            .map_err(|_| IngestError::UnknownProvider(provider.to_owned()))?;
        if !self.inner.providers.knows(&kind) {
            return Err(IngestError::UnknownProvider(provider.to_owned()));
        }
        let (connection, implementation, known) = self.webhook_route(&kind, &webhook.path).await?;
        let stored_path = webhook.path.clone();
        let mut webhook = webhook;
        if connection.is_some() && known.is_none() {
            // The connection id in the path chose whose secrets check the delivery; for the
            // vendor's own checks it arrived at that connection's one shared URL.
            webhook.path = String::new();
        }
        let authenticated = implementation
            .authenticate_webhook(&webhook)
            .map_err(IngestError::Unauthenticated)?;
        if let Some(late_by) = authenticated.late_by_seconds {
            // Genuine, so at worst a replay, which deduplication makes harmless; most likely a
            // vendor retry that kept its first timestamp. Counted so that a clock problem on
            // either side shows.
            self.inner
                .late_signed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(provider = %kind, late_by_seconds = late_by, "delivery with a genuine but late signature taken");
        }

        let mut link = None;
        let mut caller_trace = None;
        let mut path = stored_path;
        if let Some((token, owner)) = known {
            // The provider must read the same token from the path; if it reads another, the
            // delivery is not one we can attribute.
            let provider_token = authenticated
                .link_token
                .as_deref()
                .map(|t| t.trim_matches('/'));
            if provider_token != Some(token.as_str()) {
                return Err(IngestError::Unauthenticated(WebhookRejection::UnknownPath));
            }
            if let Some(descoped_at) = owner.descoped_at {
                // A descoped link's URL stays a bearer secret for as long as it is accepted:
                // past the grace period nothing the vendor may still be retrying needs it.
                let grace = chrono::Duration::from_std(self.inner.config.descoped_token_grace)
                    .unwrap_or(chrono::Duration::MAX);
                if descoped_at
                    .checked_add_signed(grace)
                    .is_some_and(|until| webhook.received_at >= until)
                {
                    return Err(IngestError::Unauthenticated(WebhookRejection::UnknownPath));
                }
                tracing::info!(link = %owner.link_id, "webhook for a descoped link; stored and ignored");
            }
            link = Some((owner.tenant_id.clone(), owner.link_id));
            caller_trace = owner.caller_trace.clone();
            // The token is a bearer secret for this link's webhooks: it has done its job (the
            // delivery is attributed) and must not sit in the inbox or reach admin listings.
            path = path.replace(&token, REDACTED_TOKEN);
        }

        if link.is_none()
            && let Ok(parsed) = implementation.parse_webhook(&webhook)
        {
            // A delivery whose URL does not name its link (Canopy's one endpoint) is attributed
            // now when what it carries names a known link: the claim query then keeps it behind
            // that link's older deliveries, on every replica, as it does for per-link URLs. What
            // names no known link yet (or does not parse) is attributed when processed.
            // The same proof as when processed: a delivery naming a link it cannot prove is
            // not queued behind that link's deliveries either.
            if let Matched::Link(record) = self
                .link_named_by(&kind, connection.as_ref(), &parsed.attribution)
                .await?
            {
                link = Some((record.link.tenant_id, record.link.id));
                caller_trace = record.caller_trace;
            }
        }

        let dedupe_key = match authenticated.vendor_event_id {
            Some(id) if !id.is_empty() => format!("id:{id}"),
            _ => format!("sha256:{}", hex::encode(Sha256::digest(&webhook.body))),
        };
        // Event ids are unique within one vendor account, not across the accounts of several
        // tenants: a tenant connection's deliveries are deduplicated among themselves.
        let dedupe_key = match &connection {
            Some(id) => format!("{id}:{dedupe_key}"),
            None => dedupe_key,
        };
        let sender_trace = webhook
            .headers
            .iter()
            .find(|(name, _)| name == crate::trace::TRACEPARENT)
            .map(|(_, value)| value.as_str());
        crate::trace::adopt_ingest_parent(span, sender_trace, caller_trace.as_deref());
        if let Some((_, link)) = &link {
            span.record("link_id", tracing::field::display(link));
        }
        let trace_context = crate::trace::traceparent(span);
        let ingested = self
            .ingest_queue()
            .ingest(NewDelivery {
                provider: kind,
                dedupe_key,
                link,
                path,
                headers: webhook.headers,
                body: webhook.body,
                received_at: webhook.received_at,
                trace_context,
                connection_id: connection,
            })
            .instrument(span.clone())
            .await
            .map_err(|e| match e {
                StoreError::QueueFull { capacity } => IngestError::Busy { waiting: capacity },
                other => IngestError::Unavailable(other),
            })?;
        match ingested {
            Ingested::Stored(id) => {
                span.record("delivery_id", tracing::field::display(id));
                self.inner.inbox_wake.notify_one();
            }
            Ingested::Duplicate => {
                span.record("duplicate", true);
            }
        }
        Ok(ingested)
    }
}

/// Where a delivery's URL leads: the connection whose secrets authenticate it (`None`: the
/// deployment's default), that connection's provider, and for a per-link URL its token and link.
type Route = (
    Option<ConnectionId>,
    Arc<dyn Provider>,
    Option<(String, Arc<TokenOwner>)>,
);

impl Engine {
    /// Read the path after `/webhooks/{provider}`:
    /// - empty: the default connection's shared URL (vendors that send every webhook to one
    ///   URL);
    /// - a connection id: that connection's shared URL, for a vendor without per-link URLs;
    /// - anything else: a per-link token we issued (`webhook_url` in links.rs); its link names
    ///   the connection.
    ///
    /// A path that is none of these, or names another vendor's connection, is refused before
    /// any signature check or parse: it costs one indexed read.
    async fn webhook_route(&self, kind: &ProviderId, path: &str) -> Result<Route, IngestError> {
        let unknown = || IngestError::Unauthenticated(WebhookRejection::UnknownPath);
        let segment = path.trim_matches('/');
        if segment.is_empty() {
            let provider = self
                .inner
                .providers
                .default_for(kind)
                .ok_or_else(unknown)?
                .clone();
            if provider.capabilities().per_link_webhook_url {
                return Err(unknown());
            }
            return Ok((None, provider, None));
        }
        if segment.len() > MAX_TOKEN_LEN {
            return Err(unknown());
        }
        if let Ok(id) = segment.parse::<ConnectionId>() {
            let provider = self
                .provider_for(kind, Some(&id))
                .await
                .map_err(|e| match e {
                    EngineError::Store(e) if e.is_unavailable() => IngestError::Unavailable(e),
                    _ => unknown(),
                })?;
            if provider.capabilities().per_link_webhook_url {
                return Err(unknown());
            }
            return Ok((Some(id), provider, None));
        }
        let owner = self
            .webhook_token_owner(kind, &token_hash(segment))
            .await
            .map_err(unavailable)?
            .ok_or_else(unknown)?;
        let provider = self
            .provider_for(kind, owner.connection_id.as_ref())
            .await
            .map_err(|e| match e {
                EngineError::Store(e) if e.is_unavailable() => IngestError::Unavailable(e),
                _ => unknown(),
            })?;
        if !provider.capabilities().per_link_webhook_url {
            return Err(unknown());
        }
        Ok((
            owner.connection_id,
            provider,
            Some((segment.to_owned(), owner)),
        ))
    }

    fn ingest_queue(&self) -> &IngestQueue {
        self.inner
            .ingest_queue
            .get_or_init(|| self.inner.store.ingest_queue(self.inner.config.ingest))
    }
}

fn unavailable(err: StoreError) -> IngestError {
    IngestError::Unavailable(err)
}

impl From<EngineError> for IngestError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(e) => IngestError::Unavailable(e),
            other => IngestError::Unavailable(StoreError::Database(other.to_string())),
        }
    }
}
