//! Printing: `--json` in the proto3 JSON mapping (through the descriptor set the server serves
//! for reflection, so every field is there without a hand-kept copy), tables for people.

use std::sync::LazyLock;

use comfy_table::{Table, presets};
use coverwatch_proto::v1;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use super::CliError;

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(coverwatch_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// Full protobuf names of the messages the CLI prints.
pub const DELIVERY: &str = "coverwatch.v1.Delivery";
pub const LINK: &str = "coverwatch.v1.Link";
pub const POLICY: &str = "coverwatch.v1.Policy";
pub const EVENT: &str = "coverwatch.v1.Event";
pub const TENANT: &str = "coverwatch.v1.Tenant";
pub const API_KEY: &str = "coverwatch.v1.ApiKey";
pub const VENDOR_CONNECTION: &str = "coverwatch.v1.VendorConnection";

/// `message` in the proto3 JSON mapping: `.proto` field names, every field (defaults too, so
/// scripts find what they look for), enums by name, 64-bit integers as numbers (cursors and
/// sizes stay far below 2^53), timestamps in RFC 3339, bytes in base64.
pub fn json<M: prost::Message>(message: &M, name: &str) -> Result<serde_json::Value, CliError> {
    let pool = POOL
        .as_ref()
        .map_err(|e| CliError::new(format!("the built-in descriptor set is unreadable: {e}")))?;
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or_else(|| CliError::new(format!("no message {name} in the descriptor set")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| CliError::new(format!("cannot re-read a {name}: {e}")))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CliError::new(format!("cannot write a {name} as JSON: {e}")))
}

pub fn json_all<M: prost::Message>(
    messages: &[M],
    name: &str,
) -> Result<serde_json::Value, CliError> {
    messages
        .iter()
        .map(|m| json(m, name))
        .collect::<Result<Vec<_>, _>>()
        .map(serde_json::Value::Array)
}

/// One JSON document on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(format!("cannot write JSON: {e}")))?;
    emit(&text)
}

/// A line on stdout, flushed (so `events tail` reaches a pipe at once). A reader that went
/// away (`| head`) ends the command quietly, as it would for any Unix tool.
pub fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::new(format!("cannot write to stdout: {e}"))),
    }
}

/// `println!` through [`emit`], for functions returning `Result<_, CliError>`.
macro_rules! say {
    () => {
        $crate::cli::output::emit("")?
    };
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))?
    };
}
pub(crate) use say;

/// Columns separated by spaces, a header row, no borders: easy to read and to `grep`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header);
    table
}

/// A table as text: two spaces between columns, no margin, no trailing blanks.
pub fn render(mut table: Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two columns, name and value, for one record.
pub fn record(rows: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (name, value) in rows {
        table.add_row(vec![(*name).to_owned(), value.clone()]);
    }
    render(table)
}

/// Text that came from outside (vendor payloads, error messages) shown on a terminal: control
/// characters are escaped so they cannot move the cursor or recolour the screen.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`clean`], on one line, at most `max` characters (never cut inside a character).
pub fn short(text: &str, max: usize) -> String {
    let one_line = clean(text).replace(['\n', '\t'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// An enum value's name without its type prefix: `DELIVERY_STATUS_DEAD` → `DEAD`.
fn unprefixed(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// The vendor's registry name: `provider_id` when the server sent it (it names vendors the
/// enum does not list), else the enum's name, for a server older than that field.
pub fn provider(value: i32, id: &str) -> String {
    if !id.is_empty() {
        return id.to_owned();
    }
    v1::Provider::try_from(value)
        .map(|p| unprefixed(p.as_str_name(), "PROVIDER_").to_lowercase())
        .unwrap_or_else(|_| format!("provider {value}"))
}

pub fn delivery_status(value: i32) -> String {
    v1::DeliveryStatus::try_from(value)
        .map(|s| unprefixed(s.as_str_name(), "DELIVERY_STATUS_").to_lowercase())
        .unwrap_or_else(|_| format!("status {value}"))
}

pub fn link_state(value: i32) -> String {
    v1::LinkState::try_from(value)
        .map(|s| unprefixed(s.as_str_name(), "LINK_STATE_"))
        .unwrap_or_else(|_| format!("state {value}"))
}

pub fn event_kind(value: i32) -> String {
    coverwatch_proto::convert::event_kind(value, "kind")
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|_| format!("kind {value}"))
}

/// An enum field by its name in the descriptor, without the type prefix, lowercase (for
/// the enums whose values the CLI does not otherwise know, e.g. a policy's type).
pub fn enum_value(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| unprefixed(n, prefix).to_lowercase())
        .unwrap_or_else(|| "-".to_owned())
}

pub fn cents(value: Option<i64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |c| {
            let sign = if c < 0 { "-" } else { "" };
            let c = c.unsigned_abs();
            format!("{sign}{}.{:02}", c / 100, c % 100)
        },
    )
}

pub fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_follows_the_proto3_mapping_with_proto_field_names() {
        let delivery = v1::Delivery {
            id: "dlv_1".into(),
            provider: v1::Provider::Canopy as i32,
            status: v1::DeliveryStatus::Dead as i32,
            body: b"{}".to_vec(),
            body_size: 2,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let value = json(&delivery, DELIVERY).unwrap();
        assert_eq!(value["id"], "dlv_1");
        assert_eq!(value["provider"], "PROVIDER_CANOPY");
        assert_eq!(value["status"], "DELIVERY_STATUS_DEAD");
        assert_eq!(value["body"], "e30=");
        assert_eq!(value["body_size"], 2);
        assert_eq!(value["attempts"], 0, "defaults are written");
        assert_eq!(value["received_at"], "2027-01-15T08:00:00Z");
        let pool = POOL.as_ref().unwrap();
        for name in [DELIVERY, LINK, POLICY, EVENT] {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
        assert!(json(&delivery, "coverwatch.v1.Nope").is_err());
    }

    #[test]
    fn terminal_text_is_defused_and_cut_on_characters() {
        assert_eq!(clean("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(short("ééééé", 3), "éé…");
        assert_eq!(short("line\none", 20), "line one");
        assert_eq!(cents(Some(-12_345)), "-123.45");
        assert_eq!(cents(Some(5)), "0.05");
        assert_eq!(delivery_status(3), "dead");
        assert_eq!(link_state(3), "RECONNECT_REQUIRED");
        assert_eq!(event_kind(10), "policy.updated");
        let mut t = table(&["A", "B"]);
        t.add_row(vec!["x", ""]);
        assert_eq!(render(t), "A  B\nx");
        assert_eq!(record(&[("id", "1".into())]), "id  1");
    }
}
