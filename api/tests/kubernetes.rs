//! The Kubernetes manifests of `deployments/kubernetes/` (issue 17), checked two ways:
//!
//! - by `check.sh`: every manifest, and each kustomization as rendered, passes
//!   `kubernetes-validate --strict` against the Kubernetes API schemas (an unknown field is
//!   an error);
//! - against this binary: each pod's command line is one `raftkv` parses, its configuration
//!   (the ConfigMap's file plus the pod's `RAFTKV_*` variables, as Kubernetes expands them)
//!   is one [`api::config::load`] accepts, the members join and the founder founds, every
//!   address is advertised under the pod's DNS name, and the ports the probes and Services
//!   use are the ones the configuration binds;
//! - the restore of `restore/`: its claim is the one the founder adopts, and its pod's
//!   `raftkv restore` command, run by this binary with the pod's files, variables and paths,
//!   refuses a file that is no backup and restores a real one into a directory from which a
//!   node with the founder's configuration starts as the restored cluster's leader.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
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
    container_as_run(container(statefulset), &format!("{name}-{ordinal}"))
}

/// The container `c` of the pod `pod_name` as the process inside it sees it: its environment
/// (the downward API's values, `$(NAME)` expanded) and its command line.
fn container_as_run(c: &Value, pod_name: &str) -> Pod {
    let mut env = BTreeMap::new();
    for var in list(&c["env"]) {
        let var_name = text(&var["name"], "env name").to_string();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_string(),
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

/// The body of `GET path` on `addr`, as bytes (a backup is binary), checked against its
/// `Content-Length`.
fn get_bytes(addr: &str, path: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the node");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header block");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    let length: usize = common::content_length(&head).expect("a Content-Length");
    let body = raw[end + 4..].to_vec();
    assert_eq!(body.len(), length, "GET {path}: the whole body");
    body
}

/// The restore pod (`restore/pod.yaml`) run on this machine: each volume the `raftkv`
/// container mounts is a directory under `root` (named after the volume; the ConfigMap's
/// files written into its directory, `backup` written as the file `--from` names), its
/// paths on the command line mapped to those directories, and its environment the pod's.
/// Returns the exit code, stdout and stderr of the binary, and where the claim's mount is.
fn run_restore_pod(
    root: &Path,
    configmap: &Value,
    backup: &[u8],
) -> (i32, String, String, PathBuf) {
    let restore = resource("restore/pod.yaml", "Pod", "raftkv-restore");
    let c = &list(&restore["spec"]["containers"])[0];
    let run = container_as_run(c, "raftkv-restore");
    let mounts: Vec<(String, PathBuf)> = list(&c["volumeMounts"])
        .iter()
        .map(|m| {
            let local = root.join(text(&m["name"], "mount name"));
            std::fs::create_dir_all(&local).expect("a directory for the volume");
            (text(&m["mountPath"], "mountPath").to_string(), local)
        })
        .collect();
    let local = |path: &str| -> Option<PathBuf> {
        mounts.iter().find_map(|(at, dir)| {
            let rest = path.strip_prefix(at.as_str())?;
            match rest.strip_prefix('/') {
                Some(rest) => Some(dir.join(rest)),
                None if rest.is_empty() => Some(dir.clone()),
                None => None,
            }
        })
    };
    // The volumes' contents: the ConfigMap's files, the copied backup, a fresh claim (a new
    // file system holds lost+found).
    let config = local(&flag(&run.argv, "--config")).expect("--config is in a mount");
    let config_dir = config.parent().expect("a directory");
    for (key, value) in configmap["data"]
        .as_mapping()
        .expect("the ConfigMap's data")
    {
        let key = text(key, "a ConfigMap key");
        std::fs::write(config_dir.join(key), text(value, key)).expect("write the config file");
    }
    let from = local(&flag(&run.argv, "--from")).expect("--from is in a mount");
    std::fs::write(&from, backup).expect("write the backup");
    let data = local(&flag(&run.argv, "--data-dir")).expect("--data-dir is in a mount");
    std::fs::create_dir_all(data.join("lost+found")).expect("lost+found");
    let args: Vec<String> = run.argv[1..]
        .iter()
        .map(|a| match local(a) {
            Some(path) => path.to_str().expect("a UTF-8 path").to_string(),
            None => a.clone(),
        })
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(&args)
        .env_clear()
        .envs(&run.env)
        .output()
        .expect("run raftkv restore");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        data,
    )
}

/// A child process killed (and reaped) when the test is done with it, failed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `--name VALUE` in `argv` (exactly once).
fn flag(argv: &[String], name: &str) -> String {
    let at: Vec<usize> = (0..argv.len()).filter(|&i| argv[i] == name).collect();
    assert_eq!(at.len(), 1, "{argv:?} has {name} once");
    argv.get(at[0] + 1)
        .unwrap_or_else(|| panic!("{name} has no value in {argv:?}"))
        .clone()
}

