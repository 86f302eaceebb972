//! `coverwatch events tail` over MonitoringService: WatchEvents, one line per event, until
//! Ctrl-C.

use coverwatch_proto::v1;
use coverwatch_proto::v1::event::Payload;

use super::CliError;
use super::client::{KeyKind, Monitoring, refused, request};
use super::output::{self, EVENT, short, time};

/// ListEvents' largest page, to find the newest cursor quickly.
const MAX_PAGE: i32 = 1000;

pub async fn tail(
    (mut client, key): (Monitoring, KeyKind),
    mut watch: v1::WatchEventsRequest,
    from_now: bool,
    json: bool,
) -> Result<(), CliError> {
    if from_now {
        watch.after_cursor = newest_cursor(&mut client, key).await?;
    }
    let start = match &watch.consumer {
        Some(consumer) => format!("after the cursor consumer `{consumer}` acknowledged"),
        None => format!("after cursor {}", watch.after_cursor),
    };
    let mut last = watch.after_cursor;
    // Registered before the stream opens, so an early Ctrl-C is not lost.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut stream = client
        .watch_events(tonic::Request::new(watch))
        .await
        .map_err(|s| refused(&s, key))?
        .into_inner();
    eprintln!("following events {start}; Ctrl-C to stop");
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    last = event.cursor;
                    let line = if json {
                        serde_json::to_string(&output::json(&event, EVENT)?)
                            .map_err(|e| CliError::new(format!("cannot write JSON: {e}")))?
                    } else {
                        line(&event)
                    };
                    output::emit(&line)?;
                }
                Ok(None) => {
                    return Err(CliError::new(format!(
                        "the server closed the stream after cursor {last}; resume with --after {last}"
                    )));
                }
                Err(status) => {
                    return Err(CliError::new(format!(
                        "{} (last cursor printed: {last}; resume with --after {last})",
                        refused(&status, key)
                    )));
                }
            }
        }
    }
}

/// The cursor of the caller's newest event (0 when there is none), read page by page.
async fn newest_cursor(client: &mut Monitoring, key: KeyKind) -> Result<i64, CliError> {
    let mut after = 0;
    loop {
        let page = client
            .list_events(request(v1::ListEventsRequest {
                after_cursor: after,
                page_size: MAX_PAGE,
                ..Default::default()
            }))
            .await
            .map_err(|s| refused(&s, key))?
            .into_inner();
        if page.next_cursor <= after {
            return Ok(after);
        }
        after = page.next_cursor;
    }
}

/// `cursor  recorded_at  kind  link  provider  what happened`.
fn line(event: &v1::Event) -> String {
    format!(
        "{}  {}  {:<26}  {}  {:<6}  {}",
        event.cursor,
        time(event.recorded_at.as_ref()),
        output::event_kind(event.kind),
        event.link_id,
        output::provider(event.provider, &event.provider_id),
        short(&detail(event), 120),
    )
}

fn name(value: Option<&str>, prefix: &str) -> String {
    output::enum_value(value, prefix)
}

/// The payload in a few words.
fn detail(event: &v1::Event) -> String {
    match &event.payload {
        Some(Payload::LinkSessionOpened(p)) if p.reconnect => "reconnect session".to_owned(),
        Some(Payload::LinkCompleted(p)) => format!("{} policies", p.policy_external_ids.len()),
        Some(Payload::LinkExited(p)) => p.step.clone().unwrap_or_default(),
        Some(Payload::LinkFailed(p)) => format!(
            "{} {}",
            name(p.reason().as_str_name().into(), "FAILURE_REASON_"),
            p.message.as_deref().unwrap_or_default()
        ),
        Some(Payload::LinkAuthStatus(p)) => name(p.status().as_str_name().into(), "AUTH_STATUS_"),
        Some(Payload::LinkReconnectRequired(p)) => {
            name(p.reason().as_str_name().into(), "RECONNECT_REASON_")
        }
        Some(Payload::LinkDescoped(p)) => name(p.reason().as_str_name().into(), "DESCOPE_REASON_"),
        Some(Payload::AccountUpdated(p)) => {
            format!("{} ({} changes)", p.account_external_id, p.changes.len())
        }
        Some(Payload::PolicyUpdated(p)) => format!(
            "{} {} ({} changes)",
            p.policy_external_id,
            name(p.status().as_str_name().into(), "POLICY_STATUS_"),
            p.changes.len()
        ),
        Some(Payload::PolicyRenewalAvailable(p)) => p.policy_external_id.clone(),
        Some(Payload::PolicyRequirementsUnmet(p)) => p.requirement_set.clone(),
        Some(Payload::PolicyRequirementsMet(p)) => p.requirement_set.clone(),
        Some(Payload::DataRefreshed(p)) => format!("{} policies", p.policy_count),
        Some(Payload::VendorEvent(p)) => p.vendor_type.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_happened() {
        let event = v1::Event {
            cursor: 42,
            link_id: "lnk_0123".into(),
            provider: v1::Provider::Canopy as i32,
            kind: v1::EventKind::VendorEvent as i32,
            recorded_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            payload: Some(Payload::VendorEvent(v1::VendorEvent {
                vendor_type: "BURST\u{1b}[2J".into(),
            })),
            ..Default::default()
        };
        let text = line(&event);
        assert!(
            text.starts_with("42  2027-01-15T08:00:00Z  vendor.event "),
            "{text}"
        );
        assert!(
            text.ends_with("lnk_0123  canopy  BURST\\u{1b}[2J"),
            "{text}"
        );
    }
}
