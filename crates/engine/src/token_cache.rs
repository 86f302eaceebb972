//! Recently looked-up per-link webhook tokens, so that a delivery to a per-link URL (Axle's)
//! costs no database round trip before it is queued for the group commit: the lookup was two
//! reads (the token's row, then its link) on every delivery, more than the insert itself.
//!
//! What an entry holds is only what ingest needs to accept and attribute a delivery — the link's
//! tenant and id, whether and when it was descoped, and the trace context of its latest session
//! — never the link's sealed fields.
//!
//! How stale an answer can be:
//! - this process's commits that may change any of that (a state change, a new session, a
//!   folded link's token moving to the link it was folded into: every kind of event that comes
//!   with one, see [`changes_attribution`]) forget the link's entries right after they commit,
//!   before the engine announces their events ([`crate::Engine::announce`]); a read that raced
//!   with such a commit does not put back what it read before it (a generation counter, as in
//!   `policy_cache`);
//! - a change committed by *another* replica is seen once the entry expires: an answer is at
//!   most `ttl` old. For descoping, the one change that refuses a token, this costs nothing: a
//!   descoped link's URL is still accepted (stored and ignored) for `descoped_token_grace`, and
//!   `ttl` is never longer than that grace, so a token read as not yet descoped before the
//!   descope expires from the cache before the grace ends, and no delivery is accepted past it.
//!
//! Unknown tokens are not cached: a link created on another replica must be reachable at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coverwatch_core::event::EventKind;
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::{LinkId, LinkState, ProviderId, TenantId};
use coverwatch_store::StoreError;

use crate::Engine;

/// What ingest needs to know of the link a webhook token belongs to.
#[derive(Debug, Clone)]
pub(crate) struct TokenOwner {
    pub tenant_id: TenantId,
    pub link_id: LinkId,
    /// When the link was descoped (its last `link.descoped` event, else its last update):
    /// `Some` exactly when its state is `DESCOPED`.
    pub descoped_at: Option<DateTime<Utc>>,
    /// W3C `traceparent` of the call that opened the link's latest session.
    pub caller_trace: Option<String>,
    /// The tenant's vendor connection the link uses (`None`: the deployment's default); its
    /// provider checks the delivery. Fixed for a link's life, so safe to cache.
    pub connection_id: Option<ConnectionId>,
}

struct Entry {
    owner: Arc<TokenOwner>,
    stored: Instant,
}

#[derive(Default)]
struct State {
    /// By provider and token hash.
    entries: HashMap<(ProviderId, String), Entry>,
    /// Bumped by every invalidation.
    generation: u64,
    /// The generation at which each link was last invalidated, for reads in flight.
    invalidated: HashMap<LinkId, u64>,
    /// Reads begun before this generation are not kept: invalidations older than the ones in
    /// `invalidated` were forgotten.
    floor: u64,
}

/// Invalidations remembered for reads in flight; past this many, older ones are forgotten and
/// reads begun before are not kept.
const REMEMBERED_INVALIDATIONS: usize = 1024;

pub(crate) struct TokenCache {
    state: Mutex<State>,
    ttl: Duration,
    capacity: usize,
}

/// A read of a token's link from the database, begun at `generation`.
pub(crate) struct Reading {
    generation: u64,
}

