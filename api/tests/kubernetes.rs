//! The Kubernetes manifests of `deployments/kubernetes/` (issue 17), checked two ways:
//!
//! - by `check.sh`: every manifest, and each kustomization as rendered, passes
//!   `kubernetes-validate --strict` against the Kubernetes API schemas (an unknown field is
//!   an error);
//! - against this binary: each pod's command line is one `raftkv` parses, its configuration
//!   (the ConfigMap's file plus the pod's `RAFTKV_*` variables, as Kubernetes expands them)
//!   is one [`api::config::load`] accepts, the members join and the founder founds, every
//!   address is advertised under the pod's DNS name, and the ports the probes and Services
//!   use are the ones the configuration binds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use api::config::{self, Config, ConfigArgs};
use clap::Parser;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The namespace the expansions below pretend the pods run in.
const NAMESPACE: &str = "prod";

fn kubernetes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/kubernetes")
}

/// Every YAML document of the manifest at `relative` (under deployments/kubernetes).
fn documents(relative: &str) -> Vec<Value> {
    let path = kubernetes().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("parsing {relative}: {e}")))
        .collect()
}

/// The one document of kind `kind` named `name` in the manifest at `relative`.
fn resource(relative: &str, kind: &str, name: &str) -> Value {
    documents(relative)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{relative} has no {kind} {name}"))
}

/// `value` as text, or a panic naming what was expected there.
fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected text, found {value:?}"))
}

/// `value` as a list (an absent one is empty).
fn list(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], |s| s.as_slice())
}

/// The port of `host:port`.
fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr} is not host:port"))
}

/// Expands `$(NAME)` in `value` as the kubelet does, from the variables defined before it.
fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, v) in defined {
        out = out.replace(&format!("$({name})"), v);
    }
    assert!(
        !out.contains("$("),
        "{value:?} refers to a variable not defined before it"
    );
    out
}

