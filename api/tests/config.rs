//! The configuration layers: defaults < file < environment < flags, and one clear line for
//! every bad setting.

use std::path::PathBuf;
use std::time::Duration;

use api::config::{Config, ConfigArgs, ConfigError, LogFormat, load};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn error_line(args: &ConfigArgs, vars: &[(&str, &str)]) -> String {
    let e = load(args, env(vars)).expect_err("the configuration is bad");
    let line = e.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn with_nothing_configured_a_node_is_a_single_node_on_8080_with_data_in_dot_data() {
    let config = load(&ConfigArgs::default(), env(&[])).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.http_addr, "127.0.0.1:8080");
    assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
    assert!(config.raft.bootstrap);
    assert_eq!(config.raft.join_addr, None);
    config.validate().unwrap();
}

#[test]
fn founding_is_explicit_for_a_node_given_a_name_of_its_own() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }
    let parse = |argv: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("raftkv").chain(argv.iter().copied()))
            .expect("valid flags");
        load(&cli.config, env(&[])).expect("a valid configuration")
    };
    // Given a node named by its operator (it may already be a member of some cluster, added
    // by name), when nothing says to found, then it does not found;
    assert!(!parse(&["--node-id", "node4"]).raft.bootstrap);
    assert!(
        !load(
            &ConfigArgs::default(),
            env(&[("RAFTKV_RAFT__NODE_ID", "n4")])
        )
        .unwrap()
        .raft
        .bootstrap
    );
    // when told, it does (a bare --bootstrap means true);
    assert!(parse(&["--node-id", "node1", "--bootstrap"]).raft.bootstrap);
    assert!(
        !parse(&["--node-id", "node1", "--bootstrap", "false"])
            .raft
            .bootstrap
    );
    // and the quick-start node, with nothing configured, founds by itself.
    assert!(parse(&[]).raft.bootstrap);
    assert!(parse(&["--data-dir", "/tmp/x"]).raft.bootstrap);
}

#[test]
fn the_issue_example_environment_joins_node2_to_the_cluster_on_8081() {
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__NODE_ID", "node2"),
            ("RAFTKV_RAFT__RAFT_ADDR", "127.0.0.1:7002"),
            ("RAFTKV_RAFT__JOIN_ADDR", "http://127.0.0.1:8081"),
            ("RAFTKV_SERVER__HTTP_ADDR", "127.0.0.1:8082"),
            ("RAFTKV_STORAGE__DATA_DIR", "/tmp/n2"),
            ("PATH", "/usr/bin"),
            // Other tools' variables with the same prefix are not settings.
            ("RAFTKV_ENDPOINTS", "http://127.0.0.1:8081"),
            ("RAFTKV_BIN", "target/release/raftkv"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.node_id, "node2");
    assert_eq!(config.raft.raft_addr, "127.0.0.1:7002");
    assert_eq!(
        config.raft.join_addr.as_deref(),
        Some("http://127.0.0.1:8081")
    );
    assert!(
        !config.raft.bootstrap,
        "a joining node does not found a cluster"
    );
    assert_eq!(config.server.http_addr, "127.0.0.1:8082");
    assert_eq!(config.storage.data_dir, PathBuf::from("/tmp/n2"));
}

#[test]
fn flags_override_the_environment_which_overrides_the_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "node.yaml",
        "raft:\n  node_id: from-file\n  election_timeout: 400ms\nwal:\n  segment_size: 16MiB\nstorage:\n  snapshot_every: 500\n",
    );
    let args = ConfigArgs {
        config: Some(path),
        node_id: Some("from-flag".into()),
        set: vec!["raft.batch_wait=2ms".into()],
        ..ConfigArgs::default()
    };
    let config = load(
        &args,
        env(&[
            ("RAFTKV_RAFT__NODE_ID", "from-env"),
            ("RAFTKV_STORAGE__SNAPSHOT_EVERY", "700"),
            ("RAFTKV_OBSERVABILITY__LOG_FORMAT", "json"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.node_id, "from-flag");
    assert_eq!(config.storage.snapshot_every, 700, "env over file");
    assert_eq!(
        config.raft.election_timeout,
        Duration::from_millis(400),
        "file over default"
    );
    assert_eq!(config.wal.segment_size, 16 << 20);
    assert_eq!(config.raft.batch_wait, Duration::from_millis(2));
    assert_eq!(config.observability.log_format, LogFormat::Json);
    assert_eq!(
        config.raft.heartbeat_interval,
        Duration::from_millis(50),
        "default kept"
    );
}

#[test]
fn toml_files_read_like_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "node.toml",
        "[raft]\nnode_id = \"t1\"\nheartbeat_interval = 20\nbatch_size = 64\n",
    );
    let config = load(
        &ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        },
        env(&[]),
    )
    .unwrap();
    assert_eq!(config.raft.node_id, "t1");
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(20));
    assert_eq!(config.raft.batch_size, 64);
}