/// Whether an event of this kind may come with a change of what a [`TokenOwner`] holds or of
/// which link a token belongs to. Exhaustive on purpose: a new kind must be decided here.
pub(crate) fn changes_attribution(kind: EventKind) -> bool {
    match kind {
        EventKind::SessionOpened
        | EventKind::Completed
        | EventKind::Exited
        | EventKind::Failed
        | EventKind::AuthStatus
        | EventKind::ReconnectRequired
        | EventKind::Reconnected
        | EventKind::Descoped => true,
        EventKind::AccountUpdated
        | EventKind::PolicyUpdated
        | EventKind::RenewalAvailable
        | EventKind::RequirementsUnmet
        | EventKind::RequirementsMet
        | EventKind::DataRefreshed
        | EventKind::Stale
        | EventKind::Vendor => false,
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each kept at most `ttl` (clamped to `grace`, the
    /// descoped-token grace, see the module documentation); zero turns it off.
    pub(crate) fn new(ttl: Duration, capacity: usize, grace: Duration) -> Self {
        Self {
            state: Mutex::default(),
            ttl: ttl.min(grace),
            capacity,
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under this lock leaves the state whole: recover from a poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached owner of the token, or the right to keep what the database answers.
    /// `None` when the cache is off.
    pub(crate) fn lookup(
        &self,
        provider: &ProviderId,
        token_hash: &str,
    ) -> Option<Result<Arc<TokenOwner>, Reading>> {
        if !self.enabled() {
            return None;
        }
        let mut state = self.state();
        let key = (provider.clone(), token_hash.to_owned());
        if let Some(entry) = state.entries.get(&key) {
            if entry.stored.elapsed() < self.ttl {
                return Some(Ok(entry.owner.clone()));
            }
            state.entries.remove(&key);
        }
        Some(Err(Reading {
            generation: state.generation,
        }))
    }

    /// Keeps what the database answered, unless its link was invalidated since the read began
    /// or the cache is full of live entries.
    pub(crate) fn store(
        &self,
        reading: Reading,
        provider: &ProviderId,
        token_hash: &str,
        owner: Arc<TokenOwner>,
    ) {
        let mut state = self.state();
        let raced = reading.generation < state.floor
            || state
                .invalidated
                .get(&owner.link_id)
                .is_some_and(|&at| at > reading.generation);
        if raced {
            return;
        }
        if state.entries.len() >= self.capacity {
            // Entries of tokens no one sends to any more only leave by expiry: sweep them now.
            let ttl = self.ttl;
            state.entries.retain(|_, e| e.stored.elapsed() < ttl);
            if state.entries.len() >= self.capacity {
                return;
            }
        }
        state.entries.insert(
            (provider.clone(), token_hash.to_owned()),
            Entry {
                owner,
                stored: Instant::now(),
            },
        );
    }

    /// Forgets the tokens of every link with an event that may change its attribution.
    pub(crate) fn invalidate<'a>(
        &self,
        events: impl IntoIterator<Item = &'a coverwatch_core::Event>,
    ) {
        if !self.enabled() {
            return;
        }
        let mut links: Vec<LinkId> = events
            .into_iter()
            .filter(|e| changes_attribution(e.kind()))
            .map(|e| e.link_id)
            .collect();
        if links.is_empty() {
            return;
        }
        links.sort();
        links.dedup();
        let mut state = self.state();
        state.generation += 1;
        let generation = state.generation;
        if state.invalidated.len() + links.len() > REMEMBERED_INVALIDATIONS {
            state.invalidated.clear();
            // Reads begun before now may have missed an invalidation forgotten here.
            state.floor = generation;
        }
        for link in &links {
            state.invalidated.insert(*link, generation);
        }
        state
            .entries
            .retain(|_, entry| links.binary_search(&entry.owner.link_id).is_err());
    }

    /// How many tokens are cached now (tests watch it).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().entries.len()
    }
}

impl Engine {
    /// The link a per-link webhook token (its hash) belongs to, from memory when it was looked
    /// up recently (see the module documentation for how stale that can be).
    pub(crate) async fn webhook_token_owner(
        &self,
        provider: &ProviderId,
        token_hash: &str,
    ) -> Result<Option<Arc<TokenOwner>>, StoreError> {
        let cache = &self.inner.token_cache;
        let reading = match cache.lookup(provider, token_hash) {
            Some(Ok(owner)) => return Ok(Some(owner)),
            Some(Err(reading)) => Some(reading),
            None => None,
        };
        let store = &self.inner.store;
        let Some(record) = store
            .find_link_by_webhook_token(provider.clone(), token_hash)
            .await?
        else {
            return Ok(None);
        };
        let link = record.link;
        let descoped_at = if link.state == LinkState::Descoped {
            Some(
                store
                    .descoped_at(&link.tenant_id, &link.id)
                    .await?
                    .unwrap_or(link.updated_at),
            )
        } else {
            None
        };
        let owner = Arc::new(TokenOwner {
            tenant_id: link.tenant_id,
            link_id: link.id,
            descoped_at,
            caller_trace: record.caller_trace,
            connection_id: record.connection_id,
        });
        if let Some(reading) = reading {
            cache.store(reading, provider, token_hash, owner.clone());
        }
        Ok(Some(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::Event;
    use coverwatch_core::event::EventPayload;

    fn owner(link: LinkId) -> Arc<TokenOwner> {
        Arc::new(TokenOwner {
            tenant_id: "tenant-a".parse().unwrap(),
            link_id: link,
            descoped_at: None,
            caller_trace: None,
            connection_id: None,
        })
    }

    fn axle() -> ProviderId {
        ProviderId::from_static("axle")
    }

    fn event(link: LinkId, payload: EventPayload) -> Event {
        Event {
            cursor: 1,
            id: coverwatch_core::ids::EventId::new(),
            tenant_id: "tenant-a".parse().unwrap(),
            link_id: link,
            user_id: "user-1".parse().unwrap(),
            provider: axle(),
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            payload,
            detail: Default::default(),
        }
    }

    fn descoped(link: LinkId) -> Event {
        event(
            link,
            EventPayload::Descoped {
                reason: coverwatch_core::event::DescopeReason::Requested,
                replaced_by: None,
            },
        )
    }

    fn fill(cache: &TokenCache, hash: &str, link: LinkId) {
        match cache.lookup(&axle(), hash) {
            Some(Err(reading)) => cache.store(reading, &axle(), hash, owner(link)),
            _ => panic!("expected a miss"),
        }
    }

    fn hit(cache: &TokenCache, hash: &str) -> Option<LinkId> {
        match cache.lookup(&axle(), hash) {
            Some(Ok(owner)) => Some(owner.link_id),
            _ => None,
        }
    }

    #[test]
    fn a_token_is_served_until_its_link_changes_state() {
        let cache = TokenCache::new(Duration::from_secs(60), 10, Duration::from_secs(3600));
        let (link, other) = (LinkId::new(), LinkId::new());
        fill(&cache, "h1", link);
        fill(&cache, "h2", other);
        assert_eq!(hit(&cache, "h1"), Some(link));
        let policy_only = event(
            link,
            EventPayload::Vendor {
                vendor_type: "ping".into(),
            },
        );
        cache.invalidate([&policy_only]);
        assert_eq!(
            hit(&cache, "h1"),
            Some(link),
            "an event that changes no state"
        );
        cache.invalidate([&descoped(link)]);
        assert_eq!(hit(&cache, "h1"), None, "descoped: read again");
        assert_eq!(hit(&cache, "h2"), Some(other), "another link's token stays");
        assert!(
            cache
                .lookup(&ProviderId::from_static("canopy"), "h2")
                .is_some_and(|l| l.is_err()),
            "per provider"
        );
    }

    #[test]
    fn a_read_that_raced_with_a_state_change_is_not_kept() {
        let cache = TokenCache::new(Duration::from_secs(60), 10, Duration::from_secs(3600));
        let link = LinkId::new();
        let Some(Err(reading)) = cache.lookup(&axle(), "h1") else {
            panic!("expected a miss");
        };
        // The link was descoped while the read (which saw it active) was in flight.
        cache.invalidate([&descoped(link)]);
        cache.store(reading, &axle(), "h1", owner(link));
        assert_eq!(hit(&cache, "h1"), None);
        // A read begun after the change is kept.
        fill(&cache, "h1", link);
        assert_eq!(hit(&cache, "h1"), Some(link));
    }

    #[test]
    fn forgotten_invalidations_refuse_the_reads_begun_before_them() {
        let cache = TokenCache::new(Duration::from_secs(60), 10, Duration::from_secs(3600));
        let link = LinkId::new();
        let Some(Err(reading)) = cache.lookup(&axle(), "h1") else {
            panic!("expected a miss");
        };
        cache.invalidate([&descoped(link)]);
        for _ in 0..REMEMBERED_INVALIDATIONS {
            cache.invalidate([&descoped(LinkId::new())]);
        }
        cache.store(reading, &axle(), "h1", owner(link));
        assert_eq!(hit(&cache, "h1"), None);
    }

    #[test]
    fn entries_expire_the_ttl_is_at_most_the_grace_and_capacity_holds() {
        let cache = TokenCache::new(Duration::from_secs(3600), 2, Duration::from_millis(50));
        assert_eq!(cache.ttl, Duration::from_millis(50), "clamped to the grace");
        fill(&cache, "h1", LinkId::new());
        fill(&cache, "h2", LinkId::new());
        fill(&cache, "h3", LinkId::new());
        assert_eq!(cache.len(), 2, "capacity holds");
        assert_eq!(hit(&cache, "h3"), None, "no room was left");
        let deadline = Instant::now() + Duration::from_secs(5);
        while hit(&cache, "h1").is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
        fill(&cache, "h3", LinkId::new());
        assert!(
            hit(&cache, "h3").is_some(),
            "room made from expired entries"
        );
        let off = TokenCache::new(Duration::ZERO, 10, Duration::from_secs(1));
        assert!(off.lookup(&axle(), "h1").is_none());
    }
}
