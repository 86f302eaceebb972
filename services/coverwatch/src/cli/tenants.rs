//! `coverwatch tenants create|list|get|disable|enable` and `coverwatch tenants key
//! create|revoke` over AdminService.

use coverwatch_proto::v1;
use serde_json::json;

use super::client::{Admin, KeyKind, refused, request};
use super::output::{self, API_KEY, TENANT, clean, say, time};
use super::{CliError, KeyCommand, TenantsCommand};

/// The largest page AdminService returns.
const MAX_PAGE: u32 = 500;

pub async fn run(admin: Admin, command: TenantsCommand, json: bool) -> Result<(), CliError> {
    let call = |s: tonic::Status| refused(&s, KeyKind::Admin);
    let mut admin = admin;
    match command {
        TenantsCommand::Create { id, name } => {
            let tenant = admin
                .create_tenant(request(v1::CreateTenantRequest {
                    tenant_id: id,
                    display_name: name.unwrap_or_default(),
                }))
                .await
                .map_err(call)?
                .into_inner()
                .tenant;
            print_tenant(tenant, &[], json)
        }
        TenantsCommand::Get { id } => {
            let answer = admin
                .get_tenant(request(v1::GetTenantRequest { tenant_id: id }))
                .await
                .map_err(call)?
                .into_inner();
            print_tenant(answer.tenant, &answer.api_keys, json)
        }
        TenantsCommand::Disable { id } => {
            let tenant = admin
                .disable_tenant(request(v1::DisableTenantRequest { tenant_id: id }))
                .await
                .map_err(call)?
                .into_inner()
                .tenant;
            print_tenant(tenant, &[], json)
        }
        TenantsCommand::Enable { id } => {
            let tenant = admin
                .enable_tenant(request(v1::EnableTenantRequest { tenant_id: id }))
                .await
                .map_err(call)?
                .into_inner()
                .tenant;
            print_tenant(tenant, &[], json)
        }
        TenantsCommand::List { limit } => list(&mut admin, limit, json).await,
        TenantsCommand::Key {
            command: KeyCommand::Create { tenant, label },
        } => {
            let answer = admin
                .create_api_key(request(v1::CreateApiKeyRequest {
                    tenant_id: tenant,
                    label: label.unwrap_or_default(),
                }))
                .await
                .map_err(call)?
                .into_inner();
            let key = answer
                .api_key
                .ok_or_else(|| CliError::new("the server sent no key record"))?;
            if json {
                return output::print_json(&json!({
                    "api_key": output::json(&key, API_KEY)?,
                    "key": answer.key,
                }));
            }
            say!("{}", answer.key);
            // The key alone on stdout (scripts capture it); the rest for the person.
            eprintln!(
                "API key {} of tenant {} created. It is shown only this once: keep it secret; \
                 coverwatch stores only its SHA-256.",
                key.id,
                clean(&key.tenant_id)
            );
            Ok(())
        }
        TenantsCommand::Key {
            command: KeyCommand::Revoke { id },
        } => {
            let key = admin
                .revoke_api_key(request(v1::RevokeApiKeyRequest { api_key_id: id }))
                .await
                .map_err(call)?
                .into_inner()
                .api_key
                .ok_or_else(|| CliError::new("the server sent no key record"))?;
            if json {
                return output::print_json(&output::json(&key, API_KEY)?);
            }
            say!(
                "API key {} of tenant {} revoked at {}",
                key.id,
                clean(&key.tenant_id),
                time(key.revoked_at.as_ref())
            );
            Ok(())
        }
    }
}

async fn list(admin: &mut Admin, limit: u32, json: bool) -> Result<(), CliError> {
    let mut tenants: Vec<v1::Tenant> = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let left = limit.saturating_sub(tenants.len() as u32).min(MAX_PAGE);
        let page = admin
            .list_tenants(request(v1::ListTenantsRequest {
                page_size: i32::try_from(left).unwrap_or(500),
                page_token: page_token.clone(),
            }))
            .await
            .map_err(|s| refused(&s, KeyKind::Admin))?
            .into_inner();
        tenants.extend(page.tenants);
        if page.next_page_token.is_empty() {
            break false;
        }
        if tenants.len() as u32 >= limit {
            break true;
        }
        page_token = page.next_page_token;
    };
    if json {
        return output::print_json(&json!({
            "tenants": output::json_all(&tenants, TENANT)?,
            "more": more,
        }));
    }
    if !tenants.is_empty() {
        let mut table = output::table(&["ID", "STATE", "SOURCE", "KEYS", "CREATED", "NAME"]);
        for t in &tenants {
            table.add_row(vec![
                clean(&t.id),
                state(t.state),
                source(t.source),
                t.active_api_keys.to_string(),
                time(t.created_at.as_ref()),
                output::or_dash(
                    Some(&t.display_name)
                        .filter(|n| !n.is_empty())
                        .map(|n| n.as_str()),
                ),
            ]);
        }
        say!("{}", output::render(table));
    }
    let count = tenants.len();
    let noun = if count == 1 { "tenant" } else { "tenants" };
    if more {
        say!("{count} {noun} shown; more exist (raise --limit)");
    } else {
        say!("{count} {noun}");
    }
    Ok(())
}

fn state(value: i32) -> String {
    v1::TenantState::try_from(value)
        .map(|s| output::enum_value(Some(s.as_str_name()), "TENANT_STATE_"))
        .unwrap_or_else(|_| format!("state {value}"))
}

fn source(value: i32) -> String {
    v1::TenantSource::try_from(value)
        .map(|s| output::enum_value(Some(s.as_str_name()), "TENANT_SOURCE_"))
        .unwrap_or_else(|_| format!("source {value}"))
}

fn print_tenant(
    tenant: Option<v1::Tenant>,
    keys: &[v1::ApiKey],
    json: bool,
) -> Result<(), CliError> {
    let t = tenant.ok_or_else(|| CliError::new("the server sent no tenant"))?;
    if json {
        let mut document = output::json(&t, TENANT)?;
        if !keys.is_empty()
            && let Some(object) = document.as_object_mut()
        {
            object.insert("api_keys".into(), output::json_all(keys, API_KEY)?);
        }
        return output::print_json(&document);
    }
    say!(
        "{}",
        output::record(&[
            ("id", clean(&t.id)),
            (
                "name",
                output::or_dash(Some(t.display_name.as_str()).filter(|n| !n.is_empty()))
            ),
            ("state", state(t.state)),
            ("source", source(t.source)),
            ("created", time(t.created_at.as_ref())),
            ("disabled", time(t.disabled_at.as_ref())),
            ("active keys", t.active_api_keys.to_string()),
        ])
    );
    if !keys.is_empty() {
        let mut table = output::table(&["KEY", "SOURCE", "CREATED", "REVOKED", "LABEL"]);
        for k in keys {
            table.add_row(vec![
                k.id.clone(),
                source(k.source),
                time(k.created_at.as_ref()),
                time(k.revoked_at.as_ref()),
                output::or_dash(Some(k.label.as_str()).filter(|l| !l.is_empty())),
            ]);
        }
        say!("\n{}", output::render(table));
    }
    Ok(())
}
