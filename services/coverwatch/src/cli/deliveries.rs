//! `coverwatch deliveries list|show|replay` over AdminService.

use coverwatch_proto::v1;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::client::{Admin, KeyKind, refused, request};
use super::output::{self, DELIVERY, clean, say, short, time};
use super::{CliError, DeliveriesCommand, DeliveryFilterArgs};

/// The largest page AdminService returns.
const MAX_PAGE: u32 = 500;

pub async fn run(admin: Admin, command: DeliveriesCommand, json: bool) -> Result<(), CliError> {
    match command {
        DeliveriesCommand::List { filter, limit } => list(admin, &filter, limit, json).await,
        DeliveriesCommand::Show { id } => show(admin, &id, json).await,
        DeliveriesCommand::Replay {
            ids,
            status,
            provider,
            link,
            since,
            dry_run,
        } => {
            let targets = match status {
                Some(status) => {
                    let filter = Filter {
                        status: v1::DeliveryStatus::from(status),
                        provider: provider.map(v1::Provider::from),
                        link,
                        since,
                    };
                    matching(&mut admin.clone(), &filter, None).await?.0
                }
                None => named(&mut admin.clone(), &ids).await?,
            };
            if dry_run {
                print_dry_run(&targets, json)
            } else {
                replay(admin, &targets, json).await
            }
        }
    }
}

/// A ListDeliveries filter, as the CLI's options give it.
struct Filter {
    status: v1::DeliveryStatus,
    provider: Option<v1::Provider>,
    link: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&DeliveryFilterArgs> for Filter {
    fn from(args: &DeliveryFilterArgs) -> Self {
        Self {
            status: args
                .status
                .map_or(v1::DeliveryStatus::Unspecified, v1::DeliveryStatus::from),
            provider: args.provider.map(v1::Provider::from),
            link: args.link.clone(),
            since: args.since,
        }
    }
}

/// Every delivery matching `filter`, oldest first, page by page; at most `limit`. Also says
/// whether more matched than were returned.
async fn matching(
    admin: &mut Admin,
    filter: &Filter,
    limit: Option<u32>,
) -> Result<(Vec<v1::Delivery>, bool), CliError> {
    let mut out: Vec<v1::Delivery> = Vec::new();
    let mut page_token = String::new();
    loop {
        let left = limit.map_or(MAX_PAGE, |l| l.saturating_sub(out.len() as u32));
        let page = admin
            .list_deliveries(request(v1::ListDeliveriesRequest {
                status: filter.status as i32,
                provider: filter.provider.map_or(0, |p| p as i32),
                link_id: filter.link.clone(),
                page_size: i32::try_from(left.min(MAX_PAGE)).unwrap_or(500),
                page_token: page_token.clone(),
                received_since: filter.since.map(coverwatch_proto::convert::timestamp),
                provider_id: String::new(),
            }))
            .await
            .map_err(|s| refused(&s, KeyKind::Admin))?
            .into_inner();
        out.extend(page.deliveries);
        let more = !page.next_page_token.is_empty();
        if !more {
            return Ok((out, false));
        }
        if limit.is_some_and(|l| out.len() as u32 >= l) {
            return Ok((out, true));
        }
        page_token = page.next_page_token;
    }
}

/// The named deliveries, each read first, so that a typo replays nothing at all.
async fn named(admin: &mut Admin, ids: &[String]) -> Result<Vec<v1::Delivery>, CliError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(get(admin, id).await?);
    }
    Ok(out)
}

async fn get(admin: &mut Admin, id: &str) -> Result<v1::Delivery, CliError> {
    admin
        .get_delivery(request(v1::GetDeliveryRequest {
            delivery_id: id.to_owned(),
        }))
        .await
        .map_err(|s| refused(&s, KeyKind::Admin))?
        .into_inner()
        .delivery
        .ok_or_else(|| CliError::new(format!("the server sent no delivery for {id}")))
}

async fn list(
    mut admin: Admin,
    args: &DeliveryFilterArgs,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    let (deliveries, more) = matching(&mut admin, &Filter::from(args), Some(limit)).await?;
    if json {
        return output::print_json(&json!({
            "deliveries": output::json_all(&deliveries, DELIVERY)?,
            "more": more,
        }));
    }
    print_table(&deliveries)?;
    let count = deliveries.len();
    let noun = if count == 1 { "delivery" } else { "deliveries" };
    if more {
        say!("{count} {noun} shown; more match (raise --limit)");
    } else {
        say!("{count} {noun}");
    }
    Ok(())
}

