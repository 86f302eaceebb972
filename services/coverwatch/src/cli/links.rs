//! `coverwatch links show` over MonitoringService: GetLink and ListPolicies.

use coverwatch_proto::v1;
use serde_json::json;

use super::CliError;
use super::client::{KeyKind, Monitoring, refused, request};
use super::output::{self, LINK, POLICY, clean, say, time};

pub async fn show(
    (mut client, key): (Monitoring, KeyKind),
    link_id: &str,
    json: bool,
) -> Result<(), CliError> {
    let link = client
        .get_link(request(v1::GetLinkRequest {
            link_id: link_id.to_owned(),
        }))
        .await
        .map_err(|s| refused(&s, key))?
        .into_inner()
        .link
        .ok_or_else(|| CliError::new(format!("the server sent no link for {link_id}")))?;
    let policies = client
        .list_policies(request(v1::ListPoliciesRequest {
            link_id: link_id.to_owned(),
        }))
        .await
        .map_err(|s| refused(&s, key))?
        .into_inner()
        .policies;
    if json {
        return output::print_json(&json!({
            "link": output::json(&link, LINK)?,
            "policies": output::json_all(&policies, POLICY)?,
        }));
    }
    let metadata = link
        .metadata
        .iter()
        .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let requirements = match &link.requirement_set_id {
        Some(set) => format!(
            "{} ({})",
            clean(set),
            output::enum_value(
                v1::RequirementsStatus::try_from(link.requirements_status)
                    .ok()
                    .map(|s| s.as_str_name()),
                "REQUIREMENTS_STATUS_"
            )
        ),
        None => "-".to_owned(),
    };
    say!(
        "{}",
        output::record(&[
            ("link", link.id.clone()),
            ("user", clean(&link.user_id)),
            (
                "provider",
                output::provider(link.provider, &link.provider_id)
            ),
            ("state", output::link_state(link.state)),
            ("created", time(link.created_at.as_ref())),
            ("updated", time(link.updated_at.as_ref())),
            ("last refreshed", time(link.last_refreshed_at.as_ref())),
            ("stale since", time(link.stale_since.as_ref())),
            ("session url", output::or_dash(link.session_url.as_deref())),
            ("requirements", requirements),
            (
                "metadata",
                if metadata.is_empty() {
                    "-".to_owned()
                } else {
                    metadata
                }
            ),
        ])
    );
    say!();
    if policies.is_empty() {
        say!("no policy data yet");
        return Ok(());
    }
    let mut table = output::table(&[
        "POLICY",
        "TYPE",
        "CARRIER",
        "NUMBER",
        "STATUS",
        "EFFECTIVE",
        "EXPIRES",
        "PREMIUM",
        "VEHICLES",
        "DWELLINGS",
        "COVERAGES",
    ]);
    for p in &policies {
        let carrier = p.carrier.as_ref();
        table.add_row(vec![
            clean(&p.external_id),
            match &p.other_policy_type {
                Some(other) => clean(other),
                None => output::enum_value(
                    v1::PolicyType::try_from(p.policy_type)
                        .ok()
                        .map(|t| t.as_str_name()),
                    "POLICY_TYPE_",
                ),
            },
            carrier
                .and_then(|c| c.name.as_deref().or(Some(c.id.as_str())))
                .map_or_else(|| "-".to_owned(), clean),
            output::or_dash(p.policy_number.as_deref()),
            output::enum_value(
                v1::PolicyStatus::try_from(p.status)
                    .ok()
                    .map(|s| s.as_str_name()),
                "POLICY_STATUS_",
            ),
            time(p.effective_date.as_ref()),
            time(p.expiration_date.as_ref()),
            output::cents(p.premium_cents),
            p.vehicles.len().to_string(),
            p.dwellings.len().to_string(),
            p.coverages.len().to_string(),
        ]);
    }
    say!("{}", output::render(table));
    Ok(())
}