#[test]
fn a_typo_in_a_file_names_the_key_the_file_and_the_likely_intent() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "node.yaml", "raft:\n  node_idd: n1\n");
    let line = error_line(
        &ConfigArgs {
            config: Some(path.clone()),
            ..ConfigArgs::default()
        },
        &[],
    );
    assert!(line.contains("unknown key raft.node_idd"), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("did you mean raft.node_id?"), "{line}");
}

#[test]
fn a_key_given_twice_in_a_yaml_file_is_refused_naming_the_key_and_its_line() {
    // Given a file that sets raft.node_id twice (the later line would silently win)
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "node.yaml",
        "raft:\n  node_id: n1\n  heartbeat_interval: 50ms\n  node_id: n2\n",
    );
    // When the configuration is loaded
    let line = error_line(
        &ConfigArgs {
            config: Some(path.clone()),
            ..ConfigArgs::default()
        },
        &[],
    );
    // Then it is refused, naming the file, the key and the line of the repeat
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(
        line.contains("key raft.node_id appears twice, on lines 2 and 4"),
        "{line}"
    );
}

#[test]
fn a_section_given_twice_in_a_yaml_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "node.yaml",
        "raft:\n  node_id: n1\nhttp:\n  listen_addr: 127.0.0.1:1\nraft:\n  node_id: n2\n",
    );
    let line = error_line(
        &ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        },
        &[],
    );
    assert!(
        line.contains("key raft appears twice, on lines 1 and 5"),
        "{line}"
    );
}

#[test]
fn a_key_given_twice_in_a_flow_map_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "node.yaml", "raft: {node_id: n1, node_id: n2}\n");
    let line = error_line(
        &ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        },
        &[],
    );
    assert!(
        line.contains("duplicate entry with key \"node_id\""),
        "{line}"
    );
}

#[test]
fn a_bad_value_names_the_key_and_where_it_came_from() {
    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_RAFT__ELECTION_TIMEOUT", "5 parsecs")],
    );
    assert!(
        line.starts_with("config error: raft.election_timeout from $RAFTKV_RAFT__ELECTION_TIMEOUT"),
        "{line}"
    );
    assert!(line.contains("unknown duration unit"), "{line}");

    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_RAFT__BOOTSTRAP", "maybe")],
    );
    assert!(
        line.contains("raft.bootstrap") && line.contains("not true or false"),
        "{line}"
    );

    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_STORAGE__SNAPSHOT_EVERY", "-3")],
    );
    assert!(
        line.contains("storage.snapshot_every") && line.contains("whole number"),
        "{line}"
    );

    let line = error_line(&ConfigArgs::default(), &[("RAFTKV_NOPE__THING", "1")]);
    assert!(line.contains("unknown key nope.thing"), "{line}");

    let line = error_line(&ConfigArgs::default(), &[("RAFTKV_RAFT_NODE_ID", "n1")]);
    assert!(
        line.contains("did you mean RAFTKV_RAFT__NODE_ID?"),
        "{line}"
    );
}

