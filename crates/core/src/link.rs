//! The Link: one end-user's connected insurance account, and the only ways its state may move.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{LinkId, TenantId, UserId};
use crate::provider::ProviderId;
use crate::requirements::OverallStatus;

/// Where a link stands.
///
/// `PENDING` (session issued) → `ACTIVE` (linked and monitored) ⇄ `RECONNECT_REQUIRED`.
/// `EXITED` / `FAILED` end a session that never linked; `DESCOPED` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LinkState {
    Pending,
    Active,
    ReconnectRequired,
    Exited,
    Failed,
    Descoped,
}

/// A state change the machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a link cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: LinkState,
    pub to: LinkState,
}

impl LinkState {
    pub const ALL: [LinkState; 6] = [
        LinkState::Pending,
        LinkState::Active,
        LinkState::ReconnectRequired,
        LinkState::Exited,
        LinkState::Failed,
        LinkState::Descoped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Pending => "PENDING",
            LinkState::Active => "ACTIVE",
            LinkState::ReconnectRequired => "RECONNECT_REQUIRED",
            LinkState::Exited => "EXITED",
            LinkState::Failed => "FAILED",
            LinkState::Descoped => "DESCOPED",
        }
    }

    /// Whether the machine allows `self → to`. Staying put is not a transition.
    ///
    /// An exited or failed session may still complete: an Ignition token never expires and a
    /// Canopy pull that hit an internal error may finish later, so a late completion is honoured
    /// rather than dropped.
    pub fn can_become(self, to: LinkState) -> bool {
        use LinkState::*;
        matches!(
            (self, to),
            (Pending, Active | Exited | Failed | Descoped)
                | (Exited | Failed, Active | Descoped)
                | (Active, ReconnectRequired | Descoped)
                | (ReconnectRequired, Active | Descoped)
        )
    }

    pub fn transition(self, to: LinkState) -> Result<LinkState, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Whether the vendor is (or may soon be) watching this account for us.
    pub fn is_linked(self) -> bool {
        matches!(self, LinkState::Active | LinkState::ReconnectRequired)
    }

    pub fn is_final(self) -> bool {
        self == LinkState::Descoped
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        LinkState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown link state `{s}`"))
    }
}

/// A link as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub id: LinkId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub state: LinkState,
    /// The caller's own flat key/value tags.
    pub metadata: BTreeMap<String, String>,
    /// The URL the end-user opens to connect or reconnect, while one is outstanding.
    pub session_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the vendor last delivered fresh data for this link.
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// The requirement set attached to the link, and where the link stood at its last check.
    pub requirements: Option<LinkRequirements>,
    /// Since when the link has been reported stale (`link.stale`); cleared by fresh data.
    pub stale_since: Option<DateTime<Utc>>,
}

/// A link's attached requirement set and the outcome of its latest check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRequirements {
    pub set_id: String,
    /// `None` until the link has been checked against this revision of the set.
    pub status: Option<OverallStatus>,
    pub evaluated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::LinkState::{self, *};

    /// Every pair the machine allows, written out once by hand so that a change to
    /// `can_become` has to change this list too.
    const ALLOWED: &[(LinkState, LinkState)] = &[
        (Pending, Active),
        (Pending, Exited),
        (Pending, Failed),
        (Pending, Descoped),
        (Exited, Active),
        (Exited, Descoped),
        (Failed, Active),
        (Failed, Descoped),
        (Active, ReconnectRequired),
        (Active, Descoped),
        (ReconnectRequired, Active),
        (ReconnectRequired, Descoped),
    ];

    #[test]
    fn every_allowed_transition_succeeds() {
        for &(from, to) in ALLOWED {
            assert_eq!(from.transition(to), Ok(to), "{from} → {to}");
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        let mut refused = 0;
        for from in LinkState::ALL {
            for to in LinkState::ALL {
                if ALLOWED.contains(&(from, to)) {
                    continue;
                }
                let err = from.transition(to).unwrap_err();
                assert_eq!((err.from, err.to), (from, to));
                assert_eq!(
                    err.to_string(),
                    format!("a link cannot go from {from} to {to}")
                );
                refused += 1;
            }
        }
        assert_eq!(refused, 36 - ALLOWED.len());
    }

    #[test]
    fn descoped_is_final_and_self_transitions_are_not_transitions() {
        assert!(LinkState::ALL.iter().all(|&to| !Descoped.can_become(to)));
        assert!(LinkState::ALL.iter().all(|&s| !s.can_become(s)));
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in LinkState::ALL {
            assert_eq!(state.as_str().parse::<LinkState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert!("ACTIVATED".parse::<LinkState>().is_err());
    }
}
