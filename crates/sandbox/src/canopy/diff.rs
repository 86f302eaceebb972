//! The `MonitoringEvent`s between two pulls of one account (`GET …/monitorings/{id}/events`
//! and the `MONITORING_EVENTS` webhook).
//!
//! Objects are matched across pulls by their stable keys (ids are new in every pull): policies by
//! `carrier_policy_number`, vehicles by `vin`, vehicle coverages by (`vin`, `name`), vehicle
//! drivers by licence, dwellings by position, dwelling coverages by `name`. As the OpenAPI
//! document says, `before`/`after` hold only the keys that changed (plus the ids of the object and
//! its parents, so a reader can tell which object changed); CREATE carries only ids in `after`,
//! DELETE only ids in `before`.

use serde::Serialize;
use serde_json::{Map, Value};

use super::model::{DocumentRef, MonitoringChange, MonitoringEvent, Policy, Pull};

pub fn monitoring_events(previous: &Pull, latest: &Pull) -> Vec<MonitoringEvent> {
    let mut events = Vec::new();
    for policy in &latest.policies {
        let Some(number) = policy.carrier_policy_number.as_deref() else {
            continue;
        };
        let before = previous
            .policies
            .iter()
            .find(|p| p.carrier_policy_number.as_deref() == Some(number));
        let documents = new_documents(previous, latest, &policy.policy_id);
        let Some(before) = before else {
            events.push(MonitoringEvent {
                event_type: "NEW_BUSINESS".into(),
                changes: vec![change(
                    "POLICY",
                    "CREATE",
                    None,
                    Some(ids(&[("policy_id", &policy.policy_id)])),
                )],
                documents,
            });
            continue;
        };
        let changes = policy_changes(before, policy);
        if changes.is_empty() {
            continue;
        }
        events.push(MonitoringEvent {
            event_type: classify(before, policy).into(),
            changes,
            documents,
        });
    }
    events
}

fn classify(before: &Policy, after: &Policy) -> &'static str {
    let (was, is) = (before.status.as_deref(), after.status.as_deref());
    if was != is {
        match is {
            Some("CANCELLED") => return "CANCELED",
            Some("EXPIRED") => return "EXPIRED",
            Some("ACTIVE")
                if matches!(was, Some("CANCELLED" | "EXPIRED" | "PENDING_CANCELLATION")) =>
            {
                return "REINSTATED";
            }
            _ => {}
        }
    }
    if before.effective_date != after.effective_date || before.expiry_date != after.expiry_date {
        return "RENEWAL";
    }
    "ENDORSEMENT"
}