#[test]
fn out_of_range_and_contradictory_settings_are_refused_with_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("RAFTKV_RAFT__HEARTBEAT_INTERVAL", "200ms")],
            "raft.heartbeat_interval",
        ),
        (
            &[("RAFTKV_RAFT__HEARTBEAT_INTERVAL", "0.0004ms")],
            "raft.heartbeat_interval",
        ),
        // The seed's name for the election timeout is checked as the election timeout.
        (
            &[("RAFTKV_RAFT__HEARTBEAT_TIMEOUT", "1ms")],
            "raft.heartbeat_timeout",
        ),
        (
            &[("RAFTKV_RAFT__ELECTION_TIMEOUT", "1ms")],
            "raft.election_timeout",
        ),
        (&[("RAFTKV_WAL__SEGMENT_SIZE", "1KiB")], "wal.segment_size"),
        (&[("RAFTKV_RAFT__BATCH_SIZE", "0")], "raft.batch_size"),
        (&[("RAFTKV_RAFT__BATCH_WAIT", "1s")], "raft.batch_wait"),
        // The earlier names, checked alike and named as written.
        (&[("RAFTKV_WAL__BATCH_SIZE", "0")], "wal.batch_size"),
        (
            &[("RAFTKV_WAL__BATCH_WAIT_TIME", "1s")],
            "wal.batch_wait_time",
        ),
        (
            &[("RAFTKV_STORAGE__SNAPSHOT_EVERY", "0")],
            "storage.snapshot_every",
        ),
        (&[("RAFTKV_RAFT__NODE_ID", "no spaces")], "raft.node_id"),
        (&[("RAFTKV_RAFT__RAFT_ADDR", "7001")], "raft.raft_addr"),
        (
            &[("RAFTKV_SERVER__HTTP_ADDR", "localhost:http")],
            "server.http_addr",
        ),
        (
            &[("RAFTKV_RAFT__JOIN_ADDR", "127.0.0.1:8081")],
            "raft.join_addr",
        ),
        (
            &[("RAFTKV_OBSERVABILITY__LOG_LEVEL", "loud")],
            "observability.log_level",
        ),
        (
            &[("RAFTKV_OBSERVABILITY__LOG_FORMAT", "xml")],
            "observability.log_format",
        ),
        (
            &[
                ("RAFTKV_RAFT__JOIN_ADDR", "http://n1:8080"),
                ("RAFTKV_RAFT__BOOTSTRAP", "true"),
            ],
            "raft.bootstrap",
        ),
    ];
    for (vars, key) in cases {
        let line = error_line(&ConfigArgs::default(), vars);
        assert!(line.contains(key), "{vars:?} → {line}");
        assert!(line.contains("$RAFTKV_"), "names the variable: {line}");
    }
}

#[test]
fn unreadable_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, expect) in [
        ("a.yaml", "raft: [1, 2", "cannot read"),
        ("a.toml", "[raft\n", "cannot read"),
        ("a.ini", "x=1", "name it .yaml"),
        ("b.yaml", "- just\n- a list\n", "map of sections"),
    ] {
        let path = file(&dir, name, text);
        let e = load(
            &ConfigArgs {
                config: Some(path),
                ..ConfigArgs::default()
            },
            env(&[]),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{name}: {e}");
        assert!(e.to_string().contains(expect), "{name}: {e}");
        assert!(!e.to_string().contains('\n'), "{name}: one line: {e}");
    }
    let missing = ConfigArgs {
        config: Some(dir.path().join("missing.yaml")),
        ..ConfigArgs::default()
    };
    assert!(
        load(&missing, env(&[]))
            .unwrap_err()
            .to_string()
            .contains("missing.yaml")
    );
}

