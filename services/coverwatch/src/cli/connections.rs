//! `coverwatch connections put|get|list|delete` over AdminService: tenants' own vendor
//! accounts. The settings file is sent as it is read; nothing of it is printed back (answers
//! carry only the settings the vendor's plug-in does not hold secret).

use std::path::Path;

use coverwatch_proto::v1;
use serde_json::json;

use super::client::{Admin, KeyKind, refused, request};
use super::output::{self, VENDOR_CONNECTION, clean, say, time};
use super::{CliError, ConnectionsCommand};

/// The largest page AdminService returns.
const MAX_PAGE: u32 = 500;

/// The largest settings file read: vendor settings are a few hundred bytes.
const MAX_SETTINGS_FILE: u64 = 64 * 1024;

pub async fn run(admin: Admin, command: ConnectionsCommand, json: bool) -> Result<(), CliError> {
    let call = |s: tonic::Status| refused(&s, KeyKind::Admin);
    let mut admin = admin;
    match command {
        ConnectionsCommand::Put {
            tenant,
            provider,
            settings_file,
        } => {
            let settings = read_settings(&settings_file)?;
            let connection = admin
                .put_vendor_connection(request(v1::PutVendorConnectionRequest {
                    tenant_id: tenant,
                    provider,
                    settings,
                }))
                .await
                .map_err(call)?
                .into_inner()
                .connection;
            print_connection(connection, json)
        }
        ConnectionsCommand::Get { id } => {
            let connection = admin
                .get_vendor_connection(request(v1::GetVendorConnectionRequest {
                    connection_id: id,
                }))
                .await
                .map_err(call)?
                .into_inner()
                .connection;
            print_connection(connection, json)
        }
        ConnectionsCommand::Delete { id } => {
            admin
                .delete_vendor_connection(request(v1::DeleteVendorConnectionRequest {
                    connection_id: id.clone(),
                }))
                .await
                .map_err(call)?;
            if json {
                return output::print_json(&json!({ "deleted": id }));
            }
            say!("vendor connection {} deleted", clean(&id));
            Ok(())
        }
        ConnectionsCommand::List { tenant, limit } => list(&mut admin, tenant, limit, json).await,
    }
}

/// The file's text. Its contents are never quoted in an error: they hold secrets.
fn read_settings(path: &Path) -> Result<String, CliError> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| CliError::new(format!("--settings-file {shown}: {e}")))?
        .len();
    if size > MAX_SETTINGS_FILE {
        return Err(CliError::new(format!(
            "--settings-file {shown}: {size} bytes is more than vendor settings take \
             ({MAX_SETTINGS_FILE} at most)"
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("--settings-file {shown}: {e}")))
}

async fn list(admin: &mut Admin, tenant: String, limit: u32, json: bool) -> Result<(), CliError> {
    let mut connections: Vec<v1::VendorConnection> = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let left = limit.saturating_sub(connections.len() as u32).min(MAX_PAGE);
        let page = admin
            .list_vendor_connections(request(v1::ListVendorConnectionsRequest {
                tenant_id: tenant.clone(),
                page_size: i32::try_from(left).unwrap_or(500),
                page_token: page_token.clone(),
            }))
            .await
            .map_err(|s| refused(&s, KeyKind::Admin))?
            .into_inner();
        connections.extend(page.connections);
        if page.next_page_token.is_empty() {
            break false;
        }
        if connections.len() as u32 >= limit {
            break true;
        }
        page_token = page.next_page_token;
    };
    if json {
        return output::print_json(&json!({
            "connections": output::json_all(&connections, VENDOR_CONNECTION)?,
            "more": more,
        }));
    }
    if !connections.is_empty() {
        let mut table = output::table(&["ID", "PROVIDER", "VERSION", "UPDATED", "WEBHOOK PATH"]);
        for c in &connections {
            table.add_row(vec![
                c.id.clone(),
                clean(&c.provider),
                c.version.to_string(),
                time(c.updated_at.as_ref()),
                output::or_dash(Some(c.webhook_path.as_str()).filter(|p| !p.is_empty())),
            ]);
        }
        say!("{}", output::render(table));
    }
    let count = connections.len();
    let noun = if count == 1 {
        "connection"
    } else {
        "connections"
    };
    if more {
        say!("{count} {noun} shown; more exist (raise --limit)");
    } else {
        say!("{count} {noun}");
    }
    Ok(())
}

fn remote_check(value: i32) -> String {
    v1::RemoteCheck::try_from(value)
        .map(|s| output::enum_value(Some(s.as_str_name()), "REMOTE_CHECK_"))
        .unwrap_or_else(|_| format!("remote check {value}"))
}

fn print_connection(connection: Option<v1::VendorConnection>, json: bool) -> Result<(), CliError> {
    let c = connection.ok_or_else(|| CliError::new("the server sent no connection"))?;
    if json {
        return output::print_json(&output::json(&c, VENDOR_CONNECTION)?);
    }
    say!(
        "{}",
        output::record(&[
            ("id", c.id.clone()),
            ("tenant", clean(&c.tenant_id)),
            ("provider", clean(&c.provider)),
            ("version", c.version.to_string()),
            (
                "webhook path",
                output::or_dash(Some(c.webhook_path.as_str()).filter(|p| !p.is_empty()))
            ),
            ("vendor check", remote_check(c.remote_check)),
            ("settings", clean(&c.public_settings)),
            ("created", time(c.created_at.as_ref())),
            ("updated", time(c.updated_at.as_ref())),
        ])
    );
    Ok(())
}
