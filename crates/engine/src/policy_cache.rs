//! The latest version of recently read policies, so that a repeated `GetPolicy` costs no
//! database round trip.
//!
//! What it may never do: serve a policy older than one the same caller could already have
//! learnt of through events. A new policy version is committed in the same transaction as its
//! event, so it is enough that a link's entries are gone before any of its new events can reach
//! a caller of this process:
//! - this process's commits invalidate their links right after the commit returns, before the
//!   engine announces the events to its streams ([`crate::Engine::announce`]);
//! - every read of the log that hands events to a caller (the fan-out tail, a stream catching
//!   up, `ListEvents`) invalidates the links of what it read before handing it on, so an event
//!   committed by another replica, or seen between a local commit and its announcement, is never
//!   in a caller's hands while an older policy of its link is cached.
//!
//! A read that raced with an invalidation must not put back what it read before it: each link
//! slot counts its readers and an epoch, an invalidation bumps the epoch, and a read stores its
//! answer only if the epoch it started under still holds.
//!
//! What is bounded rather than exact: a caller that learns of an event from *another* replica
//! and then asks this one, while no read of this process has seen that event yet. Entries live
//! at most `ttl`, so such an answer is at most `ttl` old.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::{LinkId, TenantId};
use coverwatch_store::StoredPolicy;

struct Entry {
    tenant: TenantId,
    policy_id: String,
    term: PolicyTerm,
    policy: StoredPolicy,
    stored: Instant,
}

#[derive(Default)]
struct Slot {
    entries: Vec<Entry>,
    /// Reads of this link's policies from the database in progress.
    readers: u32,
    /// Bumped by every invalidation of the link.
    epoch: u64,
}

impl Slot {
    fn idle(&self) -> bool {
        self.entries.is_empty() && self.readers == 0
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<LinkId, Slot>,
    entries: usize,
}

pub(crate) struct PolicyCache {
    state: Mutex<State>,
    ttl: Duration,
    capacity: usize,
}

/// What a lookup found: the policy, or the right to store what the database answers.
pub(crate) enum Lookup<'a> {
    Hit(Box<StoredPolicy>),
    Miss(Reading<'a>),
}

/// A read of one policy from the database. Dropped without [`Reading::store`] (an error, a
/// cancelled call), it only stops counting as a reader.
pub(crate) struct Reading<'a> {
    cache: &'a PolicyCache,
    link: LinkId,
    epoch: u64,
    done: bool,
}

impl PolicyCache {
    /// A cache of at most `capacity` policies, each kept at most `ttl`; a zero `ttl` or
    /// `capacity` turns it off.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            ttl,
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

    pub(crate) fn lookup(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        policy_id: &str,
        term: PolicyTerm,
    ) -> Option<Lookup<'_>> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state();
        let slot = state.slots.entry(*link).or_default();
        let before = slot.entries.len();
        slot.entries
            .retain(|e| now.duration_since(e.stored) < self.ttl);
        let expired = before - slot.entries.len();
        let found = slot
            .entries
            .iter()
            .find(|e| e.tenant == *tenant && e.policy_id == policy_id && e.term == term)
            .map(|e| e.policy.clone());
        let epoch = slot.epoch;
        if found.is_none() {
            slot.readers += 1;
        }
        state.entries -= expired;
        Some(match found {
            Some(policy) => {
                let idle = state.slots.get(link).is_some_and(Slot::idle);
                if idle {
                    state.slots.remove(link);
                }
                Lookup::Hit(Box::new(policy))
            }
            None => Lookup::Miss(Reading {
                cache: self,
                link: *link,
                epoch,
                done: false,
            }),
        })
    }

    /// Forgets every cached policy of `links`, and what reads in progress will answer for them.
    pub(crate) fn invalidate<'a>(&self, links: impl IntoIterator<Item = &'a LinkId>) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state();
        if state.slots.is_empty() {
            return;
        }
        for link in links {
            let Some(slot) = state.slots.get_mut(link) else {
                continue;
            };
            let dropped = slot.entries.len();
            slot.entries.clear();
            slot.epoch += 1;
            let idle = slot.idle();
            state.entries -= dropped;
            if idle {
                state.slots.remove(link);
            }
        }
    }

    /// How many policies are cached now (tests watch it).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().entries
    }
}