#[test]
fn the_example_configs_in_the_repository_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    for name in [
        "config.example.yaml",
        "config.dev.yaml",
        "config.prod.yaml",
        "node1.yaml",
        "node2.yaml",
        "node3.yaml",
    ] {
        let args = ConfigArgs {
            config: Some(root.join(name)),
            ..ConfigArgs::default()
        };
        load(&args, env(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_raft_listener_binds_raft_listen_addr_when_set_and_raft_addr_otherwise() {
    // Unset by default: the node listens where it tells peers to connect.
    let config = load(&ConfigArgs::default(), env(&[])).unwrap();
    assert_eq!(config.raft.raft_listen_addr, None);

    // Behind a forwarding proxy the advertised address and the bound one differ.
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__RAFT_ADDR", "127.0.0.1:7002"),
            ("RAFTKV_RAFT__RAFT_LISTEN_ADDR", "127.0.0.1:17002"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.raft_addr, "127.0.0.1:7002");
    assert_eq!(
        config.raft.raft_listen_addr.as_deref(),
        Some("127.0.0.1:17002")
    );
    let flags = ConfigArgs {
        set: vec!["raft.raft_listen_addr=127.0.0.1:17003".into()],
        ..ConfigArgs::default()
    };
    let config = load(&flags, env(&[])).unwrap();
    assert_eq!(
        config.raft.raft_listen_addr.as_deref(),
        Some("127.0.0.1:17003")
    );

    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_RAFT__RAFT_LISTEN_ADDR", "no-port")],
    );
    assert!(line.contains("raft.raft_listen_addr"), "{line}");
    assert!(line.contains("RAFTKV_RAFT__RAFT_LISTEN_ADDR"), "{line}");
}

#[test]
fn the_space_quota_defaults_to_2_gib_takes_units_and_refuses_a_forgotten_one() {
    // Given nothing configured, the quota is etcd's default, 2 GiB.
    let config = load(&ConfigArgs::default(), env(&[])).unwrap();
    assert_eq!(config.storage.quota_bytes, 2 << 30);
    assert_eq!(config.storage.quota_bytes, api::config::QUOTA_BYTES_DEFAULT);
    // When it is set in a file, the environment or a flag, units are read as for any size.
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "q.yaml", "storage:\n  quota_bytes: 8GiB\n");
    let from_file = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    assert_eq!(
        load(&from_file, env(&[])).unwrap().storage.quota_bytes,
        8 << 30
    );
    let from_env = load(
        &ConfigArgs::default(),
        env(&[("RAFTKV_STORAGE__QUOTA_BYTES", "512MiB")]),
    )
    .unwrap();
    assert_eq!(from_env.storage.quota_bytes, 512 << 20);
    let flags = ConfigArgs {
        set: vec!["storage.quota_bytes=64KiB".into()],
        ..ConfigArgs::default()
    };
    assert_eq!(
        load(&flags, env(&[])).unwrap().storage.quota_bytes,
        64 << 10
    );
    // Then 0 and a size without its unit are refused, naming the key, the minimum and the
    // default (0 is not "the default" as in etcd: a layer that sets a value means it);
    for bad in ["0", "2", "65535"] {
        let line = error_line(
            &ConfigArgs::default(),
            &[("RAFTKV_STORAGE__QUOTA_BYTES", bad)],
        );
        assert!(
            line.contains("storage.quota_bytes")
                && line.contains("below the minimum 64KiB")
                && line.contains("default is 2GiB"),
            "{bad} → {line}"
        );
    }
    // and a value that is not a size says so.
    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_STORAGE__QUOTA_BYTES", "2 parsecs")],
    );
    assert!(
        line.contains("storage.quota_bytes") && line.contains("unknown size unit"),
        "{line}"
    );
}

#[test]
fn the_new_names_set_the_heartbeat_interval_and_the_raft_drivers_batch() {
    // Given the new names in a file, in the environment and in --set flags
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "node.yaml",
        "raft:\n  heartbeat_interval: 40ms\n  batch_size: 256\n  batch_wait: 1ms\n",
    );
    let from_file = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    // When each is loaded, then each sets its field
    let config = load(&from_file, env(&[])).unwrap();
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(40));
    assert_eq!(config.raft.batch_size, 256);
    assert_eq!(config.raft.batch_wait, Duration::from_millis(1));
    assert_eq!(
        config.raft.election_timeout,
        Duration::from_millis(250),
        "the election timeout is not the heartbeat interval"
    );
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__HEARTBEAT_INTERVAL", "30ms"),
            ("RAFTKV_RAFT__BATCH_SIZE", "128"),
            ("RAFTKV_RAFT__BATCH_WAIT", "2ms"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(30));
    assert_eq!(config.raft.batch_size, 128);
    assert_eq!(config.raft.batch_wait, Duration::from_millis(2));
    let flags = ConfigArgs {
        set: vec![
            "raft.heartbeat_interval=20ms".into(),
            "raft.batch_size=64".into(),
        ],
        ..ConfigArgs::default()
    };
    let config = load(&flags, env(&[])).unwrap();
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(20));
    assert_eq!(config.raft.batch_size, 64);
}