/// The one container of a StatefulSet.
fn container(statefulset: &Value) -> &Value {
    let containers = list(&statefulset["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "one container, raftkv");
    &containers[0]
}

/// A pod of a StatefulSet as the node inside it sees it: its environment, with the downward
/// API's values for `pod`, and its command line.
struct Pod {
    env: BTreeMap<String, String>,
    argv: Vec<String>,
}

fn pod(statefulset: &Value, ordinal: u32) -> Pod {
    let name = text(&statefulset["metadata"]["name"], "metadata.name");
    let pod_name = format!("{name}-{ordinal}");
    let c = container(statefulset);
    let mut env = BTreeMap::new();
    for var in list(&c["env"]) {
        let var_name = text(&var["name"], "env name").to_string();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.clone(),
            Some("metadata.namespace") => NAMESPACE.to_string(),
            Some(other) => panic!("{var_name}: unexpected fieldRef {other}"),
            None => expand(text(&var["value"], &var_name), &env),
        };
        env.insert(var_name, value);
    }
    let argv = list(&c["command"])
        .iter()
        .chain(list(&c["args"]))
        .map(|a| text(a, "command or args").to_string())
        .collect();
    Pod { env, argv }
}

/// The binary's command line, parsed as `raftkv` parses it.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Loads the configuration a pod's node would start with: `configmap`'s file at the path
/// `--config` names (a mount of that ConfigMap), then the pod's variables, then its flags.
fn load(statefulset: &Value, ordinal: u32, configmap: &Value) -> Config {
    let pod = pod(statefulset, ordinal);
    // The image's binary (deployments/docker/Dockerfile).
    assert_eq!(
        pod.argv.first().map(String::as_str),
        Some("/usr/local/bin/raftkv"),
        "the container runs the image's raftkv"
    );
    let mut cli = Cli::try_parse_from(&pod.argv)
        .unwrap_or_else(|e| panic!("raftkv does not accept {:?}: {e}", pod.argv));
    let config_path = cli.config.config.clone().expect("the pod passes --config");
    // The file is the ConfigMap's key of that name, mounted at the file's directory.
    let c = container(statefulset);
    let dir = config_path
        .parent()
        .expect("--config names a file in a directory");
    let mount = list(&c["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str() == dir.to_str())
        .unwrap_or_else(|| panic!("no volume is mounted at {}", dir.display()));
    let volume = list(&statefulset["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume is declared");
    assert_eq!(
        volume["configMap"]["name"], configmap["metadata"]["name"],
        "--config reads the ConfigMap"
    );
    let key = config_path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let file = text(&configmap["data"][key], "the ConfigMap's config file");
    let dir = tempfile::tempdir().expect("a temporary directory for the config file");
    let local = dir.path().join(key);
    std::fs::write(&local, file).expect("writing the config file");
    cli.config.config = Some(local);
    config::load(&cli.config, pod.env.clone()).unwrap_or_else(|e| {
        panic!(
            "{} (ordinal {ordinal}) would not start: {e}",
            text(&statefulset["metadata"]["name"], "name")
        )
    })
}

/// The members' StatefulSet with the TLS overlay's patch applied as kustomize applies it
/// (a strategic merge: the container, its variables and its probes merged by name).
fn members_with_tls() -> Value {
    let mut members = resource("base/statefulset.yaml", "StatefulSet", "raftkv");
    let patch = resource("tls/statefulset.yaml", "StatefulSet", "raftkv");
    let patched = container(&patch).clone();
    let containers = members["spec"]["template"]["spec"]["containers"]
        .as_sequence_mut()
        .expect("containers");
    let c = &mut containers[0];
    for var in list(&patched["env"]) {
        let env = c["env"].as_sequence_mut().expect("env");
        match env.iter_mut().find(|v| v["name"] == var["name"]) {
            Some(existing) => *existing = var.clone(),
            None => env.push(var.clone()),
        }
    }
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        if let Some(scheme) = patched[probe]["httpGet"]["scheme"].as_str() {
            c[probe]["httpGet"]["scheme"] = Value::from(scheme);
        }
    }
    members
}

#[test]
fn check_sh_validates_every_manifest_and_kustomization() {
    // Given the manifests, when check.sh validates them against the API schemas,
    let output = Command::new("bash")
        .arg(kubernetes().join("check.sh"))
        .output()
        .expect("bash runs deployments/kubernetes/check.sh");
    // then every check passes.
    assert!(
        output.status.success(),
        "check.sh failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_pod_starts_with_a_configuration_the_binary_accepts() {
    let plain = resource("base/configmap.yaml", "ConfigMap", "raftkv-config");
    let tls = resource("tls/configmap.yaml", "ConfigMap", "raftkv-config");
    let members = resource("base/statefulset.yaml", "StatefulSet", "raftkv");
    let founder = resource("founder/founder.yaml", "StatefulSet", "raftkv-founder");
    for (what, configmap, members) in [
        ("plain", &plain, members.clone()),
        ("tls", &tls, members_with_tls()),
    ] {
        // Given a member pod, raftkv-2, with the ConfigMap and its variables,
        let config = load(&members, 2, configmap);
        // then it is named after its pod, joins through the client Service and never founds,
        assert_eq!(config.raft.node_id, "raftkv-2", "{what}");
        assert!(!config.raft.bootstrap, "{what}: a member never founds");
        let scheme = if what == "tls" { "https" } else { "http" };
        assert_eq!(
            config.raft.join_addr.as_deref(),
            Some(format!("{scheme}://raftkv.{NAMESPACE}.svc.cluster.local:8080").as_str()),
            "{what}: members join through the client Service"
        );
        // and binds every interface, advertising its pod's name under the headless Service.
        let host = format!("raftkv-2.raftkv-peers.{NAMESPACE}.svc.cluster.local");
        assert_eq!(config.raft_advertised_addr(), format!("{host}:7000"));
        assert_eq!(config.http_advertised_addr(), format!("{host}:8080"));
        assert_eq!(config.grpc_advertised_addr(), format!("{host}:9090"));
        assert_eq!(config.raft_bind_addr(), "0.0.0.0:7000");
        assert_eq!(config.http_bind_addr(), "0.0.0.0:8080");
        assert_eq!(config.grpc_bind_addr(), "0.0.0.0:9090");
        assert_eq!(config.tls.enabled, what == "tls");
        assert_eq!(config.tls.enable_peer_tls, what == "tls");

        // Given the founder pod with the same ConfigMap,
        let config = load(&founder, 0, configmap);
        // then it founds (when its volume is blank) and joins nobody.
        assert_eq!(config.raft.node_id, "raftkv-founder-0", "{what}");
        assert!(config.raft.bootstrap, "{what}: the founder founds");
        assert_eq!(config.raft.join_addr, None, "{what}");
        assert_eq!(
            config.http_advertised_addr(),
            format!("raftkv-founder-0.raftkv-peers.{NAMESPACE}.svc.cluster.local:8080")
        );
    }
}

#[test]
fn probes_services_and_volumes_agree_with_the_configuration() {
    let configmap = resource("base/configmap.yaml", "ConfigMap", "raftkv-config");
    let tls_configmap = resource("tls/configmap.yaml", "ConfigMap", "raftkv-config");
    let headless = resource("base/services.yaml", "Service", "raftkv-peers");
    let client = resource("base/services.yaml", "Service", "raftkv");
    let pdb = resource("base/pdb.yaml", "PodDisruptionBudget", "raftkv");
    let founder = resource("founder/founder.yaml", "StatefulSet", "raftkv-founder");
    for (what, statefulset, configmap) in [
        (
            "members",
            resource("base/statefulset.yaml", "StatefulSet", "raftkv"),
            &configmap,
        ),
        ("members with tls", members_with_tls(), &tls_configmap),
        ("founder", founder.clone(), &configmap),
    ] {
        // Given a StatefulSet and the configuration its pods start with,
        let config = load(&statefulset, 0, configmap);
        let c = container(&statefulset);
        let ports: BTreeMap<&str, u64> = list(&c["ports"])
            .iter()
            .map(|p| {
                let number = p["containerPort"].as_u64().expect("containerPort");
                (text(&p["name"], "port name"), number)
            })
            .collect();
        // then its named ports are the ports the node binds,
        let expected = BTreeMap::from([
            ("raft", port_of(&config.raft_bind_addr())),
            ("http", port_of(&config.http_bind_addr())),
            ("grpc", port_of(&config.grpc_bind_addr())),
        ]);
        assert_eq!(ports, expected, "{what}: container ports");
        let resolve = |port: &Value| match port.as_str() {
            Some(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("{what}: no container port named {name}")),
            None => port.as_u64().expect("a port number or name"),
        };
        // its probes ask the HTTP port, over TLS when the node serves TLS,
        let tls = config.tls.enabled;
        for (probe, path) in [
            ("startupProbe", "/health"),
            ("livenessProbe", "/health"),
            ("readinessProbe", "/ready"),
        ] {
            let p = &c[probe];
            if p.is_null() && probe == "startupProbe" {
                continue;
            }
            let (port, scheme) = if p["tcpSocket"].is_mapping() {
                // The founder's probes: an open port, whatever the scheme.
                (&p["tcpSocket"]["port"], None)
            } else {
                let get = &p["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe} path");
                (&get["port"], get["scheme"].as_str())
            };
            assert_eq!(resolve(port), expected["http"], "{what}: {probe} port");
            if let Some(scheme) = scheme {
                let wanted = if tls { "HTTPS" } else { "HTTP" };
                assert_eq!(scheme, wanted, "{what}: {probe} scheme");
            }
        }
        // the data directory is the claim's mount, and TLS files are in the Secret's mount,
        let spec = &statefulset["spec"];
        let mounts = list(&c["volumeMounts"]);
        let mount_of = |volume: &str| {
            let m = mounts
                .iter()
                .find(|m| m["name"].as_str() == Some(volume))
                .unwrap_or_else(|| panic!("{what}: volume {volume} is not mounted"));
            PathBuf::from(text(&m["mountPath"], "mountPath"))
        };
        let claims = list(&spec["volumeClaimTemplates"]);
        assert!(
            claims.iter().any(|t| t["metadata"]["name"] == "data"),
            "{what}: a claim template named data"
        );
        assert_eq!(config.storage.data_dir, mount_of("data"), "{what}");
        if tls {
            let secret = list(&spec["template"]["spec"]["volumes"])
                .iter()
                .find(|v| v["name"] == "tls")
                .expect("the tls volume");
            let items: Vec<&str> = list(&secret["secret"]["items"])
                .iter()
                .map(|i| text(&i["path"], "item path"))
                .collect();
            for file in [
                &config.tls.cert_file,
                &config.tls.key_file,
                &config.tls.ca_file,
            ] {
                let file = file.as_ref().expect("with TLS on, the files are named");
                let name = file.file_name().and_then(|f| f.to_str()).expect("a name");
                assert_eq!(file.parent(), Some(mount_of("tls").as_path()), "{what}");
                assert!(items.contains(&name), "{what}: the Secret holds {name}");
            }
        }
        // the pods are named under the headless Service and selected by both Services and
        // the PodDisruptionBudget,
        assert_eq!(spec["serviceName"], headless["metadata"]["name"], "{what}");
        let labels = &spec["template"]["metadata"]["labels"];
        for selector in [
            &headless["spec"]["selector"],
            &client["spec"]["selector"],
            &pdb["spec"]["selector"]["matchLabels"],
        ] {
            for (k, v) in selector.as_mapping().expect("a selector") {
                assert_eq!(&labels[k], v, "{what}: pod labels match {selector:?}");
            }
        }
        // and a leader has time to hand over before it is killed.
        let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(grace > 30, "{what}: a node stops within 30 s of SIGTERM");
    }

    // The headless Service publishes pods before they are ready (they must find each other
    // to elect the leader that makes them ready) and has the Raft port.
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let target_ports = |service: &Value| -> Vec<String> {
        list(&service["spec"]["ports"])
            .iter()
            .map(|p| text(&p["targetPort"], "targetPort").to_string())
            .collect()
    };
    assert_eq!(target_ports(&headless), ["raft", "http", "grpc"]);
    // The client Service serves the APIs, not the Raft port, and only ready members.
    assert_eq!(target_ports(&client), ["http", "grpc"]);
    assert!(client["spec"]["publishNotReadyAddresses"].as_bool() != Some(true));
    // Three voters, at most one down by choice, all started at once.
    let members = resource("base/statefulset.yaml", "StatefulSet", "raftkv");
    assert_eq!(members["spec"]["replicas"].as_u64(), Some(3));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(
        members["spec"]["podManagementPolicy"].as_str(),
        Some("Parallel"),
        "after a full outage no pod is ready until a quorum runs"
    );
    assert_eq!(founder["spec"]["replicas"].as_u64(), Some(1));
}
