//! The monitoring files of `deployments/monitoring` checked against a live cluster (issue 16):
//! a real 3-node cluster scraped by a real Prometheus loaded with the shipped scrape config and
//! alert rules. Under load, every PromQL expression of every dashboard panel must parse and
//! return series, and every alert expression must parse and name only metrics the nodes
//! export; after the leader is killed, `RaftNoLeader` must stay quiet while `NodeDown` fires
//! for the dead node, and the survivors must count the leader change.
//!
//! Prometheus comes from `deployments/monitoring/ensure-prometheus.sh` (Debian's package); a
//! test fails, saying why, when it cannot be had.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use common::{Client, Proc, WAIT_MAX, free_port, leader_of, runtime, three_nodes, wait_until};

/// What Grafana substitutes into a panel's query before sending it: the rate window (Grafana
/// makes it at least four scrape intervals; one minute spans many of the test's 1 s scrapes),
/// and every node and the one job for the `instance` and `job` variables.
const GRAFANA_VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$instance", ".*"),
    ("$job", ".*"),
];

/// Dashboard expressions that may return no series under this test's load, by dashboard uid,
/// panel title and target refId, each with why. Keep it short: a panel is better written so
/// that it always has data.
const MAY_BE_EMPTY: &[(&str, &str, &str, &str)] = &[];

/// The shipped Prometheus scrape interval is replaced by this one in the test's copy, with the
/// rule evaluation interval and the scrape timeout, so that the test sees changes in seconds.
const TEST_INTERVAL: &str = "1s";

/// Distinct keys each of the three writers puts (one writer per node, so that followers
/// forward to the leader as clients' requests do).
const KEYS_PER_WRITER: usize = 2000;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/monitoring")
}

/// Runs one of the monitoring scripts; returns whether it succeeded, and what it printed.
fn run_script(name: &str) -> (bool, String) {
    let script = monitoring_dir().join(name);
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Makes sure `prometheus` and `promtool` are installed, failing the test if they cannot be.
/// Once per test process, whichever test asks first: two installs at once would fight over
/// dpkg's lock on a machine that lacks the package.
fn ensure_prometheus() {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let (ok, text) = run_script("ensure-prometheus.sh");
        if ok { Ok(()) } else { Err(text) }
    });
    if let Err(text) = installed {
        panic!(
            "deployments/monitoring/ensure-prometheus.sh could not provide prometheus and \
             promtool (this test needs them; install Debian's prometheus package):\n{text}"
        );
    }
}