#[test]
fn raft_heartbeat_timeout_is_the_election_timeout_as_in_the_seed() {
    // Given the seed's key alone, in a file or in the environment
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "seed.yaml", "raft:\n  heartbeat_timeout: 1s\n");
    let from_file = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    // When loaded, then it sets how long a follower waits before it campaigns, and the
    // heartbeat interval keeps its default
    let config = load(&from_file, env(&[])).unwrap();
    assert_eq!(config.raft.election_timeout, Duration::from_secs(1));
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(50));
    let config = load(
        &ConfigArgs::default(),
        env(&[("RAFTKV_RAFT__HEARTBEAT_TIMEOUT", "600ms")]),
    )
    .unwrap();
    assert_eq!(config.raft.election_timeout, Duration::from_millis(600));
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(50));
    // and given with raft.election_timeout at the same value, written another way, it is
    // accepted.
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__HEARTBEAT_TIMEOUT", "1s"),
            ("RAFTKV_RAFT__ELECTION_TIMEOUT", "1000"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.election_timeout, Duration::from_secs(1));
}

#[test]
fn raft_heartbeat_timeout_and_a_different_election_timeout_are_refused_saying_why() {
    // Given a file written for the old meaning (heartbeat_timeout as the heartbeat interval)
    // beside an election timeout
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "old.yaml",
        "raft:\n  election_timeout: 500ms\n  heartbeat_timeout: 100ms\n",
    );
    // When it is loaded
    let line = error_line(
        &ConfigArgs {
            config: Some(path.clone()),
            ..ConfigArgs::default()
        },
        &[],
    );
    // Then it is refused in one line naming both keys, their values and where they came from,
    // what the seed's key means, and the key the heartbeat interval has now
    for part in [
        "raft.heartbeat_timeout",
        "(100ms)",
        "raft.election_timeout",
        "(500ms)",
        &path.display().to_string(),
        "election timeout",
        "raft.heartbeat_interval",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    // and the same holds across layers.
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_RAFT__HEARTBEAT_TIMEOUT", "300ms"),
            ("RAFTKV_RAFT__ELECTION_TIMEOUT", "250ms"),
        ],
    );
    assert!(line.contains("$RAFTKV_RAFT__HEARTBEAT_TIMEOUT"), "{line}");
    assert!(line.contains("$RAFTKV_RAFT__ELECTION_TIMEOUT"), "{line}");
}

#[test]
fn an_old_heartbeat_timeout_too_short_for_an_election_timeout_says_what_it_means_now() {
    // Given only the old key at a heartbeat-sized value
    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_RAFT__HEARTBEAT_TIMEOUT", "50ms")],
    );
    // Then the refusal explains that the key is the election timeout
    assert!(line.contains("raft.heartbeat_interval"), "{line}");
    assert!(line.contains("seed's (hashicorp/raft) name"), "{line}");
}

#[test]
fn the_wal_batch_keys_still_set_the_raft_drivers_batch() {
    // Given the earlier names in a file, the environment and a flag
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "old.yaml",
        "wal:\n  batch_size: 512\n  batch_wait_time: 3ms\n",
    );
    let from_file = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    // When loaded, then they set what raft.batch_size and raft.batch_wait set
    let config = load(&from_file, env(&[])).unwrap();
    assert_eq!(config.raft.batch_size, 512);
    assert_eq!(config.raft.batch_wait, Duration::from_millis(3));
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_WAL__BATCH_SIZE", "32"),
            ("RAFTKV_WAL__BATCH_WAIT_TIME", "4ms"),
        ]),
    )
    .unwrap();
    assert_eq!(config.raft.batch_size, 32);
    assert_eq!(config.raft.batch_wait, Duration::from_millis(4));
    let flags = ConfigArgs {
        set: vec!["wal.batch_wait_time=5ms".into()],
        ..ConfigArgs::default()
    };
    assert_eq!(
        load(&flags, env(&[])).unwrap().raft.batch_wait,
        Duration::from_millis(5)
    );
    // and an old and a new name given different values are refused.
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_WAL__BATCH_SIZE", "32"),
            ("RAFTKV_RAFT__BATCH_SIZE", "64"),
        ],
    );
    assert!(
        line.contains("wal.batch_size") && line.contains("raft.batch_size"),
        "{line}"
    );
    assert!(line.contains("earlier name"), "{line}");
}