fn policy_changes(before: &Policy, after: &Policy) -> Vec<MonitoringChange> {
    let mut out = Vec::new();
    let pid_b = [("policy_id", before.policy_id.as_str())];
    let pid_a = [("policy_id", after.policy_id.as_str())];
    if let Some((b, a)) = scalar_diff(before, after, &pid_b, &pid_a) {
        out.push(change("POLICY", "UPDATE", Some(b), Some(a)));
    }

    for v in &after.vehicles {
        let old = before
            .vehicles
            .iter()
            .find(|o| o.vin.is_some() && o.vin == v.vin);
        let ids_a = [
            ("policy_id", after.policy_id.as_str()),
            ("vehicle_id", v.vehicle_id.as_str()),
        ];
        let Some(old) = old else {
            out.push(change("VEHICLE", "CREATE", None, Some(ids(&ids_a))));
            continue;
        };
        let ids_b = [
            ("policy_id", before.policy_id.as_str()),
            ("vehicle_id", old.vehicle_id.as_str()),
        ];
        if let Some((b, a)) = scalar_diff(old, v, &ids_b, &ids_a) {
            out.push(change("VEHICLE", "UPDATE", Some(b), Some(a)));
        }
        for c in &v.coverages {
            let ids_ca = [
                ("policy_id", after.policy_id.as_str()),
                ("vehicle_id", v.vehicle_id.as_str()),
                ("vehicle_coverage_id", c.vehicle_coverage_id.as_str()),
            ];
            match old.coverages.iter().find(|o| o.name == c.name) {
                None => out.push(change(
                    "VEHICLECOVERAGE",
                    "CREATE",
                    None,
                    Some(ids(&ids_ca)),
                )),
                Some(oc) => {
                    let ids_cb = [
                        ("policy_id", before.policy_id.as_str()),
                        ("vehicle_id", old.vehicle_id.as_str()),
                        ("vehicle_coverage_id", oc.vehicle_coverage_id.as_str()),
                    ];
                    if let Some((b, a)) = scalar_diff(oc, c, &ids_cb, &ids_ca) {
                        out.push(change("VEHICLECOVERAGE", "UPDATE", Some(b), Some(a)));
                    }
                }
            }
        }
        for oc in old
            .coverages
            .iter()
            .filter(|oc| !v.coverages.iter().any(|c| c.name == oc.name))
        {
            let ids_cb = [
                ("policy_id", before.policy_id.as_str()),
                ("vehicle_id", old.vehicle_id.as_str()),
                ("vehicle_coverage_id", oc.vehicle_coverage_id.as_str()),
            ];
            out.push(change(
                "VEHICLECOVERAGE",
                "DELETE",
                Some(ids(&ids_cb)),
                None,
            ));
        }
        for d in &v.drivers {
            if !old
                .drivers
                .iter()
                .any(|o| o.drivers_license == d.drivers_license)
            {
                let a = [
                    ("vehicle_id", v.vehicle_id.as_str()),
                    ("driver_id", d.driver_id.as_str()),
                ];
                out.push(change("VEHICLEDRIVER", "CREATE", None, Some(ids(&a))));
            }
        }
        for d in old.drivers.iter().filter(|o| {
            !v.drivers
                .iter()
                .any(|d| d.drivers_license == o.drivers_license)
        }) {
            let b = [
                ("vehicle_id", old.vehicle_id.as_str()),
                ("driver_id", d.driver_id.as_str()),
            ];
            out.push(change("VEHICLEDRIVER", "DELETE", Some(ids(&b)), None));
        }
    }
    for old in before.vehicles.iter().filter(|o| {
        !after
            .vehicles
            .iter()
            .any(|v| v.vin.is_some() && v.vin == o.vin)
    }) {
        let b = [
            ("policy_id", before.policy_id.as_str()),
            ("vehicle_id", old.vehicle_id.as_str()),
        ];
        out.push(change("VEHICLE", "DELETE", Some(ids(&b)), None));
    }

    for (i, d) in after.dwellings.iter().enumerate() {
        let ids_a = [
            ("policy_id", after.policy_id.as_str()),
            ("dwelling_id", d.dwelling_id.as_str()),
        ];
        let Some(old) = before.dwellings.get(i) else {
            out.push(change("DWELLING", "CREATE", None, Some(ids(&ids_a))));
            continue;
        };
        let ids_b = [
            ("policy_id", before.policy_id.as_str()),
            ("dwelling_id", old.dwelling_id.as_str()),
        ];
        let mut diff = scalar_diff(old, d, &ids_b, &ids_a);
        // Mortgagees are what lenders watch; report them as part of the dwelling.
        let names = |d: &super::model::Dwelling| -> Value {
            Value::from(
                d.mortgagees
                    .iter()
                    .filter_map(|m| m.mortgagee_name.clone())
                    .collect::<Vec<_>>(),
            )
        };
        if names(old) != names(d) {
            let (mut b, mut a) = diff.unwrap_or_else(|| (ids(&ids_b), ids(&ids_a)));
            b.as_object_mut()
                .expect("object")
                .insert("mortgagees".into(), names(old));
            a.as_object_mut()
                .expect("object")
                .insert("mortgagees".into(), names(d));
            diff = Some((b, a));
        }
        if let Some((b, a)) = diff {
            out.push(change("DWELLING", "UPDATE", Some(b), Some(a)));
        }
        for c in &d.coverages {
            let ids_ca = [
                ("dwelling_id", d.dwelling_id.as_str()),
                ("dwelling_coverage_id", c.dwelling_coverage_id.as_str()),
            ];
            match old.coverages.iter().find(|o| o.name == c.name) {
                None => out.push(change(
                    "DWELLINGCOVERAGE",
                    "CREATE",
                    None,
                    Some(ids(&ids_ca)),
                )),
                Some(oc) => {
                    let ids_cb = [
                        ("dwelling_id", old.dwelling_id.as_str()),
                        ("dwelling_coverage_id", oc.dwelling_coverage_id.as_str()),
                    ];
                    if let Some((b, a)) = scalar_diff(oc, c, &ids_cb, &ids_ca) {
                        out.push(change("DWELLINGCOVERAGE", "UPDATE", Some(b), Some(a)));
                    }
                }
            }
        }
        for oc in old
            .coverages
            .iter()
            .filter(|oc| !d.coverages.iter().any(|c| c.name == oc.name))
        {
            let b = [
                ("dwelling_id", old.dwelling_id.as_str()),
                ("dwelling_coverage_id", oc.dwelling_coverage_id.as_str()),
            ];
            out.push(change("DWELLINGCOVERAGE", "DELETE", Some(ids(&b)), None));
        }
    }
    out
}

fn new_documents(previous: &Pull, latest: &Pull, policy_id: &str) -> Vec<DocumentRef> {
    latest
        .documents
        .iter()
        .filter(|d| d.policy_id.as_deref() == Some(policy_id))
        .filter(|d| !previous.documents.iter().any(|o| o.title == d.title))
        .map(|d| DocumentRef {
            document_id: d.document_id.clone(),
        })
        .collect()
}

fn change(
    schema: &str,
    kind: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> MonitoringChange {
    MonitoringChange {
        schema: schema.into(),
        change_type: kind.into(),
        before,
        after,
    }
}

fn ids(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect(),
    )
}

/// The scalar fields (not ids, arrays or objects) that differ, each side prefixed with its ids.
fn scalar_diff<T: Serialize>(
    before: &T,
    after: &T,
    ids_before: &[(&str, &str)],
    ids_after: &[(&str, &str)],
) -> Option<(Value, Value)> {
    let (Ok(Value::Object(b)), Ok(Value::Object(a))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return None;
    };
    let mut out_b = Map::new();
    let mut out_a = Map::new();
    for (k, va) in &a {
        if k.ends_with("_id") || va.is_array() || va.is_object() {
            continue;
        }
        let vb = b.get(k).cloned().unwrap_or(Value::Null);
        if vb.is_array() || vb.is_object() || &vb == va {
            continue;
        }
        out_b.insert(k.clone(), vb);
        out_a.insert(k.clone(), va.clone());
    }
    if out_a.is_empty() {
        return None;
    }
    let with_ids = |pairs: &[(&str, &str)], m: Map<String, Value>| {
        let mut v = ids(pairs);
        v.as_object_mut().expect("object").extend(m);
        v
    };
    Some((with_ids(ids_before, out_b), with_ids(ids_after, out_a)))
}
