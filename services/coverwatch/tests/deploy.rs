//! What can be checked of the deployment files without Docker or a cluster: the configuration
//! keys the service accepts (derived from its serde types) are the README table's and the
//! example file's; the example loads; the Dockerfile, compose file and Kubernetes manifests
//! parse, run subcommands the binary has, use the ports and probe paths the real server serves,
//! give it more time to stop than `shutdown_grace_seconds`, and hand it a configuration
//! `Config::load` accepts. The image itself is built by `.ci/docker-build` where Docker is.

// figment's `Jail` closures return its large error type; their size is figment's choice.
#![allow(clippy::result_large_err)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{command, send_sigterm, wait_for_line, wait_with_deadline, workdir};
use coverwatch::Config;
use figment::providers::{Format as _, Serialized, Toml};
use figment::{Figment, Provider as _};
use serde_reflection::{ContainerFormat, Format, Named, Registry, Samples, Tracer, TracerConfig};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- The keys config.rs accepts ----

/// Every key `Config` accepts, dotted (`grpc.tls.cert_file`), traced from its serde types. A
/// nested struct (also behind `Option`) contributes its own keys; lists and maps are one key.
fn config_keys() -> BTreeSet<String> {
    let mut tracer = Tracer::new(TracerConfig::default());
    let samples = Samples::new();
    tracer
        .trace_type::<Config>(&samples)
        .expect("trace the Config type");
    // Enums are traced on their own until every variant was seen.
    tracer
        .trace_type::<coverwatch::config::LogFormat>(&samples)
        .expect("trace LogFormat");
    tracer
        .trace_type::<std::net::SocketAddr>(&samples)
        .expect("trace SocketAddr");
    let registry = tracer
        .registry()
        .expect("a complete registry (a new enum in Config needs its own trace_type call here)");
    let Some(ContainerFormat::Struct(fields)) = registry.get("Config") else {
        panic!("Config is not traced as a struct: {registry:?}");
    };
    let mut keys = BTreeSet::new();
    walk(&registry, "", fields, &mut keys);
    // `vendors` is one table per vendor, each decoded by that vendor crate's own type.
    assert!(
        keys.remove("vendors"),
        "Config has a `vendors` table: {keys:?}"
    );
    for (id, registry, fields) in vendor_settings() {
        walk(&registry, &format!("vendors.{id}."), &fields, &mut keys);
    }
    keys
}

/// Each vendor plug-in's settings type, traced. A plug-in missing here fails the test: its keys
/// would otherwise go undocumented.
fn vendor_settings() -> Vec<(&'static str, Registry, Vec<Named<Format>>)> {
    fn trace<T: serde::de::DeserializeOwned>(
        name: &str,
        enums: impl FnOnce(&mut Tracer, &Samples),
    ) -> (Registry, Vec<Named<Format>>) {
        // Durations are decoded from text as they load: the traced text must be one.
        let config = TracerConfig::default()
            .default_borrowed_str_value("1s")
            .default_string_value("1s".into());
        let mut tracer = Tracer::new(config);
        let samples = Samples::new();
        enums(&mut tracer, &samples);
        tracer
            .trace_type::<T>(&samples)
            .expect("trace a settings type");
        let registry = tracer.registry().expect("a complete registry");
        let Some(ContainerFormat::Struct(fields)) = registry.get(name).cloned() else {
            panic!("{name} is not traced as a struct: {registry:?}");
        };
        (registry, fields)
    }
    let traced = vec![
        {
            let (registry, fields) =
                trace::<coverwatch_axle::AxleSettings>("AxleSettings", |_, _| {});
            (coverwatch_axle::plugin::ID, registry, fields)
        },
        {
            let (registry, fields) =
                trace::<coverwatch_canopy::CanopySettings>("CanopySettings", |tracer, samples| {
                    tracer
                        .trace_type::<coverwatch_canopy::StaleSignatures>(samples)
                        .expect("trace StaleSignatures");
                });
            (coverwatch_canopy::plugin::ID, registry, fields)
        },
    ];
    let traced_ids: Vec<&str> = traced.iter().map(|(id, _, _)| *id).collect();
    let plugin_ids: Vec<&str> = coverwatch::providers::vendors()
        .iter()
        .map(|p| p.id())
        .collect();
    assert_eq!(
        traced_ids, plugin_ids,
        "every vendor plug-in's settings type is traced here"
    );
    traced
}

