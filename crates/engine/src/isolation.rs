//! Failure isolation: one unit of work (a delivery, one link in the sweep) may panic or hang,
//! and only that unit fails. Everything else a worker does goes on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

/// Panic messages are kept on deliveries and in logs; one built from a whole payload must not
/// grow a row or a log line without bound.
const MAX_PANIC_MESSAGE_CHARS: usize = 500;

/// Why a unit of work did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitFailure {
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("timed out after {}s", .0.as_secs_f64())]
    TimedOut(Duration),
}

/// Run `work` with a time limit, turning a panic inside it into [`UnitFailure::Panicked`].
///
/// Asserting unwind safety holds for the engine's units (and for the gRPC calls that run on the
/// engine, which the service wraps the same way): what they share with other units is
/// behind mutexes that tolerate poisoning (the link-lock map, the held-lease list), tokio
/// mutexes (per-link locks: no poisoning, the guard is dropped while unwinding) or database
/// transactions (rolled back when dropped). A panicking unit leaves no half-written memory that
/// anyone else reads.
pub async fn isolated<F: Future>(limit: Duration, work: F) -> Result<F::Output, UnitFailure> {
    match tokio::time::timeout(limit, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(payload)) => Err(UnitFailure::Panicked(panic_message(payload.as_ref()))),
        Err(_) => Err(UnitFailure::TimedOut(limit)),
    }
}

/// Run a synchronous computation, turning a panic inside it into its message.
pub(crate) fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(work))
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// The message a panic was raised with (`panic!("…")`, `expect`, an index out of bounds…), cut
/// to a bounded number of characters.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.as_str()
    } else {
        "a panic without a message"
    };
    if message.chars().count() <= MAX_PANIC_MESSAGE_CHARS {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(MAX_PANIC_MESSAGE_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_the_caller_goes_on() {
        let failed = isolated(Duration::from_secs(5), async {
            let text = "1234é";
            // A byte range inside a character: the kind of bug the boundary exists for.
            text.get(..5)
                .map(str::len)
                .unwrap_or_else(|| panic!("cut {text:?}"))
        })
        .await;
        assert_eq!(failed, Err(UnitFailure::Panicked("cut \"1234é\"".into())));
        assert_eq!(failed.unwrap_err().to_string(), "panicked: cut \"1234é\"");
        assert_eq!(isolated(Duration::from_secs(5), async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_hanging_unit_times_out() {
        let limit = Duration::from_millis(20);
        let hung = isolated(limit, futures::future::pending::<()>()).await;
        assert_eq!(hung, Err(UnitFailure::TimedOut(limit)));
        assert_eq!(hung.unwrap_err().to_string(), "timed out after 0.02s");
    }

    #[test]
    fn long_messages_are_cut_by_characters() {
        let long = "é".repeat(MAX_PANIC_MESSAGE_CHARS + 10);
        let message = panic_message(&long);
        assert_eq!(message.chars().count(), MAX_PANIC_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&42u8), "a panic without a message");
        assert_eq!(
            catch_panic(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
    }
}
