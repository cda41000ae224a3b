//! The Rust SDK (`cli::Client`) and `kvcli` over both protocols against real `raftkv`
//! processes: the same calls give the same answers over `http://` and `grpc://` endpoints,
//! leader discovery finds the leader's gRPC endpoint, refusals are the same typed errors, and a
//! session write survives the loss of the leader over gRPC as it does over REST.

mod common;

use common::{Proc, leader_of, runtime, three_nodes};

use cli::{Client, ClientOptions, Consistency, Error, Precondition};

fn grpc_endpoints(nodes: &[&Proc]) -> Vec<String> {
    nodes.iter().map(|p| format!("grpc://{}", p.grpc)).collect()
}

fn http_endpoints(nodes: &[&Proc]) -> Vec<String> {
    nodes.iter().map(|p| format!("http://{}", p.http)).collect()
}

/// Runs `kvcli ARGS` in-process with nothing on stdin.
fn kvcli(args: &[&str]) -> (String, u8) {
    common::kvcli_with_stdin(args, "")
}

#[test]
fn the_sdk_gives_the_same_answers_over_rest_and_grpc() {
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let nodes = [&n1, &n2, &n3];
    let leader = nodes[leader_of(&nodes).expect("a leader")];
    runtime().block_on(async {
        let grpc = Client::new(grpc_endpoints(&nodes)).expect("a gRPC client");
        let rest = Client::new(http_endpoints(&nodes)).expect("a REST client");
        // Given keys written over gRPC,
        let first = grpc.put("sdk/a", "1").await.expect("put");
        assert_eq!(first.version, 1);
        grpc.put("sdk/b", "2").await.expect("put");
        // then leader discovery found the leader's gRPC endpoint,
        assert_eq!(grpc.known_leader(), Some(format!("grpc://{}", leader.grpc)));
        // and both protocols read the same answers.
        for client in [&grpc, &rest] {
            let kv = client
                .get("sdk/a", Consistency::Linearizable)
                .await
                .expect("get");
            assert_eq!((&kv.value[..], kv.version), (&b"1"[..], 1));
            let json = client
                .get_json("sdk/b", Consistency::Stale)
                .await
                .expect("get json");
            assert_eq!(&json.value[..], b"2");
            assert!(json.stale.is_some(), "a stale read says how stale");
            let page = client.list_page("sdk/", None, Some(1)).await.expect("list");
            assert_eq!((page.kvs.len(), page.more), (1, true));
            assert_eq!(page.next.as_deref(), Some(&b"sdk/a"[..]));
            let rest_of = client
                .list_page("sdk/", page.next.as_deref(), None)
                .await
                .expect("next page");
            assert_eq!((rest_of.kvs.len(), rest_of.more), (1, false));
        }
        // The same refusals, as the same typed errors.
        for client in [&grpc, &rest] {
            let missing = client.get("sdk/none", Consistency::Linearizable).await;
            assert!(
                matches!(missing, Err(Error::NotFound { .. })),
                "{missing:?}"
            );
            let cas = client
                .put_if("sdk/a", "x", Precondition::Version(9))
                .await
                .expect_err("a stale version");
            assert!(
                matches!(cas, Error::CasFailed { current_version: 1 }),
                "{cas:?}"
            );
        }
        // Sessions, prefix deletes and the cluster calls work over gRPC.
        let mut session = grpc.register_session().await.expect("session");
        session.put("sdk/c", "3").await.expect("session put");
        let gone = grpc.delete_prefix("sdk/").await.expect("prefix delete");
        assert_eq!(gone.deleted, 3);
        let members = grpc.nodes().await.expect("nodes");
        assert_eq!(members.len(), 3);
        assert!(members.iter().all(|m| m.grpc_addr.is_some()), "{members:?}");
        assert_eq!(grpc.leader().await.expect("leader").id.0, leader.name);
        assert_eq!(grpc.health().await.expect("health"), "ok");
        assert!(grpc.ready().await.expect("ready").ready);
    });
}

#[test]
fn a_grpc_session_write_survives_the_loss_of_the_leader() {
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let mut nodes = [n1, n2, n3];
    let refs: Vec<&Proc> = nodes.iter().collect();
    let leader = leader_of(&refs).expect("a leader");
    let endpoints = grpc_endpoints(&refs);
    let refs_grpc: Vec<String> = refs.iter().map(|p| p.grpc.clone()).collect();
    let rt = runtime();
    let client = Client::with_options(
        endpoints,
        ClientOptions {
            call_timeout: std::time::Duration::from_secs(20),
            ..ClientOptions::default()
        },
    )
    .expect("a client");
    let mut session = rt.block_on(client.register_session()).expect("session");
    rt.block_on(session.put("before", "1")).expect("put");
    // When the leader dies,
    nodes[leader].kill9();
    // then the next session write finds the new leader and applies once,
    let put = rt
        .block_on(session.put("after", "2"))
        .expect("put after failover");
    assert_eq!(put.version, 1);
    // and a plain write sent first to the dead node's endpoint (endpoints taken in turn, not
    // leader first) counts as never sent (its connection is refused), so it moves on to a
    // live node instead of failing as "outcome unknown".
    let plain = Client::with_options(
        [
            format!("grpc://{}", refs_grpc[leader]),
            format!("grpc://{}", refs_grpc[(leader + 1) % 3]),
        ],
        ClientOptions {
            routing: cli::Routing::Spread,
            ..ClientOptions::default()
        },
    )
    .expect("a client");
    rt.block_on(plain.put("plain", "3"))
        .expect("a refused connection moves on");
    let kv = rt
        .block_on(client.get("after", Consistency::Linearizable))
        .expect("read after failover");
    assert_eq!(&kv.value[..], b"2");
}

#[test]
fn kvcli_speaks_grpc_with_the_grpc_flag_or_grpc_endpoints() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    common::wait_until("solo leads", || common::ready(&node));
    let grpc_url = format!("grpc://{}", node.grpc);
    // A put and a get over gRPC, with the flag and a host:port endpoint,
    let (_, code) = kvcli(&["--grpc", "--endpoints", &node.grpc, "put", "k", "v"]);
    assert_eq!(code, 0);
    let (out, code) = kvcli(&["--endpoints", &grpc_url, "get", "k"]);
    assert_eq!((out.as_str(), code), ("v", 0));
    // the exit codes of the REST client (3: not found, 4: compare-and-swap failed),
    assert_eq!(kvcli(&["--endpoints", &grpc_url, "get", "none"]).1, 3);
    assert_eq!(
        kvcli(&[
            "--endpoints",
            &grpc_url,
            "put",
            "k",
            "w",
            "--prev-version",
            "7"
        ])
        .1,
        4
    );
    // the cluster commands,
    let (out, code) = kvcli(&["--grpc", "--endpoints", &node.grpc, "cluster", "nodes"]);
    assert_eq!(code, 0);
    assert!(out.contains("leader"), "{out}");
    // and a short load run.
    let (out, code) = kvcli(&[
        "--endpoints",
        &grpc_url,
        "bench",
        "--protocol",
        "grpc",
        "--ops",
        "200",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    // With --grpc, a REST URL is a usage error (exit 2).
    let rest_url = format!("http://{}", node.http);
    assert_eq!(
        kvcli(&["--grpc", "--endpoints", &rest_url, "get", "k"]).1,
        2
    );
}