fn walk(registry: &Registry, prefix: &str, fields: &[Named<Format>], keys: &mut BTreeSet<String>) {
    for field in fields {
        let key = format!("{prefix}{}", field.name);
        match struct_fields(registry, &field.value) {
            Some(inner) => walk(registry, &format!("{key}."), inner, keys),
            None => {
                keys.insert(key);
            }
        }
    }
}

fn struct_fields<'r>(registry: &'r Registry, format: &Format) -> Option<&'r Vec<Named<Format>>> {
    match format {
        Format::Option(inner) => struct_fields(registry, inner),
        Format::TypeName(name) => match registry.get(name) {
            Some(ContainerFormat::Struct(fields)) => Some(fields),
            _ => None,
        },
        _ => None,
    }
}

/// The configuration key a `COVERWATCH_*` variable sets (`COVERWATCH_VENDORS__AXLE__CLIENT_ID` →
/// `axle.client_id`).
fn key_of_variable(name: &str) -> Option<String> {
    let rest = name.strip_prefix("COVERWATCH_")?;
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// Variables that are read by the CLI, not by `Config`.
const CLI_VARIABLES: &[&str] = &["COVERWATCH_CONFIG"];

fn assert_variables_are_keys(source: &str, names: &[String], keys: &BTreeSet<String>) {
    for name in names {
        if CLI_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let key = key_of_variable(name)
            .unwrap_or_else(|| panic!("{source}: {name} is not a COVERWATCH_* variable"));
        assert!(
            keys.contains(&key),
            "{source}: {name} sets `{key}`, which is not a configuration key"
        );
    }
}

#[test]
fn config_keys_are_traced_from_the_types() {
    let keys = config_keys();
    // A few of each shape, so that a tracing change that loses nesting is noticed here.
    for key in [
        "database_url",
        "grpc.tls.client_ca_file",
        "http.tls.cert_file",
        "vendors.axle.client_secret",
        "vendors.axle.request_timeout",
        "vendors.canopy.signing_secrets",
        "vendors.canopy.monitoring_interval",
        "tenants",
        "sweep.stale_after_hours",
        "shutdown_grace_seconds",
    ] {
        assert!(keys.contains(key), "{key} missing from {keys:?}");
    }
    assert!(
        !keys.iter().any(|k| k.starts_with("tenants.")),
        "a list of tables is one key"
    );
}

// ---- The README's Configuration table ----

/// The keys named in the first column of the table under "## Configuration".
fn readme_table_keys() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section");
    let section = section.split("\n#").next().unwrap_or(section);
    let mut keys = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                keys.insert(part.to_owned());
            }
        }
    }
    keys
}

#[test]
fn the_readme_table_names_every_key_and_only_keys() {
    let config = config_keys();
    let readme = readme_table_keys();
    let missing: Vec<_> = config.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&config).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README Configuration table: no row for {missing:?}; rows for keys config.rs does not accept: {unknown:?}"
    );
}

// ---- The example coverwatch.toml ----

const EXAMPLE: &str = "services/coverwatch/coverwatch.example.toml";