#[test]
fn the_grpc_address_defaults_to_the_http_host_and_is_refused_on_the_http_port() {
    // Unset, it is the HTTP API's host on port 9090: each host of a cluster configured before
    // gRPC existed advertises its own address.
    let config = load(&ConfigArgs::default(), env(&[])).unwrap();
    assert_eq!(config.grpc_addr(), "127.0.0.1:9090");
    let config = load(
        &ConfigArgs::default(),
        env(&[("RAFTKV_SERVER__HTTP_ADDR", "node2.example:8080")]),
    )
    .unwrap();
    assert_eq!(config.grpc_addr(), "node2.example:9090");
    // Set by flag, it is what was given.
    let flags = ConfigArgs {
        grpc_addr: Some("127.0.0.1:19090".into()),
        ..ConfigArgs::default()
    };
    assert_eq!(
        load(&flags, env(&[])).unwrap().grpc_addr(),
        "127.0.0.1:19090"
    );
    // The HTTP address again is refused, naming the key.
    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_SERVER__GRPC_ADDR", "127.0.0.1:8080")],
    );
    assert!(line.contains("server.grpc_addr"), "{line}");
}

#[test]
fn auth_settings_are_checked_and_secrets_never_printed() {
    // Given the password and secret in the environment, then they load, and a printed
    // configuration does not show them.
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_AUTH__ENABLED", "true"),
            ("RAFTKV_AUTH__ADMIN_PASSWORD", "the-admin-password"),
            ("RAFTKV_AUTH__JWT_SECRET", &"s".repeat(40)),
        ]),
    )
    .expect("loads");
    assert!(config.auth.enabled);
    let printed = format!("{config:?}");
    assert!(
        !printed.contains("the-admin-password") && !printed.contains(&"s".repeat(40)),
        "{printed}"
    );
    // Each bad setting is refused naming its key.
    for (key, value, says) in [
        ("RAFTKV_AUTH__ENABLED", "true", "no default password"),
        ("RAFTKV_AUTH__JWT_SECRET", "short", "too short"),
        ("RAFTKV_AUTH__JWT_ALGORITHM", "none", "not HS256"),
        ("RAFTKV_AUTH__JWT_ALGORITHM", "RS256", "not HS256"),
        ("RAFTKV_AUTH__TOKEN_TTL", "1s", "outside"),
        ("RAFTKV_AUTH__ARGON2_ITERATIONS", "0", "outside"),
        ("RAFTKV_AUTH__ARGON2_MEMORY_KIB", "4194304", "exhaust"),
        ("RAFTKV_AUTH__ADMIN_USER", "a b", "letters, digits"),
    ] {
        let e = load(&ConfigArgs::default(), env(&[(key, value)]))
            .expect_err(key)
            .to_string();
        let dotted = key
            .trim_start_matches("RAFTKV_")
            .replace("__", ".")
            .to_ascii_lowercase();
        assert!(
            e.contains(&dotted) && e.contains(says),
            "{key}={value}: {e}"
        );
    }
}

#[test]
fn the_seed_compose_environment_starts_a_replicated_node_that_joins_through_the_endpoint_url() {
    // Given the seed's Compose variables for node2 (the full /cluster/join URL),
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__ENABLED", "true"),
            ("RAFTKV_RAFT__NODE_ID", "node2"),
            ("RAFTKV_RAFT__JOIN_ADDR", "http://node1:8080/cluster/join"),
        ]),
    )
    .expect("the seed's variables are a valid configuration");
    // then it joins node1's base URL and does not found.
    assert!(config.raft.enabled);
    assert_eq!(config.raft.join_addr.as_deref(), Some("http://node1:8080"));
    assert!(!config.raft.bootstrap);
    // The base form and a trailing slash mean the same member.
    for given in [
        "http://node1:8080",
        "http://node1:8080/",
        "http://node1:8080/cluster/join/",
    ] {
        let config = load(
            &ConfigArgs::default(),
            env(&[("RAFTKV_RAFT__JOIN_ADDR", given)]),
        )
        .unwrap();
        assert_eq!(
            config.raft.join_addr.as_deref(),
            Some("http://node1:8080"),
            "{given}"
        );
    }
    // And node1's variables found a cluster.
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__ENABLED", "true"),
            ("RAFTKV_RAFT__NODE_ID", "node1"),
            ("RAFTKV_RAFT__BOOTSTRAP", "true"),
        ]),
    )
    .unwrap();
    assert!(config.raft.bootstrap);
}

