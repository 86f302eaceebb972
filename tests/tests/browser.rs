//! A person's way through the vendors' hosted pages: the real server with the real providers
//! against the embedded sandbox, and Debian's Chromium, headless, driven over WebDriver by
//! chromedriver. For each vendor: StartLink over gRPC, open the session URL, pick a carrier,
//! sign in with the documented sandbox login, follow the pages to the end, then check over gRPC
//! that the link is ACTIVE and `link.completed` was recorded. Screenshots of the final pages go
//! to `target/browser/`.
//!
//! Chromium and chromedriver come from Debian's packages: `.ci/install-browser.sh` installs
//! them (CI runs it). Without them these tests fail, saying so; they never pass silently.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, test_config, v1};
use fantoccini::elements::Element;
use fantoccini::{ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one page may take to show what we wait for.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the server may take to turn the vendor's webhooks into an ACTIVE link.
const LINK_DEADLINE: Duration = Duration::from_secs(30);
/// How long chromedriver may take to answer `/status`.
const DRIVER_DEADLINE: Duration = Duration::from_secs(20);
/// A whole flow, browser start to last assertion.
const FLOW_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_axle_link_completed_by_clicking_through_ignition_in_chromium() {
    run_in_browser(Vendor::Axle).await;
}

#[tokio::test]
async fn a_canopy_link_completed_by_clicking_through_the_widget_in_chromium() {
    run_in_browser(Vendor::Canopy).await;
}

/// The operator's status page, read in the browser after known traffic: the figures it shows
/// are those the server counted.
#[tokio::test]
async fn the_status_page_shows_links_webhook_outcomes_and_the_inbox_in_chromium() {
    run_in_browser(Vendor::StatusPage).await;
}

#[derive(Clone, Copy, Debug)]
enum Vendor {
    Axle,
    Canopy,
    /// Not a vendor flow: the status page, with traffic to both vendors' routes.
    StatusPage,
}

async fn status_page_flow(server: &TestServer, browser: &Browser) {
    use coverwatch_sandbox::{FaultEffect, FaultTarget};
    let sandbox = coverwatch_tests::flows::sandbox(server);
    // Only the traffic this test sends reaches the listener.
    for vendor in ["axle", "canopy"] {
        sandbox
            .faults()
            .inject(FaultTarget::webhooks(vendor), FaultEffect::Drop);
    }
    let mut client = server.client(TENANT_A).await;
    start_link(&mut client, v1::Provider::Axle).await;

    let secret = sandbox.canopy().config().webhooks[0].signing_secret.clone();
    let post = |path: &str, signature: Option<String>, body: String| {
        let mut request = server.http.post(server.http_url(path)).body(body);
        if let Some(signature) = signature {
            request = request.header("canopy-signature", signature);
        }
        async move { request.send().await.expect("answered").status().as_u16() }
    };
    for pull in ["status-page-1", "status-page-2"] {
        let body = json!({"event_type": "AUTH_STATUS", "pull_id": pull}).to_string();
        let signature = coverwatch_sandbox::canopy::signature::header_value(
            &secret,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        assert_eq!(post("/webhooks/canopy", Some(signature), body).await, 200);
    }
    let forged = coverwatch_sandbox::canopy::signature::header_value(
        &secret,
        chrono::Utc::now().timestamp(),
        b"another body",
    );
    assert_eq!(
        post("/webhooks/canopy", Some(forged), "{}".into()).await,
        401
    );
    assert_eq!(post("/webhooks/nosuch", None, "{}".into()).await, 404);

    browser.goto(&server.http_url("/")).await;
    assert_eq!(browser.text("h1").await, "coverwatch status");
    assert_eq!(browser.text("#axle-links-PENDING").await, "1");
    assert_eq!(browser.text("#canopy-links-ACTIVE").await, "0");
    assert_eq!(browser.text("#canopy-webhooks-stored").await, "2");
    assert_eq!(browser.text("#canopy-webhooks-unauthenticated").await, "1");
    assert_eq!(
        browser.text("#unknown-webhooks-unknown_provider").await,
        "1"
    );
    assert_eq!(browser.text("#axle-webhooks-stored").await, "0");
    // The worker settles both deliveries (they match no link); the page follows, its database
    // figures being at most a couple of seconds old.
    let settled = eventually(
        "the status page to show the inbox settled",
        LINK_DEADLINE,
        || async {
            browser.goto(&server.http_url("/")).await;
            let pending = browser.text("#canopy-inbox-pending").await;
            let unmatched = browser.text("#canopy-inbox-unmatched").await;
            let dead = browser.text("#canopy-inbox-dead").await;
            (pending == "0").then_some((unmatched, dead))
        },
    )
    .await;
    assert_eq!(
        settled,
        ("2".to_owned(), "0".to_owned()),
        "(unmatched, dead)"
    );
    browser.screenshot("status-page").await;
}

async fn axle_flow(server: &TestServer, browser: &Browser) {
    let mut client = server.client(TENANT_A).await;
    let (link_id, session_url) = start_link(&mut client, v1::Provider::Axle).await;

    browser.goto(&session_url).await;
    browser.wait_for("#carrier-form").await;
    let carrier = browser
        .find("input[name=carrier][value=geico]")
        .await
        .expect("GEICO is offered");
    carrier.click().await.expect("pick GEICO");
    assert!(
        carrier.is_selected().await.unwrap(),
        "GEICO is now the chosen carrier"
    );
    browser.click("#continue").await;

    browser.wait_for("#login-form").await;
    let heading = browser.text("h1").await;
    assert_eq!(heading, "Sign in to GEICO", "the login page is GEICO's");
    browser.type_into("#username", "username").await;
    browser.type_into("#password", "password").await;
    browser.click("#sign-in").await;

    // No redirectUri: Ignition ends on its own result page.
    browser.wait_for("#result-params").await;
    assert_eq!(browser.text("#status").await, "complete");
    assert_eq!(browser.text("#result").await, "link");
    assert!(
        !browser.text("#authCode").await.is_empty(),
        "an authCode is shown"
    );
    browser.screenshot("axle-linked").await;

    expect_active_and_completed(&mut client, &link_id).await;
}

async fn canopy_flow(server: &TestServer, browser: &Browser) {
    let mut client = server.client(TENANT_A).await;
    let (link_id, session_url) = start_link(&mut client, v1::Provider::Canopy).await;

    browser.goto(&session_url).await;
    browser.wait_for("form#login").await;
    browser.click("#consent").await;
    let carriers = browser.find("#insurerName").await.expect("a carrier list");
    carriers
        .select_by_value("progressive")
        .await
        .expect("pick Progressive");
    browser.type_into("#username", "user_good").await;
    browser.type_into("#password", "pass_good").await;
    browser.click("form#login button[type=submit]").await;

    // The status page refreshes itself until the pull ends; `data-pull-status` tells where.
    let status = eventually("the Canopy pull to end", PAGE_DEADLINE, || async {
        let status = browser.pull_status().await?;
        match status.as_str() {
            "SUCCESS" | "NOT_AUTHENTICATED" | "PROVIDER_ERROR" | "INTERNAL_ERROR" => Some(status),
            _ => None,
        }
    })
    .await;
    assert_eq!(status, "SUCCESS", "the pull succeeded");
    let success = browser.text("#success").await;
    assert!(
        success.contains("Progressive") && success.contains("connected"),
        "the success page names the carrier: {success}"
    );
    assert!(
        browser.find("#policies li").await.is_some(),
        "the success page lists the policies found"
    );
    browser.screenshot("canopy-linked").await;

    expect_active_and_completed(&mut client, &link_id).await;
}

async fn start_link(client: &mut Client, provider: v1::Provider) -> (String, String) {
    let started = client
        .start_link(v1::StartLinkRequest {
            provider: provider as i32,
            user_id: format!("browser-{provider:?}").to_lowercase(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("StartLink {provider:?}: {e}"))
        .into_inner();
    let link = started.link.expect("StartLink returns the link");
    assert_eq!(link.state(), v1::LinkState::Pending);
    (link.id, started.session_url)
}

async fn expect_active_and_completed(client: &mut Client, link_id: &str) {
    eventually("the link to become ACTIVE", LINK_DEADLINE, || {
        let mut client = client.clone();
        async move {
            let link = client
                .get_link(v1::GetLinkRequest {
                    link_id: link_id.to_owned(),
                })
                .await
                .expect("GetLink")
                .into_inner()
                .link?;
            (link.state() == v1::LinkState::Active).then_some(())
        }
    })
    .await;
    let events = client
        .list_events(v1::ListEventsRequest {
            after_cursor: 0,
            filter: None,
            page_size: 1000,
            consumer: None,
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events;
    let kinds: Vec<v1::EventKind> = events
        .iter()
        .filter(|e| e.link_id == link_id)
        .map(|e| e.kind())
        .collect();
    assert!(
        kinds.contains(&v1::EventKind::LinkCompleted),
        "link.completed is in ListEvents for {link_id}: {kinds:?}"
    );
}

// ---- the browser -----------------------------------------------------------------------------

/// Starts a browser and the server, runs the vendor's flow, and always closes the browser,
/// saving a screenshot `{vendor}-failed` when the flow failed.
async fn run_in_browser(vendor: Vendor) {
    require_browser();
    let name = format!("{vendor:?}").to_lowercase();
    let started = Instant::now();
    let browser = Browser::start(&name).await;
    let server = TestServer::start(test_config().await, None).await;
    let flow = async {
        match vendor {
            Vendor::Axle => axle_flow(&server, &browser).await,
            Vendor::Canopy => canopy_flow(&server, &browser).await,
            Vendor::StatusPage => status_page_flow(&server, &browser).await,
        }
    };
    let outcome = AssertUnwindSafe(tokio::time::timeout(FLOW_DEADLINE, flow))
        .catch_unwind()
        .await;
    if !matches!(outcome, Ok(Ok(()))) {
        browser.screenshot(&format!("{name}-failed")).await;
    }
    browser.close().await;
    server.stop().await;
    match outcome {
        Ok(Ok(())) => println!("{name}: browser flow took {:?}", started.elapsed()),
        Ok(Err(_)) => panic!("{name}: the browser flow took longer than {FLOW_DEADLINE:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Fails (never skips) when Debian's Chromium or chromedriver is missing.
fn require_browser() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return;
    }
    let why = if std::env::var_os("CI").is_some() {
        "CI is set, but .ci/run's browser step did not leave them installed"
    } else {
        "these tests click through the hosted pages in a real browser"
    };
    panic!(
        "{} not found ({why}). Run `.ci/install-browser.sh` (as root) to install Debian's \
         chromium and chromium-driver.",
        missing.join(" and ")
    );
}

/// Headless Chromium with a fresh profile, behind its own chromedriver.
struct Browser {
    client: fantoccini::Client,
    chromedriver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and Chromium; chromedriver logs to `target/browser/chromedriver-{name}.log`.
    async fn start(name: &str) -> Self {
        let unique = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let profile = std::env::temp_dir().join(format!("coverwatch-chromium-{unique}"));
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let logs = artifacts_dir();
        std::fs::create_dir_all(&logs).expect("create target/browser");
        let log_path = logs.join(format!("chromedriver-{name}.log"));

        let (mut chromedriver, url) = start_chromedriver(&log_path).await;
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1024,768",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let connected = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await;
        match connected {
            Ok(client) => Self {
                client,
                chromedriver,
                profile,
            },
            Err(e) => {
                let _ = chromedriver.kill();
                let _ = chromedriver.wait();
                let _ = std::fs::remove_dir_all(&profile);
                panic!(
                    "chromedriver could not start Chromium: {e}\nchromedriver log ({}):\n{}",
                    log_path.display(),
                    tail(&log_path)
                )
            }
        }
    }

    /// Ends the WebDriver session, which quits Chromium.
    async fn close(&self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the WebDriver session: {e}");
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn find(&self, css: &str) -> Option<Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    /// Waits until an element matching `css` is on the page.
    async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            if Instant::now() > deadline {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let source = self.client.source().await.unwrap_or_default();
                panic!(
                    "timed out after {PAGE_DEADLINE:?} waiting for `{css}` on {url:?}; the page:\n{source}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
        let value = field.prop("value").await.unwrap_or_default();
        assert_eq!(value.as_deref(), Some(text), "`{css}` holds what was typed");
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("read `{css}`: {e}"))
    }

    /// The Canopy widget's `data-pull-status`, if the current page has one.
    async fn pull_status(&self) -> Option<String> {
        self.find("body[data-pull-status]")
            .await?
            .attr("data-pull-status")
            .await
            .ok()
            .flatten()
    }

    /// Saves a PNG of the current page as `target/browser/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let path = artifacts_dir().join(format!("{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => {
                std::fs::write(&path, png)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                println!("screenshot: {}", path.display());
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts chromedriver on a free loopback port and waits until it says it is ready.
async fn start_chromedriver(log_path: &Path) -> (Child, String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut last_error = String::new();
    // A port found free can be taken before chromedriver binds it: try a few.
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DRIVER_DEADLINE;
        loop {
            if let Ok(Some(status)) = process.try_wait() {
                last_error = format!("chromedriver exited with {status}");
                break;
            }
            if let Ok(resp) = http.get(format!("{url}/status")).send().await
                && let Ok(body) = resp.json::<serde_json::Value>().await
                && body["value"]["ready"] == true
            {
                return (process, url);
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.wait();
                panic!(
                    "chromedriver did not answer on {url} within {DRIVER_DEADLINE:?}; log:\n{}",
                    tail(log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("{last_error}; log:\n{}", tail(log_path));
}

/// `target/browser/`, where screenshots and chromedriver logs go.
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    target.join("browser")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
