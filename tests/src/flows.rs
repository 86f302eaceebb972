//! Helpers for the vendor suites (`tests/axle.rs`, `tests/canopy.rs`): a browser that drives the
//! sandbox's hosted consent pages with plain form posts, the sandbox behind a running server,
//! and waits on a link's events and state through the public API.

use std::time::Duration;

use coverwatch_sandbox::SandboxHandle;

use crate::{Client, TestServer, eventually, v1};

/// How long a vendor flow may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The embedded sandbox of a server started without vendor credentials.
pub fn sandbox(server: &TestServer) -> &SandboxHandle {
    server
        .app
        .sandbox
        .as_ref()
        .expect("no vendor credentials: the embedded sandbox runs")
}

/// A page as a browser received it. Redirects are not followed: where a vendor sends the user
/// afterwards (the caller's redirect URI) is what the tests look at.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub html: String,
    pub location: Option<String>,
}

impl Page {
    /// The text of the element with this `id`, entities decoded.
    pub fn element_text(&self, id: &str) -> Option<String> {
        let start = self.html.find(&format!("id=\"{id}\""))?;
        let open_end = start + self.html[start..].find('>')? + 1;
        let close = open_end + self.html[open_end..].find('<')?;
        Some(decode(&self.html[open_end..close]))
    }

    /// A `data-…` attribute of the page's `<body>`.
    pub fn body_data(&self, name: &str) -> Option<String> {
        let body = self.html.find("<body")?;
        let end = body + self.html[body..].find('>')?;
        attribute(&self.html[body..end], &format!("data-{name}"))
    }

    /// A query parameter of the `Location` this page redirects to.
    pub fn location_param(&self, name: &str) -> Option<String> {
        let location = url::Url::parse(self.location.as_deref()?).ok()?;
        location
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// A form of a page: where it goes and the values it carries already (hidden inputs).
#[derive(Debug, Clone)]
pub struct Form {
    pub method: String,
    pub action: String,
    pub fields: Vec<(String, String)>,
}

fn decode(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(decode(&tag[start..end]))
}

/// The form with this `id` in `html`, with its hidden inputs.
pub fn form(html: &str, id: &str) -> Option<Form> {
    let mut rest = html;
    while let Some(at) = rest.find("<form") {
        let tag_end = at + rest[at..].find('>')?;
        let tag = &rest[at..tag_end];
        let body_end = tag_end + rest[tag_end..].find("</form>")?;
        if attribute(tag, "id").as_deref() == Some(id) {
            let body = &rest[tag_end..body_end];
            let mut fields = Vec::new();
            let mut inputs = body;
            while let Some(i) = inputs.find("<input") {
                let end = i + inputs[i..].find('>')?;
                let input = &inputs[i..end];
                if attribute(input, "type").as_deref() == Some("hidden")
                    && let (Some(name), Some(value)) =
                        (attribute(input, "name"), attribute(input, "value"))
                {
                    fields.push((name, value));
                }
                inputs = &inputs[end..];
            }
            return Some(Form {
                method: attribute(tag, "method").unwrap_or_else(|| "get".into()),
                action: attribute(tag, "action").unwrap_or_default(),
                fields,
            });
        }
        rest = &rest[body_end..];
    }
    None
}

/// Plain HTTP, as a browser without JavaScript would use the hosted pages.
pub struct Browser {
    http: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        }
    }

    async fn page(url: String, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| {
                url::Url::parse(&url)
                    .and_then(|base| base.join(l))
                    .map_or_else(|_| l.to_owned(), String::from)
            });
        let html = response.text().await.expect("page body");
        Page {
            url,
            status,
            html,
            location,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        let response = self.http.get(url).send().await.expect("GET page");
        Self::page(url.to_owned(), response).await
    }

    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> Page {
        let response = self
            .http
            .post(url)
            .form(fields)
            .send()
            .await
            .expect("POST form");
        Self::page(url.to_owned(), response).await
    }

    /// Follow a redirect the way a browser would.
    pub async fn follow(&self, page: &Page) -> Page {
        let location = page.location.as_deref().expect("a redirect");
        self.get(location).await
    }

    /// Fill in and send form `id` of `page`: its hidden fields plus `fields` (which win).
    pub async fn submit(&self, page: &Page, id: &str, fields: &[(&str, &str)]) -> Page {
        let form = form(&page.html, id).unwrap_or_else(|| {
            panic!(
                "no form `{id}` on {} ({}):\n{}",
                page.url, page.status, page.html
            )
        });
        let mut values: Vec<(String, String)> = form
            .fields
            .into_iter()
            .filter(|(name, _)| !fields.iter().any(|(n, _)| n == name))
            .collect();
        values.extend(
            fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        let action = url::Url::parse(&page.url)
            .and_then(|base| base.join(&form.action))
            .expect("form action resolves")
            .to_string();
        if form.method.eq_ignore_ascii_case("post") {
            self.post_form(&action, &values).await
        } else {
            let mut url = url::Url::parse(&action).expect("form action is a URL");
            url.query_pairs_mut().clear().extend_pairs(values);
            self.get(url.as_str()).await
        }
    }
}

/// Every event of one link so far, in order.
pub async fn link_events(client: &Client, link_id: &str) -> Vec<v1::Event> {
    let mut client = client.clone();
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .list_events(v1::ListEventsRequest {
                after_cursor: after,
                filter: Some(v1::EventFilter {
                    link_id: Some(link_id.to_owned()),
                    ..Default::default()
                }),
                page_size: 1000,
                consumer: None,
            })
            .await
            .expect("ListEvents")
            .into_inner();
        if page.events.is_empty() {
            return events;
        }
        after = page.next_cursor;
        events.extend(page.events);
    }
}