/// The example with its optional settings (`# key = value`, `# [table]`) uncommented.
fn uncommented(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let setting = line.strip_prefix("# ").filter(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            (!name.is_empty()
                && rest
                    .strip_prefix(name.as_str())
                    .is_some_and(|r| r.starts_with(" = ")))
                || (rest.starts_with('[') && rest.ends_with(']') && !rest.contains(' '))
        });
        out.push_str(setting.unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The configuration keys a TOML text sets, cut at the depth `keys` knows.
fn toml_keys(text: &str, keys: &BTreeSet<String>) -> BTreeSet<String> {
    fn visit(
        dict: &figment::value::Dict,
        prefix: &str,
        keys: &BTreeSet<String>,
        out: &mut BTreeSet<String>,
    ) {
        for (name, value) in dict {
            let key = format!("{prefix}{name}");
            match value {
                figment::value::Value::Dict(_, inner) if !keys.contains(&key) => {
                    visit(inner, &format!("{key}."), keys, out)
                }
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let data = Figment::from(Toml::string(text))
        .data()
        .expect("TOML parses");
    let mut out = BTreeSet::new();
    for dict in data.values() {
        visit(dict, "", keys, &mut out);
    }
    out
}

fn random_key_base64() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn the_example_config_loads_and_names_every_key() {
    let text = read(EXAMPLE);

    // As shipped, with the secrets it leaves to the environment, through the service's loader.
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("coverwatch.toml", &text)?;
        jail.set_env(
            "COVERWATCH_VENDORS__AXLE__CLIENT_SECRET",
            "axle-secret-from-env",
        );
        jail.set_env(
            "COVERWATCH_VENDORS__CANOPY__CLIENT_SECRET",
            "canopy-secret-from-env",
        );
        jail.set_env(
            "COVERWATCH_VENDORS__CANOPY__SIGNING_SECRETS",
            "[\"whsec-from-env\"]",
        );
        jail.set_env(
            "COVERWATCH_ENCRYPTION_KEYS",
            format!("[{{id=\"2026-12\", key=\"{}\"}}]", random_key_base64()),
        );
        let config = Config::load(Path::new("coverwatch.toml"))
            .unwrap_or_else(|e| panic!("{EXAMPLE} does not load: {e}"));
        assert_eq!(
            config.public_base_url.as_deref(),
            Some("https://coverwatch-hooks.example.com"),
            "the file was read"
        );
        assert_eq!(config.tenants.len(), 1);
        assert!(config.vendors.contains_key("axle") && config.vendors.contains_key("canopy"));
        assert_eq!(
            config.shutdown_grace_seconds,
            Config::default().shutdown_grace_seconds,
            "the example shows the default grace period the manifests are sized for"
        );
        Ok(())
    });

    // Every optional setting uncommented: still a valid configuration of the right types, and
    // together with the uncommented ones it names every key.
    let full = uncommented(&text);
    Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&full))
        .extract::<Config>()
        .unwrap_or_else(|e| panic!("{EXAMPLE} with its optional settings uncommented: {e}"));
    let keys = config_keys();
    let named = toml_keys(&full, &keys);
    let missing: Vec<_> = keys.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "{EXAMPLE} does not show {missing:?} (add them, commented if optional)"
    );
}

// ---- The Dockerfile ----

struct Dockerfile {
    /// Instructions of the last stage (the image), as (INSTRUCTION, arguments).
    image: Vec<(String, String)>,
    /// Instructions of the stages before it.
    builder: Vec<(String, String)>,
}