fn print_table(deliveries: &[v1::Delivery]) -> Result<(), CliError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut table = output::table(&[
        "ID",
        "PROVIDER",
        "STATUS",
        "RECEIVED",
        "ATTEMPTS",
        "LINK",
        "LAST ERROR",
    ]);
    for d in deliveries {
        table.add_row(vec![
            d.id.clone(),
            output::provider(d.provider, &d.provider_id),
            output::delivery_status(d.status),
            time(d.received_at.as_ref()),
            d.attempts.to_string(),
            output::or_dash(d.link_id.as_deref()),
            d.last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| short(e, 60)),
        ]);
    }
    say!("{}", output::render(table));
    Ok(())
}

async fn show(mut admin: Admin, id: &str, json: bool) -> Result<(), CliError> {
    let d = get(&mut admin, id).await?;
    if json {
        return output::print_json(&output::json(&d, DELIVERY)?);
    }
    let body_size = if d.body_purged {
        "purged by retention".to_owned()
    } else {
        format!("{} bytes", d.body_size)
    };
    say!(
        "{}",
        output::record(&[
            ("id", d.id.clone()),
            ("provider", output::provider(d.provider, &d.provider_id)),
            ("status", output::delivery_status(d.status)),
            ("dedupe key", clean(&d.dedupe_key)),
            ("tenant", output::or_dash(d.tenant_id.as_deref())),
            ("link", output::or_dash(d.link_id.as_deref())),
            ("path", clean(&d.path)),
            ("attempts", d.attempts.to_string()),
            ("last error", output::or_dash(d.last_error.as_deref())),
            ("received", time(d.received_at.as_ref())),
            ("next attempt", time(d.next_attempt_at.as_ref())),
            ("processed", time(d.processed_at.as_ref())),
            ("body", body_size),
        ])
    );
    if !d.headers.is_empty() {
        say!("\nheaders:");
        for header in &d.headers {
            say!("  {}: {}", clean(&header.name), clean(&header.value));
        }
    }
    if !d.body.is_empty() {
        say!("\nbody:");
        match std::str::from_utf8(&d.body) {
            Ok(text) => say!("{}", clean(text)),
            Err(_) => say!("(not UTF-8; --json gives it in base64)"),
        }
    }
    Ok(())
}

fn print_dry_run(targets: &[v1::Delivery], json: bool) -> Result<(), CliError> {
    if json {
        return output::print_json(&json!({
            "dry_run": true,
            "deliveries": output::json_all(targets, DELIVERY)?,
        }));
    }
    print_table(targets)?;
    say!(
        "dry run: {} {} would be replayed; nothing was changed",
        targets.len(),
        if targets.len() == 1 {
            "delivery"
        } else {
            "deliveries"
        }
    );
    Ok(())
}

/// Replay one by one, in receipt order. A delivery that cannot be replayed any more (taken
/// back by the worker, or its body purged) is skipped with the server's reason; any other
/// failure stops the run, saying how far it got.
async fn replay(admin: Admin, targets: &[v1::Delivery], json: bool) -> Result<(), CliError> {
    let bar = ProgressBar::new(targets.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} replayed  {msg}") {
        bar.set_style(style);
    }
    let mut replayed: Vec<&str> = Vec::new();
    let mut skipped: Vec<(&str, String)> = Vec::new();
    for d in targets {
        bar.set_message(d.id.clone());
        let result = admin
            .clone()
            .replay_delivery(request(v1::ReplayDeliveryRequest {
                delivery_id: d.id.clone(),
            }))
            .await;
        match result {
            Ok(_) => replayed.push(&d.id),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                skipped.push((&d.id, status.message().to_owned()));
            }
            Err(status) => {
                bar.abandon();
                return Err(CliError::new(format!(
                    "stopped at {} after replaying {} of {}: {}",
                    d.id,
                    replayed.len(),
                    targets.len(),
                    refused(&status, KeyKind::Admin)
                )));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        return output::print_json(&json!({
            "dry_run": false,
            "replayed": replayed,
            "skipped": skipped
                .iter()
                .map(|(id, reason)| json!({"id": id, "reason": reason}))
                .collect::<Vec<_>>(),
        }));
    }
    if !skipped.is_empty() {
        let mut table = output::table(&["SKIPPED", "REASON"]);
        for (id, reason) in &skipped {
            table.add_row(vec![(*id).to_owned(), short(reason, 100)]);
        }
        say!("{}", output::render(table));
    }
    say!(
        "replayed {} of {}; skipped {}",
        replayed.len(),
        targets.len(),
        skipped.len()
    );
    Ok(())
}
