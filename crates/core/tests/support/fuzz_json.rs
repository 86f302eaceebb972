//! Strategies shared by the parser property tests (the `fuzz*.rs` test files include this file
//! with `#[path]`): hostile text, arbitrary JSON, and mutations of real payloads.
//!
//! Real payloads matter more than random ones: a random document almost never looks like a
//! vendor's, so it stops at the first type check. A real payload with one field dropped, retyped,
//! blown up or filled with odd Unicode reaches the code behind that check.

#![allow(dead_code)] // Each test file uses the part it needs.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Number, Value};

/// `default` cases unless `PROPTEST_CASES` asks for another count, so that `cargo test` stays
/// short and `PROPTEST_CASES=100000 cargo test … --test fuzz` runs longer.
pub fn config(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        // A failure is kept as a named regression test beside the code it broke, not as a
        // seed file.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// Text that has broken parsers before: empty and blank, multi-byte characters where a byte
/// index would cut them, control characters, numbers and dates at or past their limits.
pub const NASTY_TEXT: &[&str] = &[
    "",
    " ",
    "\t\n",
    "é",
    "1234é",
    "12345-é",
    "🦀🦀🦀🦀🦀🦀",
    "a\u{0}b",
    "\u{202e}evil",
    "\u{feff}",
    "ǅ",
    "İstanbul",
    "ß",
    "0",
    "-0",
    "1e400",
    "-1e400",
    "NaN",
    "inf",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0.0000000000000000000000001",
    "2024-02-30",
    "0000-00-00",
    "9999-12-31T23:59:59Z",
    "+262143-12-31T23:59:59Z",
    "+275760-09-13T00:00:00.000Z",
    "-262144-01-01T00:00:00Z",
    "2024-01-01T25:61:61",
    "13/45/2024",
    "P",
    "PT",
    "P99999999999999999999Y",
    "{\"nested\": [1, {\"deep\": null}]}",
    "[]",
    "null",
    "true",
    "$-1,000.00",
    "%",
];

/// Any text: arbitrary Unicode (control characters included), the nasty list above, and now
/// and then a long run, so that length limits are reached too.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        3 => prop::sample::select(NASTY_TEXT).prop_map(str::to_owned),
        1 => (prop::sample::select(NASTY_TEXT), 1usize..2000)
            .prop_map(|(s, n)| s.repeat(n.min(20_000 / s.len().max(1)))),
        1 => "[0-9A-Za-z \\-_.,#/]{0,40}",
    ]
}

/// An integer of any magnitude, each bit length alike: a uniform `u64` is almost always
/// past 2^60 and never in the range where a duration still converts but a date overflows.
pub fn magnitude() -> impl Strategy<Value = u64> {
    (0u32..=64).prop_flat_map(|bits| match bits {
        0 => Just(0u64).boxed(),
        64 => (1u64 << 63..=u64::MAX).boxed(),
        bits => (1u64 << (bits - 1)..1u64 << bits).boxed(),
    })
}

/// Numbers at the edges of what the parsers convert: the integer limits, floats that overflow
/// an `i64` once multiplied by 100, the smallest and largest finite floats.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        magnitude().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            Number::from_f64(f).map(Value::Number)
        }),
        prop::sample::select(vec![
            0,
            -1,
            1,
            i64::MAX,
            i64::MIN,
            i64::MAX / 100,
            i64::MIN / 100,
            // Powers of ten: seconds or milliseconds that fit one type and overflow the next.
            1_000,
            1_000_000,
            1_000_000_000,
            1_000_000_000_000,
            10_000_000_000_000,
            1_000_000_000_000_000,
            10_000_000_000_000_000,
            1_000_000_000_000_000_000,
        ])
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop::sample::select(vec![
            0.5,
            -0.5,
            1e15,
            1e15 + 0.5,
            -1e15,
            9.3e16,
            9.3e18,
            -9.3e18,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
        ])
        .prop_map(Value::from),
    ]
}

/// A JSON value of any shape, at most a few levels deep. `keys` are mixed into object keys so
/// that a random object still hits the fields a parser looks for.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(keys), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object key: most often one a parser reads, otherwise any text.
pub fn key(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    if keys.is_empty() {
        text().boxed()
    } else {
        prop_oneof![
            3 => prop::sample::select(keys).prop_map(str::to_owned),
            1 => text(),
        ]
        .boxed()
    }
}

/// One change to one node of a document.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Becomes this value (of any type).
    Replace(Value),
    /// Loses one member or element.
    DropChild(Index),
    /// Gains a member (an object) or an element (an array).
    Insert(String, Value),
    /// Keeps its content in another JSON type: a number becomes a string, a string a number,
    /// an object the array of its values, and so on.
    Retype,
    /// Is wrapped one level down, in an array or an object.
    Wrap(bool),
    /// Every string inside becomes this text.
    Rewrite(String),
}

pub fn mutation(keys: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => json(keys).prop_map(Mutation::Replace),
        2 => number().prop_map(Mutation::Replace),
        2 => text().prop_map(|s| Mutation::Replace(Value::String(s))),
        3 => any::<Index>().prop_map(Mutation::DropChild),
        2 => (key(keys), json(keys)).prop_map(|(k, v)| Mutation::Insert(k, v)),
        2 => Just(Mutation::Retype),
        1 => any::<bool>().prop_map(Mutation::Wrap),
        1 => text().prop_map(Mutation::Rewrite),
    ]
}