fn dockerfile() -> Dockerfile {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((word.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(word, _)| word == "FROM")
        .expect("a FROM");
    let image = instructions.split_off(last_from);
    Dockerfile {
        image,
        builder: instructions,
    }
}

fn exec_form(source: &str, text: &str) -> Vec<String> {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{source} `{text}` is not in exec (JSON) form: {e}"))
}

impl Dockerfile {
    fn one(&self, word: &str) -> &str {
        let found: Vec<&str> = self
            .image
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest.as_str())
            .collect();
        assert_eq!(found.len(), 1, "the image stage has one {word}: {found:?}");
        found[0]
    }

    fn env(&self) -> BTreeMap<String, String> {
        self.image
            .iter()
            .filter(|(w, _)| w == "ENV")
            .flat_map(|(_, rest)| rest.split_whitespace())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("ENV in KEY=value form");
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port()
}

/// `coverwatch <args> --help` succeeds: the subcommand exists.
fn assert_subcommand_exists(source: &str, args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_coverwatch"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{source}: `coverwatch {}` is not a command the binary has: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command the README says a given thing runs: the text between backticks after `marker`.
fn readme_command(marker: &str) -> String {
    let readme = read("README.md");
    let after = readme
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README does not say `{marker}`"));
    after
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("README: no command after `{marker}`"))
        .to_owned()
}

fn binary_name() -> String {
    Path::new(env!("CARGO_BIN_EXE_coverwatch"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_image_runs_the_binary_and_subcommand_the_readme_names() {
    let docker = dockerfile();
    let entrypoint = exec_form("ENTRYPOINT", docker.one("ENTRYPOINT"));
    let cmd = exec_form("CMD", docker.one("CMD"));
    assert_eq!(entrypoint.len(), 1, "ENTRYPOINT is the binary alone");
    let binary = &entrypoint[0];
    assert_eq!(
        Path::new(binary).file_name().unwrap().to_string_lossy(),
        binary_name(),
        "the image's entrypoint is the coverwatch binary"
    );

    // The binary the image runs is the one the builder compiled.
    let build = docker
        .builder
        .iter()
        .find(|(w, rest)| w == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest.as_str())
        .expect("the builder runs cargo build");
    assert!(
        build.contains("--release") && build.contains(&format!("--bin {}", binary_name())),
        "{build}"
    );
    // The image is for production: no vendor simulators in it (README, "Vendor settings").
    assert!(
        build.contains("--no-default-features"),
        "the image is built without the `sandbox` feature: {build}"
    );
    let copied = docker
        .image
        .iter()
        .filter(|(w, _)| w == "COPY")
        .filter_map(|(_, rest)| {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            (parts.last() == Some(&binary.as_str())).then(|| parts[parts.len() - 2].to_owned())
        })
        .next()
        .expect("the image stage copies the binary to the entrypoint's path");
    assert!(
        build.contains(&format!("target/release/{} {copied}", binary_name())),
        "the builder puts target/release/{} at {copied}: {build}",
        binary_name()
    );

    // What the README says the image runs.
    let said = readme_command("The image runs");
    assert_eq!(
        format!("{} {}", binary_name(), cmd.join(" ")),
        said,
        "Dockerfile ENTRYPOINT + CMD vs README"
    );
    assert_subcommand_exists("Dockerfile CMD", &cmd);

    // The health check runs the same binary's own check.
    let healthcheck = docker.one("HEALTHCHECK");
    let (_, check) = healthcheck
        .split_once(" CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let check = exec_form("HEALTHCHECK CMD", check);
    assert_eq!(&check[0], binary);
    assert_eq!(
        format!("{} {}", binary_name(), check[1..].join(" ")),
        readme_command("its `HEALTHCHECK` runs"),
    );
    assert_subcommand_exists("HEALTHCHECK", &check[1..]);

    // Not root.
    let user = docker.one("USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0",
        "the image runs as a non-root user, not {user}"
    );

    // The listeners bind every interface on the ports the image exposes, and every variable
    // it sets is a configuration key.
    let env = docker.env();
    let exposed: BTreeSet<u16> = docker
        .one("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let bound: BTreeSet<u16> = ["COVERWATCH_GRPC_ADDR", "COVERWATCH_HTTP_ADDR"]
        .iter()
        .map(|k| port_of(env.get(*k).unwrap_or_else(|| panic!("image ENV {k}"))))
        .collect();
    assert_eq!(exposed, bound, "EXPOSE vs the addresses the image binds");
    let names: Vec<String> = env.keys().cloned().collect();
    assert_variables_are_keys("Dockerfile ENV", &names, &config_keys());

    eprintln!(
        "SKIPPED: building the image itself — Docker Hub and gcr.io are not reachable from this \
         machine; .ci/docker-build builds and smoke-tests it where Docker and the network are"
    );
}

// ---- compose.yaml ----

fn yaml_docs(relative: &str) -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    assert!(!docs.is_empty(), "{relative} is empty");
    docs
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("not a list: {yaml:?}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// `30s`, `1m30s` → seconds.
fn compose_duration(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number.parse().expect("a number before the unit");
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => panic!("unexpected duration {text}"),
        }
    }
    assert!(number.is_empty(), "a duration needs a unit: {text}");
    total
}

#[test]
fn compose_runs_two_replicas_on_one_postgres() {
    let docker = dockerfile();
    let env = docker.env();
    let grpc_port = port_of(&env["COVERWATCH_GRPC_ADDR"]);
    let http_port = port_of(&env["COVERWATCH_HTTP_ADDR"]);
    let keys = config_keys();

    let doc = &yaml_docs("compose.yaml")[0];
    let services = doc["services"].as_hash().expect("services");
    assert!(services.contains_key(&Yaml::from_str("postgres")));

    let migrate = &doc["services"]["migrate"];
    assert_eq!(strings(&migrate["command"]), ["migrate"]);
    assert_subcommand_exists("compose migrate", &strings(&migrate["command"]));
    assert_eq!(
        migrate["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );

    let replicas: Vec<&str> = services
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| k.starts_with("coverwatch-"))
        .collect();
    assert_eq!(replicas.len(), 2, "two replicas: {replicas:?}");
    let mut host_ports = BTreeSet::new();
    let mut database_urls = BTreeSet::new();
    for name in replicas {
        let service = &doc["services"][name];
        let command = strings(&service["command"]);
        assert_eq!(command, ["serve"], "{name}");
        assert_subcommand_exists(name, &command);
        assert_eq!(
            service["depends_on"]["migrate"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} starts after the migrations"
        );

        let environment = service["environment"].as_hash().expect("environment");
        let names: Vec<String> = environment
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        assert_variables_are_keys(name, &names, &keys);
        let url = service["environment"]["COVERWATCH_DATABASE_URL"]
            .as_str()
            .expect("a database URL");
        assert!(
            url.starts_with("postgres://") && url.contains("@postgres:5432/"),
            "{url}"
        );
        database_urls.insert(url.to_owned());

        // Container ports are the ones the image binds; host ports differ between replicas.
        let mut container_ports = BTreeSet::new();
        for mapping in strings(&service["ports"]) {
            let (host, container) = mapping.split_once(':').expect("HOST:CONTAINER");
            container_ports.insert(container.parse::<u16>().unwrap());
            assert!(host_ports.insert(host.to_owned()), "host port {host} twice");
        }
        assert_eq!(
            container_ports,
            BTreeSet::from([grpc_port, http_port]),
            "{name}"
        );

        let grace = service["environment"]["COVERWATCH_SHUTDOWN_GRACE_SECONDS"]
            .as_str()
            .map(|s| s.parse::<u64>().unwrap())
            .unwrap_or(Config::default().shutdown_grace_seconds);
        let stop = compose_duration(
            service["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period"),
        );
        assert!(
            stop > grace,
            "{name}: stop_grace_period {stop}s must exceed shutdown_grace_seconds {grace}s"
        );
    }
    assert_eq!(database_urls.len(), 1, "both replicas share one database");
}

// ---- Kubernetes ----

const DEPLOY: &str = "services/coverwatch/deploy";

fn manifest(file: &str, kind: &str) -> Yaml {
    yaml_docs(&format!("{DEPLOY}/{file}"))
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("{file} holds no {kind}"))
}

fn int(yaml: &Yaml, what: &str) -> i64 {
    yaml.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {yaml:?}"))
}

struct EnvVar {
    name: String,
    value: Option<String>,
    secret_key: Option<String>,
}

fn container_env(container: &Yaml) -> Vec<EnvVar> {
    container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .map(|e| EnvVar {
            name: e["name"].as_str().expect("env name").to_owned(),
            value: e["value"].as_str().map(str::to_owned),
            secret_key: e["valueFrom"]["secretKeyRef"]["key"]
                .as_str()
                .map(str::to_owned),
        })
        .collect()
}

/// A value of the right form for each secret the manifests read (none of them real).
fn test_secret(variable: &str) -> String {
    match variable {
        "COVERWATCH_DATABASE_URL" => "postgres://coverwatch:pw@postgres:5432/coverwatch".into(),
        "COVERWATCH_ENCRYPTION_KEYS" => {
            format!("[{{id=\"k1\", key=\"{}\"}}]", random_key_base64())
        }
        "COVERWATCH_TENANTS" => {
            format!("[{{id=\"acme\", api_key_sha256=[\"{}\"]}}]", "a".repeat(64))
        }
        "COVERWATCH_ADMIN_API_KEY_SHA256" => format!("[\"{}\"]", "b".repeat(64)),
        "COVERWATCH_VENDORS__AXLE__CLIENT_SECRET" | "COVERWATCH_VENDORS__CANOPY__CLIENT_SECRET" => {
            "a-vendor-secret".into()
        }
        "COVERWATCH_VENDORS__CANOPY__SIGNING_SECRETS" => "[\"a-signing-secret\"]".into(),
        other => panic!(
            "the manifests read a new secret {other}: give it a test value here and a row in secret.example.yaml"
        ),
    }
}

/// What the manifests say about the running service, for the live check below.
struct K8s {
    grpc_port: u16,
    http_paths: Vec<String>,
}

fn check_kubernetes() -> K8s {
    let keys = config_keys();
    let deployment = manifest("deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_vec()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("coverwatch"))
        .expect("a coverwatch container")
        .clone();
    let args = strings(&container["args"]);
    assert_eq!(args, ["serve"]);
    assert_subcommand_exists("Deployment args", &args);

    // The configuration the pod runs with: the ConfigMap's file plus the Secret's variables.
    let config_map = manifest("configmap.yaml", "ConfigMap");
    let config_name = config_map["metadata"]["name"].as_str().unwrap().to_owned();
    let toml = config_map["data"]["coverwatch.toml"]
        .as_str()
        .expect("coverwatch.toml in the ConfigMap")
        .to_owned();
    let secret = manifest("secret.example.yaml", "Secret");
    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_hash()
        .expect("stringData")
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let env = container_env(&container);
    let names: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
    assert_variables_are_keys("Deployment env", &names, &keys);
    let config_path = env
        .iter()
        .find(|e| e.name == "COVERWATCH_CONFIG")
        .and_then(|e| e.value.clone())
        .expect("COVERWATCH_CONFIG");
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| {
            let volume = m["name"].as_str();
            pod["volumes"].as_vec().unwrap().iter().any(|v| {
                v["name"].as_str() == volume
                    && v["configMap"]["name"].as_str() == Some(config_name.as_str())
            })
        })
        .expect("the ConfigMap is mounted")["mountPath"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        config_path,
        format!("{mount}/coverwatch.toml"),
        "COVERWATCH_CONFIG names the mounted file"
    );
    let mut variables = Vec::new();
    for var in &env {
        if let Some(key) = &var.secret_key {
            assert!(
                secret_keys.contains(key.as_str()),
                "{} reads Secret key {key}, which secret.example.yaml does not show",
                var.name
            );
            variables.push((var.name.clone(), test_secret(&var.name)));
        } else if var.name != "COVERWATCH_CONFIG" {
            variables.push((var.name.clone(), var.value.clone().expect("a value")));
        }
    }
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("coverwatch.toml", &toml)?;
        for (name, value) in &variables {
            jail.set_env(name, value);
        }
        loaded = Some(
            Config::load(Path::new("coverwatch.toml"))
                .unwrap_or_else(|e| panic!("the Deployment's configuration does not load: {e}")),
        );
        Ok(())
    });
    let config = loaded.unwrap();
    assert!(
        ["axle", "canopy"].iter().all(|id| config
            .vendors
            .get(*id)
            .is_some_and(|section| section.get("base_url").is_some())),
        "production runs both real vendors, never the embedded simulators"
    );
    assert!(config.database_url.starts_with("postgres"));

    // Ports: the container's named ports are the ones the configuration binds, on every
    // interface.
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                int(&p["containerPort"], "containerPort") as u16,
            )
        })
        .collect();
    assert_eq!(ports.get("grpc"), Some(&config.grpc_addr.port()));
    assert_eq!(ports.get("http"), Some(&config.http_addr.port()));
    assert!(config.grpc_addr.ip().is_unspecified() && config.http_addr.ip().is_unspecified());
    let port = |yaml: &Yaml| -> u16 {
        match yaml {
            Yaml::String(name) => *ports.get(name).unwrap_or_else(|| panic!("no port {name}")),
            other => int(other, "port") as u16,
        }
    };

    // Probes: liveness /healthz, readiness /readyz on the webhook listener; gRPC health.
    let liveness = &container["livenessProbe"]["httpGet"];
    let readiness = &container["readinessProbe"]["httpGet"];
    assert_eq!(liveness["path"].as_str(), Some("/healthz"));
    assert_eq!(readiness["path"].as_str(), Some("/readyz"));
    assert_eq!(port(&liveness["port"]), config.http_addr.port());
    assert_eq!(port(&readiness["port"]), config.http_addr.port());
    assert_eq!(
        port(&container["startupProbe"]["grpc"]["port"]),
        config.grpc_addr.port()
    );

    // Termination: the grace period covers the preStop pause and shutdown_grace_seconds.
    let grace = int(
        &pod["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    ) as u64;
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0) as u64;
    assert_eq!(
        config.shutdown_grace_seconds,
        Config::default().shutdown_grace_seconds,
        "the ConfigMap keeps the default grace period"
    );
    assert!(
        grace >= config.shutdown_grace_seconds + pause + 5,
        "terminationGracePeriodSeconds {grace} must cover shutdown_grace_seconds {} + preStop {pause} + a margin",
        config.shutdown_grace_seconds
    );

    // Selectors: the Service and the PodDisruptionBudget pick the Deployment's pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let replicas = int(&deployment["spec"]["replicas"], "replicas");
    assert!(replicas >= 2, "several replicas");
    let service = manifest("service.yaml", "Service");
    for (name, value) in service["spec"]["selector"].as_hash().unwrap() {
        assert_eq!(&labels[name.as_str().unwrap()], value, "Service selector");
    }
    for p in service["spec"]["ports"].as_vec().unwrap() {
        let target = port(&p["targetPort"]);
        assert!(
            ports.values().any(|v| *v == target),
            "Service targetPort {target}"
        );
    }
    let pdb = manifest("pdb.yaml", "PodDisruptionBudget");
    for (name, value) in pdb["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
        assert_eq!(&labels[name.as_str().unwrap()], value, "PDB selector");
    }
    assert!(int(&pdb["spec"]["minAvailable"], "minAvailable") < replicas);

    // The migration Job runs `migrate` with the same configuration as the pods.
    let job = manifest("migrate-job.yaml", "Job");
    let job_container = &job["spec"]["template"]["spec"]["containers"][0];
    let job_args = strings(&job_container["args"]);
    assert_eq!(job_args, ["migrate"]);
    assert_subcommand_exists("migration Job", &job_args);
    let env_of = |c: &Yaml| -> Vec<(String, Option<String>, Option<String>)> {
        container_env(c)
            .into_iter()
            .map(|e| (e.name, e.value, e.secret_key))
            .collect()
    };
    assert_eq!(
        env_of(job_container),
        env_of(&container),
        "Job env vs Deployment env"
    );

    // kustomize lists files that exist.
    let kustomization = &yaml_docs(&format!("{DEPLOY}/kustomization.yaml"))[0];
    for file in strings(&kustomization["resources"]) {
        assert!(root().join(DEPLOY).join(&file).is_file(), "{file}");
    }

    K8s {
        grpc_port: config.grpc_addr.port(),
        http_paths: vec![
            liveness["path"].as_str().unwrap().to_owned(),
            readiness["path"].as_str().unwrap().to_owned(),
        ],
    }
}

// ---- The probes against the real server ----

/// The server serves every probe path the manifests name, gRPC health answers SERVING, and
/// `coverwatch healthcheck` (the image's HEALTHCHECK) passes while it runs and fails, saying
/// why, when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_and_the_healthcheck_reach_what_the_server_serves() {
    let k8s = check_kubernetes();
    assert_ne!(k8s.grpc_port, 0);

    let dir = workdir();
    let url = coverwatch_store::testing::fresh_database_url().await;
    let mut child = command(&dir, &url).arg("serve").spawn().unwrap();
    let line = wait_for_line(&mut child, "gRPC on ", Duration::from_secs(60));
    let mut words = line.split_whitespace();
    let grpc = words.nth(2).unwrap().to_owned();
    let http = words.last().unwrap().to_owned();
    let http_addr = http.trim_start_matches("http://").to_owned();

    let client = reqwest::Client::new();
    for path in &k8s.http_paths {
        let status = client
            .get(format!("{http}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "probe path {path}");
    }

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("gRPC health answers")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let healthcheck = |args: &[&str]| {
        command(&dir, &url)
            .env("COVERWATCH_HTTP_ADDR", &http_addr)
            .arg("healthcheck")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = healthcheck(&[]);
    assert!(
        ok.status.success(),
        "healthcheck: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ready");
    let alive = healthcheck(&["--path", "/healthz"]);
    assert!(alive.status.success());
    let missing = healthcheck(&["--path", "/no-such-probe"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("/no-such-probe"),
        "{stderr}"
    );

    send_sigterm(child.id());
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    let down = healthcheck(&[]);
    assert_eq!(down.status.code(), Some(1), "nothing listens any more");
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains(&format!("GET http://{http_addr}/readyz")),
        "{stderr}"
    );
    coverwatch_store::testing::drop_database(&url).await;
}
