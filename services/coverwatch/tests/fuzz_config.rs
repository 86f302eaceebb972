//! Property tests of the configuration loader, through `Config::load` as `main` calls it: any
//! `coverwatch.toml` text, mutations of valid configurations, and any `COVERWATCH_*` values.
//!
//! The properties: loading never panics, and either accepts or names what it refused; what it
//! accepts can run, meaning every duration the service derives from it at start-up and in its
//! workers is representable (an accepted value that overflows later would stop the service far
//! from the key that caused it).
//! `PROPTEST_CASES=100000 cargo test -p coverwatch --test fuzz_config` runs longer.

// figment's test jail returns its own (large) error type; that is its API, not ours.
#![allow(clippy::result_large_err)]

#[path = "../../../crates/core/tests/support/fuzz_json.rs"]
mod fuzz_json;

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use coverwatch::config::{Config, ConfigError};
use coverwatch_canopy::config::IsoDuration;
use figment::Jail;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestError, TestRunner};
use serde_json::{Value, json};

use fuzz_json::{config, json as any_json, magnitude, mutated, number, text};

const FILE: &str = "coverwatch.toml";

/// Every key of the configuration, nested ones included.
const KEYS: &[&str] = &[
    "database_url",
    "database_max_connections",
    "grpc_addr",
    "http_addr",
    "public_base_url",
    "tenants",
    "id",
    "api_key_sha256",
    "dev_api_key",
    "admin_api_key_sha256",
    "retention",
    "processed_body_days",
    "encryption_keys",
    "key",
    "encryption_key_file",
    "sandbox_addr",
    "worker",
    "concurrency",
    "max_attempts",
    "lease_seconds",
    "retry_initial_ms",
    "retry_max_ms",
    "sweep",
    "interval_seconds",
    "requirements_recheck_minutes",
    "stale_after_hours",
    "axle",
    "canopy",
    "base_url",
    "client_id",
    "client_secret",
    "destination_client_id",
    "webhook_header_name",
    "webhook_header_value",
    "widget_base_url",
    "team_id",
    "public_alias",
    "signing_secrets",
    "signature_tolerance",
    "stale_signatures",
    "consent_token",
    "monitoring_interval",
    "vendors",
    "log_format",
    "shutdown_grace_seconds",
];

/// `COVERWATCH_*` variables as an operator sets them (nested keys with `__`).
const VARIABLES: &[&str] = &[
    "COVERWATCH_DATABASE_URL",
    "COVERWATCH_DATABASE_MAX_CONNECTIONS",
    "COVERWATCH_GRPC_ADDR",
    "COVERWATCH_PUBLIC_BASE_URL",
    "COVERWATCH_TENANTS",
    "COVERWATCH_DEV_API_KEY",
    "COVERWATCH_ADMIN_API_KEY_SHA256",
    "COVERWATCH_RETENTION__PROCESSED_BODY_DAYS",
    "COVERWATCH_ENCRYPTION_KEYS",
    "COVERWATCH_WORKER__CONCURRENCY",
    "COVERWATCH_WORKER__LEASE_SECONDS",
    "COVERWATCH_WORKER__RETRY_INITIAL_MS",
    "COVERWATCH_WORKER__RETRY_MAX_MS",
    "COVERWATCH_SWEEP__REQUIREMENTS_RECHECK_MINUTES",
    "COVERWATCH_SWEEP__STALE_AFTER_HOURS",
    "COVERWATCH_VENDORS__AXLE__BASE_URL",
    "COVERWATCH_VENDORS__AXLE__CLIENT_ID",
    "COVERWATCH_VENDORS__AXLE__CLIENT_SECRET",
    "COVERWATCH_VENDORS__CANOPY__SIGNING_SECRETS",
    "COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL",
    "COVERWATCH_VENDORS__CANOPY__SIGNATURE_TOLERANCE",
    "COVERWATCH_LOG_FORMAT",
    "COVERWATCH_SHUTDOWN_GRACE_SECONDS",
    "COVERWATCH_",
    "COVERWATCH___",
];