#[test]
fn raft_enabled_false_is_a_single_node_that_founds_and_never_joins() {
    // Given the seed's single-node switch on a named node, then it founds (founding would
    // otherwise have to be asked for by a named node);
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_RAFT__ENABLED", "false"),
            ("RAFTKV_RAFT__NODE_ID", "solo"),
        ]),
    )
    .unwrap();
    assert!(!config.raft.enabled);
    assert!(config.raft.bootstrap);
    // and it is refused with a cluster to join, or told not to found, saying why.
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_RAFT__ENABLED", "false"),
            ("RAFTKV_RAFT__JOIN_ADDR", "http://node1:8080/cluster/join"),
        ],
    );
    assert!(
        line.contains("raft.join_addr") && line.contains("raft.enabled=false"),
        "{line}"
    );
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_RAFT__ENABLED", "false"),
            ("RAFTKV_RAFT__BOOTSTRAP", "false"),
        ],
    );
    assert!(line.contains("raft.bootstrap"), "{line}");
}

#[test]
fn seed_keys_that_cannot_keep_their_meaning_are_refused_in_one_line_and_the_rest_noted() {
    let dir = tempfile::tempdir().unwrap();
    // Given fsync turned off, in a file or a variable, then the node refuses to start, naming
    // the key, where it came from and why.
    let path = file(&dir, "seed.yaml", "storage:\n  sync_on_write: false\n");
    let args = ConfigArgs {
        config: Some(path.clone()),
        ..ConfigArgs::default()
    };
    let line = error_line(&args, &[]);
    assert!(
        line.contains("storage.sync_on_write=false")
            && line.contains(&path.display().to_string())
            && line.contains("refused")
            && line.contains("fsync"),
        "{line}"
    );
    for (var, value) in [
        ("RAFTKV_STORAGE__SYNC_ON_WRITE", "false"),
        ("RAFTKV_WAL__BATCH_ENABLED", "no"),
        ("RAFTKV_WAL__COMPACTION_ENABLED", "0"),
    ] {
        let line = error_line(&ConfigArgs::default(), &[(var, value)]);
        assert!(line.contains(var) && line.contains("refused"), "{line}");
    }
    // Given the values that hold anyway, and the seed's cache settings, then the node starts;
    // the cache settings are reported as ignored, with why.
    let path = file(
        &dir,
        "seed-ok.yaml",
        "storage:\n  sync_on_write: true\nwal:\n  batch_enabled: true\n  compaction_enabled: true\ncache:\n  enabled: true\n  max_size: 10000\n  ttl: 1h\n",
    );
    let args = ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    };
    let config = load(&args, env(&[])).expect("the seed's values that hold are accepted");
    assert_eq!(
        config.ignored_seed_keys.len(),
        3,
        "{:?}",
        config.ignored_seed_keys
    );
    assert!(
        config
            .ignored_seed_keys
            .iter()
            .all(|note| note.starts_with("cache.") && note.contains("in memory")),
        "{:?}",
        config.ignored_seed_keys
    );
    // A key that is neither ours nor the seed's is still a typo.
    let line = error_line(&ConfigArgs::default(), &[("RAFTKV_CACHE__MAX_SIZ", "1")]);
    assert!(line.contains("unknown key cache.max_siz"), "{line}");
}