#[test]
fn the_shipped_monitoring_files_pass_promtool_and_the_dashboard_checks() {
    ensure_prometheus();
    let (ok, text) = run_script("check.sh");
    assert!(ok, "deployments/monitoring/check.sh failed:\n{text}");
    assert!(
        text.contains("all monitoring checks passed"),
        "check.sh exited 0 without saying that every check passed:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus.

/// A Prometheus process on loopback, killed when dropped.
struct Prometheus {
    addr: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with the shipped `prometheus.yml` and rules, rewritten only to scrape
    /// `targets` every [`TEST_INTERVAL`]; returns once it is ready.
    fn start(root: &Path, targets: &[&str]) -> Prometheus {
        ensure_prometheus();
        let shipped = monitoring_dir().join("prometheus/prometheus.yml");
        let config = test_config(&shipped, targets);
        let dir = root.join("prometheus");
        std::fs::create_dir_all(&dir).expect("create Prometheus' directory");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the test's prometheus.yml");
        let log = dir.join("prometheus.log");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("create Prometheus' log"),
            ))
            .spawn()
            .expect("start prometheus (installed by ensure-prometheus.sh)");
        let mut prometheus = Prometheus { addr, child, log };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited ({status}) at start; its log:\n{}",
                    prometheus.log_text()
                );
            }
            if matches!(get(&prometheus.addr, "/-/ready"), Ok((200, _))) {
                return prometheus;
            }
            assert!(
                start.elapsed() < WAIT_MAX,
                "prometheus not ready after {WAIT_MAX:?}; its log:\n{}",
                prometheus.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` of Prometheus' HTTP API, as JSON; panics (with the log) when unreachable.
    fn api(&self, path: &str) -> (u16, Json) {
        let (status, body) = get(&self.addr, path).unwrap_or_else(|e| {
            panic!(
                "prometheus unreachable ({e}) for {path}; its log:\n{}",
                self.log_text()
            )
        });
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, json)
    }

    /// Evaluates `expr` now: its series, or Prometheus' error.
    fn query(&self, expr: &str) -> Result<Vec<Json>, String> {
        let (status, json) = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)));
        if status == 200 && json["status"] == "success" {
            let result = &json["data"]["result"];
            return Ok(match json["data"]["resultType"].as_str() {
                Some("vector" | "matrix") => result.as_array().cloned().unwrap_or_default(),
                // A scalar or string is one value.
                _ => vec![result.clone()],
            });
        }
        Err(format!(
            "HTTP {status}: {} {}",
            json["errorType"].as_str().unwrap_or(""),
            json["error"].as_str().unwrap_or(&json.to_string())
        ))
    }

    /// The series of `expr`, which must evaluate.
    fn series(&self, expr: &str) -> Vec<Json> {
        self.query(expr)
            .unwrap_or_else(|e| panic!("query {expr} failed: {e}"))
    }

    /// Waits until `expr` returns at least one series.
    fn wait_for(&self, what: &str, expr: &str) {
        wait_until(what, || !self.series(expr).is_empty());
    }

    /// The state of the alerting rule `name` (inactive, pending or firing) and its health.
    fn rule_state(&self, name: &str) -> (String, String) {
        let (_, json) = self.api("/api/v1/rules?type=alert");
        let rule = json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("Prometheus has no alerting rule {name}: {json}"));
        let text = |field: &str| rule[field].as_str().unwrap_or("").to_string();
        (text("state"), text("health"))
    }
}

/// The shipped `prometheus.yml` with only what the test must change: the targets of the
/// `raftkv` job, the intervals, and the rule files' path made absolute (it is relative to the
/// shipped file).
fn test_config(shipped: &Path, targets: &[&str]) -> String {
    let text = std::fs::read_to_string(shipped)
        .unwrap_or_else(|e| panic!("read {}: {e}", shipped.display()));
    let mut config: Yaml = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", shipped.display()));
    let global = config
        .get_mut("global")
        .and_then(Yaml::as_mapping_mut)
        .expect("the shipped prometheus.yml has a global section");
    for key in ["scrape_interval", "scrape_timeout", "evaluation_interval"] {
        global.insert(Yaml::from(key), Yaml::from(TEST_INTERVAL));
    }
    let shipped_dir = shipped.parent().expect("a file has a directory");
    let rule_files: Vec<Yaml> = config["rule_files"]
        .as_sequence()
        .expect("the shipped prometheus.yml names its rule files")
        .iter()
        .map(|file| {
            let relative = file.as_str().expect("a rule file is a path");
            let path = shipped_dir.join(relative);
            assert!(
                path.is_file(),
                "prometheus.yml names the rule file {relative}, which is not at {}",
                path.display()
            );
            Yaml::from(path.display().to_string())
        })
        .collect();
    assert!(
        !rule_files.is_empty(),
        "the shipped prometheus.yml loads no rules"
    );
    config["rule_files"] = Yaml::Sequence(rule_files);
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .expect("the shipped prometheus.yml has scrape_configs");
    let job = jobs
        .iter_mut()
        .find(|j| j["job_name"] == "raftkv")
        .expect("the shipped prometheus.yml has a job named raftkv");
    assert_eq!(
        job["metrics_path"].as_str(),
        Some("/metrics"),
        "the raftkv job scrapes /metrics"
    );
    let statics = job["static_configs"]
        .as_sequence_mut()
        .expect("the raftkv job lists static targets");
    assert_eq!(
        statics.len(),
        1,
        "the raftkv job has one static_configs entry"
    );
    let shipped_targets = statics[0]["targets"].as_sequence().map_or(0, |t| t.len());
    assert_eq!(
        shipped_targets, 3,
        "the shipped config scrapes a 3-node cluster"
    );
    statics[0]["targets"] = Yaml::Sequence(targets.iter().map(|t| Yaml::from(*t)).collect());
    serde_yaml_ng::to_string(&config).expect("a YAML value serializes")
}

/// One HTTP/1.0 request (so that the answer comes whole, not chunked) to Prometheus.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// Seconds since the Unix epoch, as Prometheus' `timestamp()` gives them (same machine).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The shipped dashboards and rules, read as the test evaluates them.

/// One PromQL expression of a dashboard, and where it is.
struct PanelExpr {
    dashboard: String,
    panel: String,
    ref_id: String,
    expr: String,
}

impl PanelExpr {
    fn place(&self) -> String {
        format!("{} / {:?} / {}", self.dashboard, self.panel, self.ref_id)
    }
}

fn substitute_grafana_variables(expr: &str) -> String {
    GRAFANA_VARIABLES
        .iter()
        .fold(expr.to_string(), |e, (variable, value)| {
            e.replace(variable, value)
        })
}

/// Every target expression of every panel of the three dashboards (rows' panels included),
/// variables substituted, and each `label_values(SELECTOR, label)` variable query's selector.
fn dashboard_expressions() -> Vec<PanelExpr> {
    let mut exprs = Vec::new();
    for uid in ["raftkv-overview", "raftkv-storage", "raftkv-cluster"] {
        let path = monitoring_dir().join(format!("grafana/dashboards/{uid}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let dashboard: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert_eq!(dashboard["uid"], uid, "{}", path.display());
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let query = &variable["query"];
            let query = query["query"].as_str().or(query.as_str()).unwrap_or("");
            if let Some(selector) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _)| selector)
            {
                exprs.push(PanelExpr {
                    dashboard: uid.to_string(),
                    panel: format!("variable {}", variable["name"].as_str().unwrap_or("")),
                    ref_id: "query".to_string(),
                    expr: substitute_grafana_variables(selector),
                });
            }
        }
        let panels = dashboard["panels"]
            .as_array()
            .expect("a dashboard has panels");
        let nested = panels
            .iter()
            .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default());
        for panel in panels.iter().cloned().chain(nested) {
            if panel["type"] == "row" {
                continue;
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(
                !targets.is_empty(),
                "{uid}: panel {} has no targets",
                panel["title"]
            );
            for target in targets {
                exprs.push(PanelExpr {
                    dashboard: uid.to_string(),
                    panel: panel["title"].as_str().unwrap_or("").to_string(),
                    ref_id: target["refId"].as_str().unwrap_or("").to_string(),
                    expr: substitute_grafana_variables(target["expr"].as_str().unwrap_or("")),
                });
            }
        }
    }
    exprs
}

/// One alerting rule of the shipped rules file.
struct AlertRule {
    name: String,
    expr: String,
    for_: Duration,
}

fn alert_rules() -> Vec<AlertRule> {
    let path = monitoring_dir().join("prometheus/rules/raftkv.rules.yml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let rules: Yaml = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("rule groups") {
        for rule in group["rules"].as_sequence().expect("a group's rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts.push(AlertRule {
                name: name.to_string(),
                expr: rule["expr"]
                    .as_str()
                    .expect("an alert has an expr")
                    .to_string(),
                for_: rule["for"]
                    .as_str()
                    .map_or(Duration::ZERO, prometheus_duration),
            });
        }
    }
    alerts
}

/// A Prometheus duration such as `1m`, `90s` or `1h30m`.
fn prometheus_duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("not a duration: {text}"));
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "ms" => {
                total += Duration::from_millis(number);
                rest = &rest[unit..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => panic!("unit {other:?} of duration {text}"),
        };
        total += Duration::from_secs(number * seconds);
        rest = &rest[unit..];
    }
    total
}

/// The metric names an expression reads: the words of the two namespaces RaftKV exports, and
/// Prometheus' own `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("raftkv_") || word.starts_with("kvstore_") || *word == "up")
        .map(str::to_string)
        .collect()
}