/// Valid configurations: the defaults, and one that sets every key.
fn seeds() -> Vec<Value> {
    let hash = |c: char| c.to_string().repeat(64);
    vec![
        json!({}),
        json!({
            "database_url": "postgres://postgres@127.0.0.1:5432/test",
            "database_max_connections": 8,
            "grpc_addr": "127.0.0.1:50051",
            "http_addr": "0.0.0.0:8080",
            "public_base_url": "https://hooks.example.com/",
            "tenants": [
                {"id": "acme", "api_key_sha256": [hash('a')]},
                {"id": "globex", "api_key_sha256": [hash('b'), hash('c')]}
            ],
            "admin_api_key_sha256": [hash('d')],
            "retention": {"processed_body_days": 7},
            "encryption_keys": [
                {"id": "2026-11", "key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
            ],
            "encryption_key_file": "keys/coverwatch.key",
            "sandbox_addr": "127.0.0.1:8090",
            "worker": {
                "concurrency": 4, "max_attempts": 5, "lease_seconds": 30,
                "retry_initial_ms": 500, "retry_max_ms": 60000
            },
            "sweep": {
                "interval_seconds": 30, "requirements_recheck_minutes": 120,
                "stale_after_hours": {"axle": 36, "canopy": 800}
            },
            "vendors": {
                "axle": {
                    "base_url": "https://sandbox.axle.insure", "client_id": "cli_1",
                    "client_secret": "axle-secret", "destination_client_id": "cli_2",
                    "webhook_header_name": "x-axle-auth", "webhook_header_value": "shared",
                    "connect_timeout": "2s", "request_timeout": "15s"
                },
                "canopy": {
                    "base_url": "https://app.usecanopy.com/api/v1.0.0",
                    "widget_base_url": "https://app.usecanopy.com",
                    "team_id": "team", "client_id": "client", "client_secret": "canopy-secret",
                    "public_alias": "acme-link", "signing_secrets": ["whsec-1", "whsec-2"],
                    "signature_tolerance": "5m", "stale_signatures": "reject",
                    "monitoring_interval": "P1M", "consent_token": "consent",
                    "connect_timeout": "2s", "request_timeout": "15s"
                }
            },
            "log_format": "json",
            "shutdown_grace_seconds": 20
        }),
    ]
}

/// A TOML string: every character TOML cannot hold raw is escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a TOML value; `None` for `null`, which TOML has no word for.
fn toml_value(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        // An integer past i64 is not TOML: the file is then refused, which is fine too.
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml_string(s),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .filter_map(toml_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", toml_string(k), toml_value(v)?)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A JSON object as a TOML document, one top-level key per line.
fn toml_document(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .iter()
            .filter_map(|(k, v)| Some(format!("{} = {}\n", toml_string(k), toml_value(v)?)))
            .collect(),
        other => format!("value = {}\n", toml_value(other).unwrap_or_default()),
    }
}

/// What the service does with an accepted configuration before and while it runs (`app.rs`,
/// the inbox worker, the sweep, the Canopy provider): none of it may overflow.
fn check_runnable(config: &Config) -> Result<(), TestCaseError> {
    let now = Utc::now();
    // The worker adds a duration to now, or a fallback when chrono cannot hold the duration.
    let later = |d: Duration| match TimeDelta::from_std(d) {
        Ok(d) => now.checked_add_signed(d).is_some(),
        Err(_) => true,
    };
    let sweep = &config.sweep;
    let recheck = sweep.requirements_recheck_minutes.checked_mul(60);
    prop_assert!(
        recheck.is_some(),
        "requirements_recheck_minutes {}",
        sweep.requirements_recheck_minutes
    );
    for hours in sweep.stale_after_hours.values() {
        prop_assert!(hours.checked_mul(3600).is_some());
    }
    let worker = &config.worker;
    // A claimed delivery's lease ends at now + lease; a retry at now + at most retry_max.
    prop_assert!(
        later(Duration::from_secs(worker.lease_seconds)),
        "lease_seconds {}",
        worker.lease_seconds
    );
    prop_assert!(
        later(Duration::from_millis(worker.retry_max_ms)),
        "retry_max_ms {}",
        worker.retry_max_ms
    );
    prop_assert!(worker.retry_initial_ms <= worker.retry_max_ms);
    // Canopy's links are stale after the longest monitoring interval plus two days.
    let written = config
        .vendors
        .get("canopy")
        .and_then(|canopy| canopy.get("monitoring_interval"))
        .and_then(|interval| interval.as_str())
        .unwrap_or("P1M");
    let interval = IsoDuration::parse(written);
    prop_assert!(interval.is_some(), "an accepted interval parses");
    let longest = interval.map(|i| i.longest()).unwrap_or_default();
    prop_assert!(
        longest
            .checked_add(Duration::from_secs(2 * 86_400))
            .is_some(),
        "{written}"
    );
    Ok(())
}

/// Loads `text` as the configuration file with `variables` set and nothing else in the
/// environment, and checks the outcome.
fn load_checked(
    jail: &RefCell<&mut Jail>,
    text: &str,
    variables: &[(String, String)],
) -> Result<(), TestCaseError> {
    let mut jail = jail.borrow_mut();
    jail.clear_env();
    for (key, value) in variables {
        jail.set_env(key, value);
    }
    jail.create_file(FILE, text)
        .map_err(|e| TestCaseError::fail(format!("cannot write the file: {e}")))?;
    match Config::load(Path::new(FILE)) {
        Ok(config) => {
            // Validation is a fixed point: what was accepted stays accepted.
            prop_assert_eq!(config.clone().validated().ok(), Some(config.clone()));
            check_runnable(&config)?;
        }
        Err(err @ ConfigError::Load(_)) => prop_assert!(!err.to_string().is_empty()),
        Err(ConfigError::Invalid { key, reason, .. }) => {
            prop_assert!(!key.is_empty() && !reason.is_empty());
        }
        Err(ConfigError::Vendor(e)) => {
            prop_assert!(e.path.starts_with("vendors") && !e.reason.is_empty(), "{e}");
        }
        Err(ConfigError::Moved { key, instead }) => {
            prop_assert!(!key.is_empty() && !instead.is_empty());
        }
    }
    Ok(())
}

/// Runs `strategy` through `check` inside one jail (a clean environment and a scratch working
/// directory, restored afterwards), failing the test with the shrunk input.
fn run<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(&RefCell<&mut Jail>, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    Jail::expect_with(|jail| {
        let jail = RefCell::new(jail);
        let mut runner = TestRunner::new(config(256));
        match runner.run(&strategy, |input| check(&jail, input)) {
            Ok(()) => Ok(()),
            Err(TestError::Fail(reason, input)) => {
                panic!("{name}: {reason}\nminimal failing input: {input:#?}")
            }
            Err(TestError::Abort(reason)) => panic!("{name}: aborted: {reason}"),
        }
    });
}

/// The numeric settings, each of which one variable can set.
const NUMERIC_VARIABLES: &[&str] = &[
    "COVERWATCH_DATABASE_MAX_CONNECTIONS",
    "COVERWATCH_RETENTION__PROCESSED_BODY_DAYS",
    "COVERWATCH_WORKER__CONCURRENCY",
    "COVERWATCH_WORKER__MAX_ATTEMPTS",
    "COVERWATCH_WORKER__LEASE_SECONDS",
    "COVERWATCH_WORKER__RETRY_INITIAL_MS",
    "COVERWATCH_WORKER__RETRY_MAX_MS",
    "COVERWATCH_SWEEP__INTERVAL_SECONDS",
    "COVERWATCH_SWEEP__REQUIREMENTS_RECHECK_MINUTES",
    "COVERWATCH_SHUTDOWN_GRACE_SECONDS",
];

/// `COVERWATCH_*` pairs the environment can carry (no NUL, no `=` in a name): most often one
/// numeric setting at any magnitude (one bad value among several would hide the others), else
/// a few variables of any text.
fn variables() -> impl Strategy<Value = Vec<(String, String)>> {
    let numeric = (
        prop::sample::select(NUMERIC_VARIABLES).prop_map(str::to_owned),
        magnitude().prop_map(|n| n.to_string()),
    )
        .prop_map(|pair| vec![pair]);
    let interval = prop_oneof![
        magnitude().prop_map(|n| format!("P{n}D")),
        magnitude().prop_map(|n| format!("P{n}Y")),
        magnitude().prop_map(|n| format!("P{n}M")),
        magnitude().prop_map(|n| format!("P1MT{n}S")),
    ]
    .prop_map(|value| {
        vec![(
            "COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL".to_owned(),
            value,
        )]
    });
    let any = prop::collection::vec(
        (
            prop::sample::select(VARIABLES).prop_map(str::to_owned),
            prop_oneof![
                text(),
                any_json(KEYS).prop_map(|v| toml_value(&v).unwrap_or_default()),
                // Most keys are numbers: reach their limits often.
                number().prop_map(|v| v.to_string()),
            ],
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .filter(|(_, value)| !value.contains('\0'))
            .collect()
    });
    prop_oneof![3 => numeric, 1 => interval, 2 => any]
}

#[test]
fn any_file_text() {
    run("any_file_text", text(), |jail, text| {
        load_checked(jail, &text, &[])
    });
}

#[test]
fn any_toml_document() {
    run(
        "any_toml_document",
        any_json(KEYS).prop_map(|v| toml_document(&v)),
        |jail, text| load_checked(jail, &text, &[]),
    );
}

#[test]
fn mutated_valid_configurations() {
    run(
        "mutated_valid_configurations",
        mutated(seeds(), KEYS).prop_map(|v| toml_document(&v)),
        |jail, text| load_checked(jail, &text, &[]),
    );
}

#[test]
fn any_environment_over_a_valid_file() {
    run(
        "any_environment_over_a_valid_file",
        (prop::sample::select(seeds()), variables()),
        |jail, (seed, vars)| load_checked(jail, &toml_document(&seed), &vars),
    );
}

#[test]
fn the_seeds_load_and_their_toml_is_read_back() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        for seed in seeds() {
            jail.create_file(FILE, &toml_document(&seed))?;
            let config = Config::load(Path::new(FILE)).unwrap();
            // The rendering is faithful: a seed loads to exactly what it says.
            let mut expected = serde_json::to_value(Config::default()).unwrap();
            merge(&mut expected, &seed);
            assert_eq!(serde_json::to_value(&config).unwrap(), expected);
        }
        Ok(())
    });
}

/// `over` laid onto `base` the way the loader lays a file onto the defaults: a table sets only
/// the keys it names, so a seed's `[worker]` keeps the defaults of the keys it leaves out.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() => merge(slot, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The mutation strategy must reach accepted configurations too, or the runnable check would
/// never run on a mutated one.
#[test]
fn mutations_reach_accepted_configurations() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let mut runner = TestRunner::deterministic();
        let strategy = mutated(seeds(), KEYS);
        let accepted = (0..300)
            .filter(|_| {
                let doc = strategy.new_tree(&mut runner).unwrap().current();
                jail.create_file(FILE, &toml_document(&doc)).unwrap();
                Config::load(Path::new(FILE)).is_ok()
            })
            .count();
        assert!(accepted > 0, "no mutated configuration was accepted");
        Ok(())
    });
}