pub fn kinds(events: &[v1::Event]) -> Vec<v1::EventKind> {
    events.iter().map(v1::Event::kind).collect()
}

/// The link's events once one of `kind` is among them.
pub async fn wait_for_event(client: &Client, link_id: &str, kind: v1::EventKind) -> Vec<v1::Event> {
    eventually(&format!("{kind:?} on {link_id}"), DEADLINE, || async {
        let events = link_events(client, link_id).await;
        events.iter().any(|e| e.kind() == kind).then_some(events)
    })
    .await
}

/// The link's events once `n` of `kind` are among them.
pub async fn wait_for_events(
    client: &Client,
    link_id: &str,
    kind: v1::EventKind,
    n: usize,
) -> Vec<v1::Event> {
    eventually(
        &format!("{n} × {kind:?} on {link_id}"),
        DEADLINE,
        || async {
            let events = link_events(client, link_id).await;
            (events.iter().filter(|e| e.kind() == kind).count() >= n).then_some(events)
        },
    )
    .await
}

/// The last event of `kind` in `events`.
pub fn last_of(events: &[v1::Event], kind: v1::EventKind) -> &v1::Event {
    events
        .iter()
        .rev()
        .find(|e| e.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind:?} among {:?}", kinds(events)))
}

pub async fn get_link(client: &Client, link_id: &str) -> v1::Link {
    client
        .clone()
        .get_link(v1::GetLinkRequest {
            link_id: link_id.to_owned(),
        })
        .await
        .expect("GetLink")
        .into_inner()
        .link
        .expect("a link")
}

/// The link once it is in `state`.
pub async fn wait_for_state(client: &Client, link_id: &str, state: v1::LinkState) -> v1::Link {
    eventually(&format!("{link_id} to be {state:?}"), DEADLINE, || async {
        let link = get_link(client, link_id).await;
        (link.state() == state).then_some(link)
    })
    .await
}

pub async fn start_link(
    client: &Client,
    provider: v1::Provider,
    user_id: &str,
    redirect_uri: Option<&str>,
    replace_link_id: Option<&str>,
) -> v1::StartLinkResponse {
    client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: provider as i32,
            user_id: user_id.to_owned(),
            metadata: [("loan".to_owned(), "L-7".to_owned())].into(),
            redirect_uri: redirect_uri.map(str::to_owned),
            replace_link_id: replace_link_id.map(str::to_owned),
            requirement_set_id: None,
            provider_id: String::new(),
        })
        .await
        .expect("StartLink")
        .into_inner()
}

pub async fn list_policies(client: &Client, link_id: &str) -> Vec<v1::Policy> {
    client
        .clone()
        .list_policies(v1::ListPoliciesRequest {
            link_id: link_id.to_owned(),
        })
        .await
        .expect("ListPolicies")
        .into_inner()
        .policies
}

pub async fn get_policy(
    client: &Client,
    link_id: &str,
    policy_id: &str,
    term: v1::PolicyTerm,
) -> v1::GetPolicyResponse {
    client
        .clone()
        .get_policy(v1::GetPolicyRequest {
            link_id: link_id.to_owned(),
            policy_id: policy_id.to_owned(),
            term: term as i32,
        })
        .await
        .expect("GetPolicy")
        .into_inner()
}

pub async fn get_account(client: &Client, link_id: &str) -> v1::Account {
    client
        .clone()
        .get_account(v1::GetAccountRequest {
            link_id: link_id.to_owned(),
        })
        .await
        .expect("GetAccount")
        .into_inner()
        .account
        .expect("an account")
}

/// A normalized address, for expected values.
pub fn address(
    line1: &str,
    line2: Option<&str>,
    city: &str,
    state: &str,
    zip: &str,
    country: &str,
) -> Option<v1::Address> {
    Some(v1::Address {
        line1: Some(line1.into()),
        line2: line2.map(Into::into),
        city: Some(city.into()),
        state: Some(state.into()),
        postal_code: Some(zip.into()),
        country: Some(country.into()),
    })
}

/// A timestamp as the API carries it.
pub fn timestamp<T: chrono::TimeZone>(at: chrono::DateTime<T>) -> Option<prost_types::Timestamp> {
    Some(coverwatch_proto::convert::timestamp(
        at.with_timezone(&chrono::Utc),
    ))
}