/// The metric names `node` serves at `GET /metrics`, for a failure's message.
fn exported_names(node: &Proc) -> Vec<String> {
    let (_, text) = node.get("/metrics");
    let names: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    names.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Load.

/// What the load did, to check the counters against.
#[derive(Default)]
struct Load {
    /// Keys written by HTTP PUTs answered 200 (each a new key).
    puts: usize,
}

/// Writes new keys through every node (followers forward to the leader), reads some back,
/// reads missing keys (404), and provokes a few errors of each kind a client meets: a failed
/// compare-and-swap (409), an empty prefix delete (400), an unknown route (404), a method a
/// route does not take (405, method OTHER); lists, deletes one key and a prefix; registers a
/// session; calls the gRPC API (a put, a read, a missing key); and takes a snapshot on a
/// follower.
fn drive_load(nodes: &[&Proc]) -> Load {
    let started = Instant::now();
    let writers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let addr = node.http.clone();
            let name = node.name.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(&addr);
                let mut puts = 0;
                for i in 0..KEYS_PER_WRITER {
                    let key = format!("mon/{name}/{i:05}");
                    let status = client.put(&key, "v");
                    assert_eq!(status, 200, "PUT {key} through {name}");
                    puts += 1;
                    if i % 10 == 0 {
                        let (status, _) = client.request("GET", &format!("/keys/{key}"), b"");
                        assert_eq!(status, 200, "GET {key} through {name}");
                        let (status, _) =
                            client.request("GET", &format!("/keys/mon/missing/{i}"), b"");
                        assert_eq!(status, 404, "GET of a missing key through {name}");
                    }
                    if i % 100 == 0 {
                        let (status, _) =
                            client.request("PUT", &format!("/keys/{key}?prev_version=7"), b"w");
                        assert_eq!(status, 409, "a failed compare-and-swap through {name}");
                    }
                }
                puts
            })
        })
        .collect();
    let mut load = Load::default();
    for writer in writers {
        load.puts += writer.join().expect("a writer panicked");
    }
    eprintln!(
        "load: {} new keys written in {:?}",
        load.puts,
        started.elapsed()
    );
    let mut client = Client::new(&nodes[0].http);
    let expect = |client: &mut Client, method: &str, path: &str, status: u16| {
        let (got, body) = client.request(method, path, b"");
        assert_eq!(got, status, "{method} {path}: {body}");
    };
    expect(&mut client, "GET", "/keys?prefix=mon/&limit=50", 200);
    expect(
        &mut client,
        "DELETE",
        &format!("/keys/mon/{}/00001", nodes[0].name),
        200,
    );
    expect(
        &mut client,
        "DELETE",
        &format!("/keys?prefix=mon/{}/0079", nodes[0].name),
        200,
    );
    expect(&mut client, "DELETE", "/keys", 400);
    expect(&mut client, "GET", "/no/such/route", 404);
    expect(&mut client, "PATCH", "/keys/mon/x", 405);
    expect(&mut client, "POST", "/sessions", 200);
    expect(&mut client, "GET", "/status", 200);
    expect(&mut client, "GET", "/cluster/nodes", 200);
    runtime().block_on(async {
        let endpoints: Vec<String> = nodes.iter().map(|p| format!("grpc://{}", p.grpc)).collect();
        let grpc = cli::Client::new(endpoints).expect("a gRPC client");
        for i in 0..20 {
            grpc.put(format!("mon/grpc/{i}"), "g")
                .await
                .expect("a gRPC put");
            grpc.get(format!("mon/grpc/{i}"), cli::Consistency::Linearizable)
                .await
                .expect("a gRPC get");
        }
        let missing = grpc
            .get("mon/grpc/missing", cli::Consistency::Linearizable)
            .await;
        assert!(
            matches!(missing, Err(cli::Error::NotFound { .. })),
            "a gRPC get of a missing key: {missing:?}"
        );
    });
    let follower = nodes[(leader_of(nodes).expect("a leader") + 1) % nodes.len()];
    let (status, body) = common::http(&follower.http, "POST", "/admin/snapshot", b"");
    assert_eq!(
        status, 200,
        "POST /admin/snapshot on {}: {body}",
        follower.name
    );
    load
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_live_cluster_gives_every_panel_and_alert_data_and_its_failover_fires_no_raft_no_leader() {
    let started = Instant::now();
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let mut nodes = [n1, n2, n3];
    let targets: Vec<&str> = nodes.iter().map(|n| n.http.as_str()).collect();
    let prometheus = Prometheus::start(root.path(), &targets);
    let instance_of = |node: &Proc| node.http.clone();

    // Given Prometheus scraping all three nodes with the shipped config,
    wait_until("Prometheus scrapes all three nodes", || {
        let (_, json) = prometheus.api("/api/v1/targets?state=active");
        let up = json["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["job"] == "raftkv" && t["health"] == "up")
            .count();
        up == 3
    });
    let alerts = alert_rules();
    let raft_no_leader = alerts
        .iter()
        .find(|a| a.name == "RaftNoLeader")
        .expect("the shipped rules have RaftNoLeader");
    let node_down = alerts
        .iter()
        .find(|a| a.name == "NodeDown")
        .expect("the shipped rules have NodeDown");
    assert!(
        raft_no_leader.for_ >= Duration::from_secs(10),
        "RaftNoLeader's for: ({:?}) must outlast a failover",
        raft_no_leader.for_
    );
    assert!(
        raft_no_leader.for_ <= Duration::from_secs(90) && node_down.for_ <= Duration::from_secs(90),
        "this test waits out RaftNoLeader's and NodeDown's for: ({:?}, {:?}); past 90 s it \
         would take too long",
        raft_no_leader.for_,
        node_down.for_
    );

    // when clients write thousands of new keys, read, fail in the usual ways and a follower
    // takes a snapshot,
    let refs: Vec<&Proc> = nodes.iter().collect();
    let load = drive_load(&refs);
    // (Prometheus has scraped once the load is over: the last writes counted, the snapshot too)
    prometheus.wait_for(
        "Prometheus sees every write",
        &format!(
            "sum(kvstore_storage_operations_total{{operation=\"put\", status=\"ok\"}}) >= {}",
            load.puts
        ),
    );
    prometheus.wait_for(
        "Prometheus sees the snapshot",
        "sum(raftkv_snapshots_total) >= 1",
    );
    // and has scraped every node twice since: a rate needs two samples of a series, and the
    // last series the load made (the gRPC calls', the snapshot's) are seconds old.
    prometheus.wait_for(
        "two scrapes of every node after the load",
        &format!(
            "min(timestamp(up{{job=\"raftkv\"}})) > {}",
            unix_now() + 1.5
        ),
    );

    // then every dashboard expression parses and returns series,
    let mut problems = Vec::new();
    let exprs = dashboard_expressions();
    for e in &exprs {
        let allowed = MAY_BE_EMPTY.iter().any(|(uid, panel, ref_id, _)| {
            *uid == e.dashboard && *panel == e.panel && *ref_id == e.ref_id
        });
        match prometheus.query(&e.expr) {
            Err(error) => problems.push(format!(
                "{}: does not evaluate: {error}\n    {}",
                e.place(),
                e.expr
            )),
            Ok(series) if series.is_empty() && !allowed => {
                problems.push(format!("{}: no series\n    {}", e.place(), e.expr))
            }
            Ok(_) => {}
        }
    }
    // and every alert expression evaluates and reads only metrics the nodes export.
    let mut names = BTreeSet::new();
    for alert in &alerts {
        if let Err(error) = prometheus.query(&alert.expr) {
            problems.push(format!(
                "alert {}: does not evaluate: {error}\n    {}",
                alert.name, alert.expr
            ));
        }
        names.extend(metric_names(&alert.expr));
    }
    for name in &names {
        match prometheus.query(&format!("count({{__name__=\"{name}\"}}) > 0")) {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => problems.push(format!("an alert reads {name}, which no node exports")),
            Err(error) => problems.push(format!("count({name}) does not evaluate: {error}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} dashboard expressions and {} alerts fail against the live cluster:\n{}\n\
         (the metric names {} exports: {})",
        problems.len(),
        exprs.len(),
        alerts.len(),
        problems.join("\n"),
        nodes[0].name,
        exported_names(&nodes[0]).join(" ")
    );
    eprintln!(
        "{} dashboard expressions and {} alert expressions ({} metric names) checked at {:?}",
        exprs.len(),
        alerts.len(),
        names.len(),
        started.elapsed()
    );

    // When the leader is killed,
    let leader = leader_of(&refs).expect("a leader");
    drop(refs);
    let dead = instance_of(&nodes[leader]);
    let survivors: Vec<usize> = (0..nodes.len()).filter(|&i| i != leader).collect();
    let instances: Vec<String> = nodes.iter().map(instance_of).collect();
    let changes = |i: usize| -> f64 {
        let expr = format!(
            "raftkv_raft_leader_changes_seen_total{{instance=\"{}\"}}",
            instances[i]
        );
        let series = prometheus.series(&expr);
        series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value for {expr}: {series:?}"))
    };
    let changes_before: BTreeMap<usize, f64> = survivors.iter().map(|&i| (i, changes(i))).collect();
    nodes[leader].kill9();
    let killed_at = Instant::now();
    wait_until("a new leader among the survivors", || {
        let refs: Vec<&Proc> = nodes.iter().collect();
        leader_of(&refs).is_some_and(|l| l != leader)
    });
    eprintln!(
        "{} killed; a new leader after {:?}",
        nodes[leader].name,
        killed_at.elapsed()
    );

    // then both survivors count the leader change,
    wait_until("the survivors' leader changes seen grow", || {
        survivors.iter().all(|&i| changes(i) > changes_before[&i])
    });
    // and once RaftNoLeader's for: has passed (NodeDown, as long, fires for the dead node:
    // the rules are evaluated and for: durations elapse), RaftNoLeader never fired.
    let mut no_leader_states = BTreeSet::new();
    let deadline = raft_no_leader.for_.max(node_down.for_) + Duration::from_secs(30);
    loop {
        let (state, health) = prometheus.rule_state("RaftNoLeader");
        assert_eq!(health, "ok", "RaftNoLeader evaluates without error");
        no_leader_states.insert(state.clone());
        assert_ne!(
            state,
            "firing",
            "RaftNoLeader fired {:?} after a failover",
            killed_at.elapsed()
        );
        let node_down_firing = !prometheus
            .series(&format!(
                "ALERTS{{alertname=\"NodeDown\", alertstate=\"firing\", instance=\"{dead}\"}}"
            ))
            .is_empty();
        if node_down_firing && killed_at.elapsed() > raft_no_leader.for_ + Duration::from_secs(5) {
            break;
        }
        assert!(
            killed_at.elapsed() < deadline,
            "NodeDown did not fire for the killed node {dead} within {deadline:?} (is the \
             rule evaluated?); RaftNoLeader states seen: {no_leader_states:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let fired = prometheus
        .series("max_over_time(ALERTS{alertname=\"RaftNoLeader\", alertstate=\"firing\"}[10m])");
    assert!(fired.is_empty(), "RaftNoLeader fired: {fired:?}");
    eprintln!(
        "failover: RaftNoLeader states seen {no_leader_states:?}, NodeDown firing for {dead}; \
         test took {:?}",
        started.elapsed()
    );
}