#[test]
fn the_restore_pod_prepares_the_claim_the_founder_adopts() {
    let founder = resource("founder/founder.yaml", "StatefulSet", "raftkv-founder");
    let founder_pod = format!("{}-0", text(&founder["metadata"]["name"], "name"));
    let founder_c = container(&founder);
    let founder_run = pod(&founder, 0);
    let claim = resource(
        "restore/claim.yaml",
        "PersistentVolumeClaim",
        "data-raftkv-founder-0",
    );
    let restore = resource("restore/pod.yaml", "Pod", "raftkv-restore");
    let spec = &restore["spec"];

    // The claim is the one the founder's StatefulSet adopts: <template>-<pod>, with the
    // template's size, access modes and storage class, and its labels.
    let template = list(&founder["spec"]["volumeClaimTemplates"])
        .iter()
        .find(|t| t["metadata"]["name"] == "data")
        .expect("the founder's claim template data");
    let claim_name = text(&claim["metadata"]["name"], "claim name");
    assert_eq!(
        claim_name,
        format!(
            "{}-{founder_pod}",
            text(&template["metadata"]["name"], "template name")
        )
    );
    assert_eq!(claim["spec"], template["spec"], "the template's claim");
    for (k, v) in template["metadata"]["labels"].as_mapping().expect("labels") {
        assert_eq!(&claim["metadata"]["labels"][k], v, "the template's labels");
    }

    // The pod runs once, as the founder's user, in the founder's image, and no Service or
    // the PodDisruptionBudget selects it.
    assert_eq!(spec["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(
        spec["securityContext"], founder["spec"]["template"]["spec"]["securityContext"],
        "the founder's user, group and fsGroup"
    );
    let containers = list(&spec["containers"]);
    assert_eq!(containers.len(), 1, "one container, raftkv");
    let c = &containers[0];
    for field in ["image", "imagePullPolicy", "securityContext", "resources"] {
        assert_eq!(c[field], founder_c[field], "the founder's {field}");
    }
    let labels = &restore["metadata"]["labels"];
    for (what, selector) in [
        (
            "raftkv-peers",
            resource("base/services.yaml", "Service", "raftkv-peers")["spec"]["selector"].clone(),
        ),
        (
            "raftkv",
            resource("base/services.yaml", "Service", "raftkv")["spec"]["selector"].clone(),
        ),
        (
            "the PodDisruptionBudget",
            resource("base/pdb.yaml", "PodDisruptionBudget", "raftkv")["spec"]["selector"]
                ["matchLabels"]
                .clone(),
        ),
    ] {
        let selects = selector
            .as_mapping()
            .expect("a selector")
            .iter()
            .all(|(k, v)| &labels[k] == v);
        assert!(!selects, "{what} selects the restore pod");
    }

    // Its command line, by hand: `raftkv restore` with the four flags, for the founder's pod,
    // on the claim's mount (the founder's data directory), with the founder's config file.
    let run = container_as_run(c, "raftkv-restore");
    assert_eq!(
        run.argv.first(),
        founder_run.argv.first(),
        "the image's raftkv"
    );
    assert_eq!(run.argv.get(1).map(String::as_str), Some("restore"));
    let mut names: Vec<&str> = run.argv[2..]
        .iter()
        .step_by(2)
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["--config", "--data-dir", "--from", "--node-id"]);
    assert_eq!(
        run.argv.len(),
        10,
        "four flags with a value each: {:?}",
        run.argv
    );
    assert_eq!(flag(&run.argv, "--node-id"), founder_pod);
    let volumes = list(&spec["volumes"]);
    let volume_at = |c: &Value, path: &str| -> (Value, Value) {
        let mount = list(&c["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
            .clone();
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("the volume mounted at {path} is declared"))
            .clone();
        (mount, volume)
    };
    let data_dir = flag(&run.argv, "--data-dir");
    let (_, data) = volume_at(c, &data_dir);
    assert_eq!(
        data["persistentVolumeClaim"]["claimName"].as_str(),
        Some(claim_name),
        "--data-dir is the claim's mount"
    );
    let founder_data = list(&founder_c["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "data")
        .expect("the founder mounts its claim");
    assert_eq!(
        founder_data["mountPath"].as_str(),
        Some(data_dir.as_str()),
        "the founder's data directory"
    );
    let config = flag(&run.argv, "--config");
    assert_eq!(
        config,
        flag(&founder_run.argv, "--config"),
        "the founder's file"
    );
    let parent = |path: &str| {
        Path::new(path)
            .parent()
            .and_then(|p| p.to_str())
            .expect("a file in a directory")
            .to_string()
    };
    let (_, config_volume) = volume_at(c, &parent(&config));
    assert_eq!(
        config_volume["configMap"]["name"].as_str(),
        Some("raftkv-config")
    );
    // The backup is read from a volume of the pod that the init container, which receives
    // it, mounts writable at the same place, and waits for until READY is there.
    let from = flag(&run.argv, "--from");
    let (_, backup_volume) = volume_at(c, &parent(&from));
    assert!(backup_volume["emptyDir"].is_mapping(), "{backup_volume:?}");
    let inits = list(&spec["initContainers"]);
    assert_eq!(inits.len(), 1, "one init container, receive");
    let receive = &inits[0];
    let (mount, _) = volume_at(receive, &parent(&from));
    assert_eq!(mount["name"], backup_volume["name"]);
    assert_ne!(
        mount["readOnly"].as_bool(),
        Some(true),
        "kubectl cp writes there"
    );
    // Its script, run here by sh with the volume a temporary directory: it waits while the
    // file is being copied, and ends once READY is there, with an error when the file is not.
    let command: Vec<String> = list(&receive["command"])
        .iter()
        .map(|a| text(a, "command").to_string())
        .collect();
    assert_eq!(
        command.first().map(String::as_str),
        Some("sh"),
        "{command:?}"
    );
    let backup_mount = text(&mount["mountPath"], "mountPath");
    let file_name = Path::new(&from).file_name().expect("a file name");
    for with_file in [true, false] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let local = dir.path().to_str().expect("a UTF-8 path");
        let mut child = KillOnDrop(
            Command::new("sh")
                .args(command[1..].iter().map(|a| a.replace(backup_mount, local)))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("run the init container's script"),
        );
        if with_file {
            std::fs::write(dir.path().join(file_name), b"half a backup").expect("written");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(
            child.0.try_wait().expect("the script").is_none(),
            "the script ended before READY"
        );
        std::fs::write(dir.path().join("READY"), b"").expect("written");
        let mut status = None;
        common::wait_until("the script ends once READY is there", || {
            status = child.0.try_wait().expect("the script");
            status.is_some()
        });
        assert_eq!(
            status.expect("ended").success(),
            with_file,
            "READY with the file: success; without it, an error"
        );
    }

    // Then the binary itself, with the pod's variables and either ConfigMap: the command
    // line parses (clap's usage errors exit 2) and the configuration loads (also 2), so a file
    // that is no backup reaches the restore, which refuses it with one line, writing nothing.
    let plain = resource("base/configmap.yaml", "ConfigMap", "raftkv-config");
    let tls = resource("tls/configmap.yaml", "ConfigMap", "raftkv-config");
    for (what, configmap) in [("plain", &plain), ("tls", &tls)] {
        let root = tempfile::tempdir().expect("a temporary directory");
        let (code, out, err, data) =
            run_restore_pod(root.path(), configmap, b"these are not the backups");
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains("is not a RaftKV backup"), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(out.is_empty(), "{what}: {out}");
        let left: Vec<_> = std::fs::read_dir(&data)
            .expect("the claim")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(left, ["lost+found"], "{what}: the claim as it was");
    }

    // And a real backup: saved from a running node, restored by the pod's command,
    let root = tempfile::tempdir().expect("a temporary directory");
    let old = common::Proc::new("old", root.path(), None, &[]);
    common::wait_until("the backed-up node leads", || common::ready(&old));
    for i in 0..20 {
        assert_eq!(old.put(&format!("k{i}"), &format!("v{i}")).0, 200);
    }
    let backup = get_bytes(&old.http, "/admin/backup");
    drop(old);
    let pod_root = root.path().join("pod");
    let (code, out, err, data) = run_restore_pod(&pod_root, &plain, &backup);
    assert_eq!(code, 0, "raftkv restore: {err}");
    assert!(
        out.starts_with("restored backup ") && out.contains(&format!("--node-id {founder_pod}")),
        "{out}"
    );
    // then a node started on the claim as the founder's pod starts (its name, its variables,
    // bootstrap included, and its config file; loopback ports in place of the pod's) restarts
    // from the restored data: it leads a cluster of one, itself, holding the backup's keys.
    let config = pod_root.join("config").join("raftkv.yaml");
    let config = config.to_str().expect("a UTF-8 path");
    let mut node = common::Proc::configure(&founder_pod, root.path(), None, &["--config", config]);
    node.dir = data;
    let mut cmd = node.command(Command::new(env!("CARGO_BIN_EXE_raftkv")), "warn");
    cmd.envs(&founder_run.env);
    node.spawn(cmd);
    common::wait_until("the restored founder leads", || common::ready(&node));
    for i in [0, 19] {
        let (status, body) = node.get(&format!("/keys/k{i}"));
        assert_eq!(status, 200, "k{i}: {body}");
        assert!(body.contains(&format!("v{i}")), "k{i}: {body}");
    }
    // Its log starts past the backup's by RESTORE_INDEX_BUMP (README.md: how an operator tells
    // a restored founder from one that founded an empty cluster), and it records its name and
    // addresses as the cluster's only member.
    let members = || -> Vec<serde_json::Value> {
        let (_, body) = node.get("/cluster/nodes");
        serde_json::from_str::<serde_json::Value>(&body).map_or(Vec::new(), |v| {
            v["nodes"].as_array().cloned().unwrap_or_default()
        })
    };
    common::wait_until("the founder records itself as the only member", || {
        let nodes = members();
        nodes.len() == 1 && nodes[0]["id"].as_str() == Some(founder_pod.as_str())
    });
    let match_index = members()[0]["match_index"].as_u64().expect("match_index");
    assert!(
        match_index > api::restore::RESTORE_INDEX_BUMP,
        "a restored log starts past the bump: {match_index}"
    );
}