impl Reading<'_> {
    /// Keeps what the database answered, unless the link was invalidated since the read began.
    pub(crate) fn store(
        mut self,
        tenant: &TenantId,
        policy_id: &str,
        term: PolicyTerm,
        policy: &StoredPolicy,
    ) {
        self.done = true;
        let cache = self.cache;
        let mut state = cache.state();
        let full = state.entries >= cache.capacity;
        if full {
            // Entries of links no one reads any more only leave by expiry: sweep them now.
            let now = Instant::now();
            let mut removed = 0;
            state.slots.retain(|_, slot| {
                let before = slot.entries.len();
                slot.entries
                    .retain(|e| now.duration_since(e.stored) < cache.ttl);
                removed += before - slot.entries.len();
                !slot.idle()
            });
            state.entries -= removed;
        }
        let room = state.entries < cache.capacity;
        let Some(slot) = state.slots.get_mut(&self.link) else {
            return;
        };
        slot.readers -= 1;
        let before = slot.entries.len();
        if room && slot.epoch == self.epoch {
            slot.entries
                .retain(|e| !(e.tenant == *tenant && e.policy_id == policy_id && e.term == term));
            slot.entries.push(Entry {
                tenant: tenant.clone(),
                policy_id: policy_id.to_owned(),
                term,
                policy: policy.clone(),
                stored: Instant::now(),
            });
        }
        let after = slot.entries.len();
        let idle = slot.idle();
        if idle {
            state.slots.remove(&self.link);
        }
        state.entries = state.entries + after - before;
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.cache.state();
        if let Some(slot) = state.slots.get_mut(&self.link) {
            slot.readers -= 1;
            if slot.idle() {
                state.slots.remove(&self.link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::policy::{Carrier, Policy, PolicyStatus, PolicyType};

    fn stored(version: i32) -> StoredPolicy {
        StoredPolicy {
            policy: Policy {
                external_id: "pol-1".into(),
                policy_type: PolicyType::Auto,
                carrier: Carrier {
                    id: "carrier".into(),
                    name: None,
                },
                policy_number: None,
                status: PolicyStatus::Active,
                effective_date: None,
                expiration_date: None,
                cancelled_date: None,
                premium_cents: None,
                address: None,
                vehicles: vec![],
                dwellings: vec![],
                coverages: vec![],
                insureds: vec![],
                interested_parties: vec![],
                documents: vec![],
            },
            term: PolicyTerm::Current,
            version,
            fetched_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn tenant(name: &str) -> TenantId {
        name.parse().unwrap()
    }

    fn hit(cache: &PolicyCache, tenant: &TenantId, link: &LinkId) -> Option<i32> {
        match cache.lookup(tenant, link, "pol-1", PolicyTerm::Current) {
            Some(Lookup::Hit(policy)) => Some(policy.version),
            _ => None,
        }
    }

    fn fill(cache: &PolicyCache, tenant: &TenantId, link: &LinkId, version: i32) {
        match cache.lookup(tenant, link, "pol-1", PolicyTerm::Current) {
            Some(Lookup::Miss(reading)) => {
                reading.store(tenant, "pol-1", PolicyTerm::Current, &stored(version))
            }
            _ => panic!("expected a miss"),
        }
    }

    #[test]
    fn a_stored_policy_is_served_until_its_link_is_invalidated() {
        let cache = PolicyCache::new(Duration::from_secs(60), 10);
        let (a, link) = (tenant("tenant-a"), LinkId::new());
        fill(&cache, &a, &link, 1);
        assert_eq!(hit(&cache, &a, &link), Some(1));
        assert_eq!(hit(&cache, &tenant("tenant-b"), &link), None, "per tenant");
        cache.invalidate([&LinkId::new()]);
        assert_eq!(hit(&cache, &a, &link), Some(1), "another link's change");
        cache.invalidate([&link]);
        assert_eq!(hit(&cache, &a, &link), None);
        assert_eq!(cache.len(), 0);
        assert!(cache.state().slots.is_empty(), "no slot left behind");
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_kept() {
        // The read saw the version before a commit; the commit's invalidation came while it
        // was in flight. Keeping its answer would serve version 1 after version 2 is visible.
        let cache = PolicyCache::new(Duration::from_secs(60), 10);
        let (a, link) = (tenant("tenant-a"), LinkId::new());
        let Some(Lookup::Miss(reading)) = cache.lookup(&a, &link, "pol-1", PolicyTerm::Current)
        else {
            panic!("expected a miss");
        };
        cache.invalidate([&link]);
        reading.store(&a, "pol-1", PolicyTerm::Current, &stored(1));
        assert_eq!(hit(&cache, &a, &link), None);
        // The next read, begun after the invalidation, is kept.
        fill(&cache, &a, &link, 2);
        assert_eq!(hit(&cache, &a, &link), Some(2));
    }

    #[test]
    fn entries_expire_and_a_full_cache_makes_room_from_expired_ones() {
        let cache = PolicyCache::new(Duration::from_millis(50), 2);
        let a = tenant("tenant-a");
        let links = [LinkId::new(), LinkId::new(), LinkId::new()];
        fill(&cache, &a, &links[0], 1);
        fill(&cache, &a, &links[1], 1);
        fill(&cache, &a, &links[2], 1);
        assert_eq!(cache.len(), 2, "capacity holds");
        assert_eq!(hit(&cache, &a, &links[2]), None, "no room was left");
        let deadline = Instant::now() + Duration::from_secs(5);
        while hit(&cache, &a, &links[0]).is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
        fill(&cache, &a, &links[2], 1);
        assert_eq!(
            hit(&cache, &a, &links[2]),
            Some(1),
            "room made from expired entries"
        );
    }

    #[test]
    fn an_abandoned_read_leaves_nothing_behind_and_zero_ttl_turns_it_off() {
        let cache = PolicyCache::new(Duration::from_secs(60), 10);
        let (a, link) = (tenant("tenant-a"), LinkId::new());
        drop(cache.lookup(&a, &link, "pol-1", PolicyTerm::Current));
        assert!(cache.state().slots.is_empty());
        let off = PolicyCache::new(Duration::ZERO, 10);
        assert!(
            off.lookup(&a, &link, "pol-1", PolicyTerm::Current)
                .is_none()
        );
    }
}
