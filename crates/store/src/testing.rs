//! Fresh databases for tests: SQLite by default, PostgreSQL when `COVERWATCH_TEST_DATABASE_URL`
//! names a server. Each call gets a database of its own, so tests never see each other's rows.

use std::str::FromStr;

use sqlx::ConnectOptions as _;
use sqlx::Connection as _;

/// The variable that points the test suite at PostgreSQL.
pub const TEST_DATABASE_URL_VAR: &str = "COVERWATCH_TEST_DATABASE_URL";

/// The URL of a new, empty database. It is dropped when the thread that asked for it ends (a
/// test's thread ends with the test, passed or failed) or at
/// [`drop_databases_of_this_thread`], whichever comes first.
pub async fn fresh_database_url() -> String {
    let url = create_database().await;
    CREATED.with(|created| created.borrow_mut().0.push(url.clone()));
    url
}

thread_local! {
    static CREATED: std::cell::RefCell<Created> = const { std::cell::RefCell::new(Created(Vec::new())) };
}

/// The databases a thread made, dropped with the thread's locals. A test that panics half way
/// never reaches its own clean-up, and a server under test holds its database to the end; the
/// thread's end comes after both.
struct Created(Vec<String>);

impl Drop for Created {
    fn drop(&mut self) {
        let urls = std::mem::take(&mut self.0);
        if !urls.is_empty() {
            drop_all(urls);
        }
    }
}

/// Drop every database this thread made so far, now: for a program's main thread (a benchmark),
/// whose locals are not dropped when the process exits.
pub fn drop_databases_of_this_thread() {
    let urls = CREATED.with(|created| std::mem::take(&mut created.borrow_mut().0));
    drop_all(urls);
}

fn drop_all(urls: Vec<String>) {
    if urls.is_empty() {
        return;
    }
    // On a thread of its own: the caller may be inside a runtime (which cannot start another)
    // or past its runtime's end (a thread's locals are dropped after the test's runtime).
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            for url in &urls {
                drop_database(url).await;
            }
        });
    })
    .join();
}

async fn create_database() -> String {
    let name = format!("cw_test_{}", uuid_like());
    match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(server) if !server.trim().is_empty() => {
            let options = sqlx::postgres::PgConnectOptions::from_str(&server)
                .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL_VAR} is not a PostgreSQL URL: {e}"));
            let mut admin = options
                .connect()
                .await
                .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL test server: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
            let _ = admin.close().await;
            options.database(&name).to_url_lossy().to_string()
        }
        _ => {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

/// Remove a database made by [`fresh_database_url`]: the SQLite file (with its write-ahead log
/// and shared memory), or the PostgreSQL database, whoever is still connected to it.
pub async fn drop_database(url: &str) {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or(rest);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        return;
    }
    let Ok(server) = std::env::var(TEST_DATABASE_URL_VAR) else {
        return;
    };
    let Some(name) = url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|name| name.starts_with("cw_test_"))
    else {
        return;
    };
    if let Ok(options) = sqlx::postgres::PgConnectOptions::from_str(&server)
        && let Ok(mut admin) = options.connect().await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

/// A pending link of `tenant`'s user `user-1` with nothing else set, for tests to fill in the
/// fields they are about (`NewLink { session_url: …, ..testing::new_link(…) }`).
pub fn new_link(
    tenant: &coverwatch_core::TenantId,
    provider: coverwatch_core::ProviderId,
) -> crate::NewLink {
    crate::NewLink {
        id: coverwatch_core::ids::LinkId::new(),
        tenant_id: tenant.clone(),
        user_id: "user-1".parse().expect("a valid user id"),
        provider,
        metadata: Default::default(),
        session_url: None,
        webhook_token_hash: None,
        session_proof_hash: None,
        replaces_link_id: None,
        requirement_set_id: None,
        created_at: chrono::Utc::now(),
        caller_trace: None,
        connection_id: None,
    }
}

/// A fresh keyring with one random key.
pub fn keyring() -> crate::Keyring {
    crate::Keyring::from_base64(&[("test".into(), crate::Keyring::generate_key_base64())])
        .expect("a generated key is valid")
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}
