//! Machinery shared by the vendors' contract suites (`crates/axle/tests/contract.rs` and
//! `crates/canopy/tests/contract.rs` include this file with `#[path]`): schema validators compiled
//! once per pointer, and HTTP calls to a simulator that record every exchange for judging.
//!
//! Only what is the same for both vendors lives here. What differs stays in each suite: the
//! schema document and the sections of it a pointer may name ([`Validators::new`]), how a request
//! is authenticated and where the simulator listens ([`Vendor`]), and how an exchange is judged.
//! The core crate does not build this file: it needs the vendor crates' HTTP and schema
//! dependencies.

use std::collections::BTreeMap;
use std::sync::Mutex;

use coverwatch_sandbox::SandboxHandle;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// A JSON pointer segment, written so that it also survives as a URI fragment (`{teamId}`).
pub fn escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
        .replace(' ', "%20")
}

/// Validators for the schemas inside one document, each compiled once and kept for the run.
pub struct Validators {
    document: fn() -> &'static Value,
    /// The document's top-level sections a pointer may lead into; a schema's `$ref`s resolve
    /// inside them, so nothing is ever fetched.
    sections: &'static [&'static str],
    cache: Mutex<BTreeMap<String, &'static jsonschema::Validator>>,
}

impl Validators {
    pub const fn new(document: fn() -> &'static Value, sections: &'static [&'static str]) -> Self {
        Validators {
            document,
            sections,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// A validator for the schema at `pointer` inside the document: the schema is wrapped in a
    /// root that carries the document's sections, so that its `$ref`s resolve in place.
    pub fn validator_for(&self, pointer: &str) -> &'static jsonschema::Validator {
        if let Some(v) = self.cache.lock().unwrap().get(pointer) {
            return v;
        }
        let doc = (self.document)();
        let mut root = Map::new();
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("$ref".into(), json!(format!("#{pointer}")));
        for section in self.sections {
            root.insert((*section).to_owned(), doc[*section].clone());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema at {pointer} does not compile: {e}"));
        let validator: &'static jsonschema::Validator = Box::leak(Box::new(validator));
        self.cache
            .lock()
            .unwrap()
            .insert(pointer.to_owned(), validator);
        validator
    }

    /// Every violation of the schema at `pointer`, one line each.
    pub fn violations(&self, pointer: &str, instance: &Value) -> Vec<String> {
        self.validator_for(pointer)
            .iter_errors(instance)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect()
    }

    /// What is wrong with each webhook the simulator has sent for `vendor` so far, judged by the
    /// schema at `pointer`, one line each.
    pub fn webhook_failures(
        &self,
        sandbox: &SandboxHandle,
        vendor: &str,
        pointer: &str,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for d in sandbox.deliveries().filtered(Some(vendor), None) {
            match serde_json::from_str::<Value>(&d.body) {
                Ok(body) => failures.extend(
                    self.violations(pointer, &body)
                        .into_iter()
                        .map(|v| format!("webhook {}: {v}", d.event_type)),
                ),
                Err(_) => failures.push(format!("webhook {}: not JSON", d.event_type)),
            }
        }
        failures
    }
}

/// Reads `v` into one of our types, or fails naming `what` and the value.
pub fn read<T: DeserializeOwned>(v: &Value, what: &str) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{v}"))
}

/// The length of a JSON array; anything else counts as empty.
pub fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

// ---- recorded calls to a simulator ------------------------------------------------------------

/// One request and its answer, with the documented path template it belongs to.
pub struct Exchange {
    pub endpoint: &'static str,
    pub method: Method,
    pub template: &'static str,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub what: String,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }
}

/// An HTTP client that never follows a redirect (a 302 is an answer to judge) and the log of
/// every exchange it made.
pub struct Recorder {
    pub http: reqwest::Client,
    pub log: Mutex<Vec<Exchange>>,
}

impl Recorder {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Recorder {
            http,
            log: Mutex::default(),
        }
    }

    pub fn record(&self, exchange: Exchange) {
        self.log.lock().unwrap().push(exchange);
    }

    /// Everything recorded so far, leaving the log empty.
    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// A running simulator and the recorder of every call the suite makes to it; `vendor` holds
/// what a suite keeps beside them.
pub struct Harness<V> {
    pub sandbox: SandboxHandle,
    pub rec: Recorder,
    pub vendor: V,
}

/// What differs between the vendors' APIs: where the simulator serves one, and how a request
/// to it is authenticated.
pub trait Vendor {
    type Auth;
    fn base_url(&self, sandbox: &SandboxHandle) -> String;
    fn authorize(
        &self,
        sandbox: &SandboxHandle,
        req: RequestBuilder,
        auth: &Self::Auth,
    ) -> RequestBuilder;
}

/// One request to the simulator, built up and then sent with [`Call::send`].
pub struct Call<'a, V: Vendor> {
    h: &'a Harness<V>,
    endpoint: &'static str,
    method: Method,
    template: &'static str,
    params: Vec<(&'static str, String)>,
    query: Option<String>,
    auth: V::Auth,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl<'a, V: Vendor> Call<'a, V> {
    pub fn new(
        h: &'a Harness<V>,
        endpoint: &'static str,
        method: Method,
        template: &'static str,
        auth: V::Auth,
    ) -> Self {
        Call {
            h,
            endpoint,
            method,
            template,
            params: Vec::new(),
            query: None,
            auth,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Fills the path parameter `{name}` of the template.
    pub fn param(mut self, name: &'static str, value: &str) -> Self {
        self.params.retain(|(n, _)| *n != name);
        self.params.push((name, value.to_owned()));
        self
    }

    pub fn query(mut self, q: &str) -> Self {
        self.query = Some(q.to_owned());
        self
    }

    pub fn auth(mut self, auth: V::Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends the request, records the exchange and answers `(status, JSON body or Null)`.
    pub async fn send(self, what: &str) -> (u16, Value) {
        let mut path = self.template.to_owned();
        for (name, value) in &self.params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "unfilled parameter in {path}");
        let mut url = format!("{}{path}", self.h.vendor.base_url(&self.h.sandbox));
        if let Some(q) = &self.query {
            url = format!("{url}?{q}");
        }
        let recorder = &self.h.rec;
        let mut req = recorder.http.request(self.method.clone(), url);
        req = self.h.vendor.authorize(&self.h.sandbox, req, &self.auth);
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        if let Some(body) = &self.body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("the simulator answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap().to_vec();
        let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
        recorder.record(Exchange {
            endpoint: self.endpoint,
            method: self.method,
            template: self.template,
            status,
            headers,
            body,
            what: what.to_owned(),
        });
        (status, parsed)
    }
}