#[test]
fn an_address_on_every_interface_is_bound_as_is_and_advertised_under_the_host_name() {
    // Given the seed's ":8080" and a raft address on 0.0.0.0, with an advertised host,
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_SERVER__HTTP_ADDR", ":8080"),
            ("RAFTKV_RAFT__RAFT_ADDR", "0.0.0.0:7000"),
            ("RAFTKV_SERVER__ADVERTISE_HOST", "node1"),
        ]),
    )
    .unwrap();
    // then every interface is bound, and peers and clients are told node1.
    assert_eq!(config.http_bind_addr(), "0.0.0.0:8080");
    assert_eq!(config.http_advertised_addr(), "node1:8080");
    assert_eq!(config.raft_bind_addr(), "0.0.0.0:7000");
    assert_eq!(config.raft_advertised_addr(), "node1:7000");
    assert_eq!(config.grpc_bind_addr(), "0.0.0.0:9090");
    assert_eq!(config.grpc_advertised_addr(), "node1:9090");
    // Given no advertised host, then it is the machine's host name;
    let config = load(
        &ConfigArgs::default(),
        env(&[("RAFTKV_SERVER__HTTP_ADDR", "[::]:8080")]),
    )
    .unwrap();
    let host = api::config::host_name().expect("this machine has a host name");
    assert_eq!(config.http_advertised_addr(), format!("{host}:8080"));
    // and a specific address is bound and advertised as given, whatever advertise_host says.
    let config = load(
        &ConfigArgs::default(),
        env(&[
            ("RAFTKV_SERVER__HTTP_ADDR", "10.0.0.5:8080"),
            ("RAFTKV_SERVER__ADVERTISE_HOST", "node1"),
        ]),
    )
    .unwrap();
    assert_eq!(config.http_bind_addr(), "10.0.0.5:8080");
    assert_eq!(config.http_advertised_addr(), "10.0.0.5:8080");
    // IPv6: `::` without brackets binds every IPv6 interface, and an IPv6 advertised host is
    // bracketed (with or without brackets as given), or peers would read its colons as a port.
    for given in ["fd00::1", "[fd00::1]"] {
        let config = load(
            &ConfigArgs::default(),
            env(&[
                ("RAFTKV_SERVER__HTTP_ADDR", ":::8080"),
                ("RAFTKV_SERVER__ADVERTISE_HOST", given),
            ]),
        )
        .unwrap();
        assert_eq!(config.http_bind_addr(), "[::]:8080");
        assert_eq!(config.http_advertised_addr(), "[fd00::1]:8080", "{given}");
    }
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_SERVER__HTTP_ADDR", ":8080"),
            ("RAFTKV_SERVER__ADVERTISE_HOST", "node1:8080"),
        ],
    );
    assert!(line.contains("without a port"), "{line}");
    // An advertised host nobody can reach is refused.
    let line = error_line(
        &ConfigArgs::default(),
        &[
            ("RAFTKV_SERVER__HTTP_ADDR", ":8080"),
            ("RAFTKV_SERVER__ADVERTISE_HOST", "0.0.0.0"),
        ],
    );
    assert!(line.contains("server.advertise_host"), "{line}");
    let line = error_line(
        &ConfigArgs::default(),
        &[("RAFTKV_SERVER__ADVERTISE_HOST", "node 1")],
    );
    assert!(line.contains("server.advertise_host"), "{line}");
}

#[test]
fn the_per_node_files_make_a_three_node_cluster_on_one_machine() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    let load_node = |n: u32| {
        let args = ConfigArgs {
            config: Some(root.join(format!("node{n}.yaml"))),
            ..ConfigArgs::default()
        };
        load(&args, env(&[])).unwrap_or_else(|e| panic!("node{n}.yaml: {e}"))
    };
    let nodes: Vec<Config> = (1..=3).map(load_node).collect();
    // node1 founds; node2 and node3 join it at node1's HTTP address.
    assert!(nodes[0].raft.bootstrap && nodes[0].raft.join_addr.is_none());
    for node in &nodes[1..] {
        assert!(!node.raft.bootstrap);
        assert_eq!(
            node.raft.join_addr.as_deref(),
            Some(format!("http://{}", nodes[0].server.http_addr).as_str())
        );
    }
    // No two nodes share a name, a port or a data directory.
    let mut seen = std::collections::HashSet::new();
    for node in &nodes {
        for item in [
            node.raft.node_id.clone(),
            node.raft_bind_addr(),
            node.http_bind_addr(),
            node.grpc_bind_addr(),
            node.storage.data_dir.display().to_string(),
        ] {
            assert!(seen.insert(item.clone()), "{item} is used twice");
        }
    }
}