/// A seed with one to eight mutations, each at a node chosen over the whole document.
pub fn mutated(seeds: Vec<Value>, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    assert!(!seeds.is_empty(), "a mutation needs a seed");
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<Index>(), mutation(keys)), 1..8),
    )
        .prop_map(|(mut doc, mutations)| {
            for (at, mutation) in mutations {
                let nodes = count_nodes(&doc);
                let mut target = at.index(nodes);
                apply_at(&mut doc, &mut target, &mutation);
            }
            doc
        })
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies `mutation` to the node numbered `target` in pre-order; true once applied.
fn apply_at(value: &mut Value, target: &mut usize, mutation: &Mutation) -> bool {
    if *target == 0 {
        apply(value, mutation);
        return true;
    }
    *target -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| apply_at(v, target, mutation)),
        Value::Object(map) => map.values_mut().any(|v| apply_at(v, target, mutation)),
        _ => false,
    }
}

fn apply(value: &mut Value, mutation: &Mutation) {
    match mutation {
        Mutation::Replace(new) => *value = new.clone(),
        Mutation::DropChild(index) => match value {
            Value::Array(items) if !items.is_empty() => {
                items.remove(index.index(items.len()));
            }
            Value::Object(map) if !map.is_empty() => {
                let key = map
                    .keys()
                    .nth(index.index(map.len()))
                    .cloned()
                    .expect("index within len");
                map.remove(&key);
            }
            _ => *value = Value::Null,
        },
        Mutation::Insert(key, new) => match value {
            Value::Array(items) => items.push(new.clone()),
            Value::Object(map) => {
                map.insert(key.clone(), new.clone());
            }
            _ => *value = new.clone(),
        },
        Mutation::Retype => *value = retype(value.take()),
        Mutation::Wrap(as_array) => {
            let inner = value.take();
            *value = if *as_array {
                Value::Array(vec![inner])
            } else {
                Value::Object(Map::from_iter([("value".to_owned(), inner)]))
            };
        }
        Mutation::Rewrite(text) => rewrite_strings(value, text),
    }
}

fn retype(value: Value) -> Value {
    match value {
        Value::Null => Value::String(String::new()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::String(s) => match s.trim().parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::Bool(!s.is_empty()),
        },
        Value::Array(items) => Value::Object(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        Value::Object(map) => Value::Array(map.into_iter().map(|(_, v)| v).collect()),
    }
}

fn rewrite_strings(value: &mut Value, text: &str) {
    match value {
        Value::String(s) => *s = text.to_owned(),
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_strings(v, text)),
        Value::Object(map) => map.values_mut().for_each(|v| rewrite_strings(v, text)),
        _ => {}
    }
}

/// Raw bytes: anything at all, or a JSON document cut short or with a byte flipped, which is
/// what a truncated or corrupted delivery looks like.
pub fn bytes_around(docs: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let docs: Vec<Vec<u8>> = docs.iter().map(|d| d.to_string().into_bytes()).collect();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (prop::sample::select(docs.clone()), any::<Index>())
            .prop_map(|(doc, at)| doc[..at.index(doc.len() + 1)].to_vec()),
        (prop::sample::select(docs), any::<Index>(), any::<u8>()).prop_map(|(mut doc, at, b)| {
            if !doc.is_empty() {
                let i = at.index(doc.len());
                doc[i] = b;
            }
            doc
        }),
    ]
}

/// One delivery through authentication and parsing, as the listener and then the inbox worker
/// take it: a genuine delivery is always authenticated, and parsing either keeps it with a
/// candidate to report or names what is malformed. Answers whether it was parsed, so that a
/// vendor's suite can add what its parser promises beyond that.
pub fn ingest_genuine<P: coverwatch_core::provider::Provider>(
    provider: &P,
    webhook: &coverwatch_core::webhook::InboundWebhook,
) -> Result<bool, TestCaseError> {
    let authenticated = provider.authenticate_webhook(webhook);
    prop_assert!(authenticated.is_ok(), "{:?}", authenticated);
    match provider.parse_webhook(webhook) {
        Ok(parsed) => {
            // An unmatched delivery is kept and reported, so there is always a candidate.
            prop_assert!(!parsed.attribution.is_empty());
            Ok(true)
        }
        Err(coverwatch_core::provider::ProviderError::Malformed { message, .. }) => {
            prop_assert!(!message.is_empty());
            Ok(false)
        }
        Err(other) => {
            prop_assert!(false, "parsing can only find a body malformed: {other}");
            Ok(false)
        }
    }
}

/// The webhook properties every vendor's fuzz suite states over its `ingest` (one genuine
/// delivery of the given bytes through authentication and parsing), its real deliveries and the
/// keys its payloads use. The including file declares `mod fuzz_json` at its root.
#[allow(unused_macros)] // The core crate's property tests state no webhook properties.
macro_rules! webhook_properties {
    ($ingest:ident, $webhooks:expr, $keys:expr) => {
        proptest::proptest! {
            #![proptest_config($crate::fuzz_json::config(256))]

            /// Any bytes, including real deliveries cut short or with a byte changed.
            #[test]
            fn webhook_bytes(body in $crate::fuzz_json::bytes_around($webhooks)) {
                $ingest(body)?;
            }

            /// Any JSON document.
            #[test]
            fn webhook_json(body in $crate::fuzz_json::json($keys)) {
                $ingest(body.to_string().into_bytes())?;
            }

            /// Real deliveries with fields dropped, retyped, blown up or filled with odd text.
            #[test]
            fn webhook_mutations(body in $crate::fuzz_json::mutated($webhooks, $keys)) {
                $ingest(body.to_string().into_bytes())?;
            }
        }
    };
}
#[allow(unused_imports)] // Likewise.
pub(crate) use webhook_properties;
