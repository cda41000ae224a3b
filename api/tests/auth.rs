//! Authentication and authorization against real `raftkv` processes, over REST and gRPC: a
//! cluster founded with authentication on (the joiners log in to join), the permission matrix
//! role by role, every kind of refused credential, a token from one node used on another and
//! across a leader change and a restart, a password change that revokes tokens, API-key
//! revocation, prefix-limited roles, authentication turned on at run time, and `kvcli`'s login
//! with its kept token.

mod common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::{Proc, http_with, runtime, wait_until};
use proto::pb::{self, auth_client::AuthClient, kv_client::KvClient};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN_PASSWORD: &str = "founding-admin-pw";

/// Authentication on from the start, with the first admin's password in a file, and a cheap
/// argon2 cost so that the tests' many logins stay fast (the cost is not what is tested).
fn auth_flags(root: &Path) -> Vec<String> {
    let file = root.join("admin-password");
    std::fs::write(&file, format!("{ADMIN_PASSWORD}\n")).expect("write the password file");
    let mut flags: Vec<String> = cheap_hashing().iter().map(|s| s.to_string()).collect();
    flags.extend([
        "--set".into(),
        "auth.enabled=true".into(),
        "--set".into(),
        format!("auth.admin_password_file={}", file.display()),
    ]);
    flags
}

fn cheap_hashing() -> [&'static str; 4] {
    [
        "--set",
        "auth.argon2_memory_kib=1024",
        "--set",
        "auth.argon2_iterations=1",
    ]
}

/// A request with a credential header line (`""` for none); the status and the body.
fn call(p: &Proc, method: &str, path: &str, credential: &str, body: &str) -> (u16, String) {
    http_with(&p.http, method, path, credential, body.as_bytes())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn api_key(key: &str) -> String {
    format!("X-API-Key: {key}\r\n")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Logs in at `p`; the token.
fn login(p: &Proc, user: &str, password: &str) -> String {
    let (status, body) = call(
        p,
        "POST",
        "/auth/login",
        "",
        &json!({"username": user, "password": password}).to_string(),
    );
    assert_eq!(status, 200, "login of {user} at {}: {body}", p.name);
    json_of(&body)["token"]
        .as_str()
        .expect("a token")
        .to_string()
}

fn code_of(body: &str) -> String {
    json_of(body)["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A token signed with HS256 under `key` with these claims (for forgeries).
fn forge(header: &str, claims: &Value, key: &[u8]) -> String {
    use sha2::Digest;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(input.as_bytes())
        .finalize();
    let mac = sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// The index of the node that says it leads, asked with `credential`.
fn leader_of(nodes: &[&Proc], credential: &str) -> Option<usize> {
    nodes.iter().position(|n| {
        n.child.is_some() && {
            let (status, body) = call(n, "GET", "/cluster/leader", credential, "");
            status == 200 && body.contains(&format!("\"id\":\"{}\"", n.name))
        }
    })
}

/// Three nodes with authentication founded at start: n1 founds, n2 and n3 log in to join.
fn secured_cluster(root: &Path) -> (Proc, Proc, Proc, String) {
    let flags = auth_flags(root);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root, None, &flags);
    wait_until("authentication is founded on n1", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
            && call(
                &n1,
                "POST",
                "/auth/login",
                "",
                &json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string(),
            )
            .0 == 200
    });
    let n2 = Proc::new("n2", root, Some(&n1), &flags);
    let n3 = Proc::new("n3", root, Some(&n1), &flags);
    let token = login(&n1, "admin", ADMIN_PASSWORD);
    wait_until("three voters", || {
        let (_, body) = call(&n1, "GET", "/cluster/nodes", &bearer(&token), "");
        body.matches("\"role\":\"follower\"").count() == 2
    });
    wait_until("all ready", || {
        [&n1, &n2, &n3].iter().all(|n| n.get("/ready").0 == 200)
    });
    (n1, n2, n3, token)
}

#[test]
fn a_cluster_founded_with_auth_guards_every_route_by_role() {
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3, admin) = secured_cluster(root.path());
    let admin_h = bearer(&admin);

    // Given no credential: only health, readiness, login and the auth status are open.
    for n in [&n1, &n2, &n3] {
        assert_eq!(n.get("/health").0, 200);
        assert_eq!(n.get("/ready").0, 200);
        let (status, body) = n.get("/keys/k");
        assert_eq!((status, code_of(&body).as_str()), (401, "unauthenticated"));
        assert_eq!(json_of(&n.get("/auth/status").1)["enabled"], true);
    }

    // Given users of each built-in role, a prefix-limited role and an API key holding it,
    // all made through n1.
    for (user, role) in [("rita", "read"), ("walt", "write"), ("ada", "admin")] {
        let body = json!({"username": user, "password": format!("{user}-password"), "role": role});
        let (status, answer) = call(&n1, "POST", "/auth/users", &admin_h, &body.to_string());
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = call(
        &n1,
        "PUT",
        "/auth/roles/app",
        &admin_h,
        r#"{"permission":"write","prefixes":["app/"]}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &n2,
        "POST",
        "/auth/apikeys",
        &admin_h,
        r#"{"name":"deployer","role":"app"}"#,
    );
    assert_eq!(status, 200, "an API key made through a follower: {answer}");
    let created = json_of(&answer);
    let key = created["key"].as_str().expect("the key").to_string();
    assert!(
        key.starts_with("ak_") && key.len() >= 3 + 16 + 1 + 43,
        "{key}"
    );

    // Tokens are taken on nodes other than the one that issued them.
    let rita = bearer(&login(&n2, "rita", "rita-password"));
    let walt = bearer(&login(&n3, "walt", "walt-password"));
    let ada = bearer(&login(&n1, "ada", "ada-password"));
    let app = api_key(&key);
    assert_eq!(call(&n3, "PUT", "/keys/app/seed", &walt, "1").0, 200);

    // Then each route answers each role as the matrix says (on a follower, so that writes are
    // forwarded with the caller's credential and checked again by the leader).
    let n = leader_of(&[&n1, &n2, &n3], &admin_h).expect("a leader");
    let follower = [&n1, &n2, &n3][(n + 1) % 3];
    let routes: [(&str, &str, &str); 9] = [
        ("GET", "/keys/app/seed", ""),
        ("PUT", "/keys/app/x", "v"),
        ("PUT", "/keys/other", "v"),
        ("GET", "/keys?prefix=app/", ""),
        ("GET", "/keys", ""),
        ("DELETE", "/keys?prefix=app/x", ""),
        ("POST", "/sessions", ""),
        ("GET", "/cluster/nodes", ""),
        ("GET", "/auth/users", ""),
    ];
    let matrix: [(&str, &str, [u16; 9]); 5] = [
        ("none", "", [401; 9]),
        ("read", &rita, [200, 403, 403, 200, 200, 403, 403, 200, 403]),
        (
            "write",
            &walt,
            [200, 200, 200, 200, 200, 200, 200, 200, 403],
        ),
        ("admin", &ada, [200; 9]),
        (
            "app key",
            &app,
            [200, 200, 403, 200, 403, 200, 200, 200, 403],
        ),
    ];
    for (who, credential, expected) in matrix {
        for ((method, path, body), want) in routes.iter().zip(expected) {
            let (status, answer) = call(follower, method, path, credential, body);
            assert_eq!(status, want, "{who}: {method} {path}: {answer}");
            if want == 403 {
                assert_eq!(code_of(&answer), "permission_denied", "{answer}");
            }
        }
    }
    // Snapshots, membership and leadership are the admin's.
    for credential in [&rita, &walt, &app] {
        assert_eq!(call(&n1, "POST", "/admin/snapshot", credential, "").0, 403);
        let body = r#"{"node_id":"n3"}"#;
        assert_eq!(
            call(&n1, "POST", "/cluster/remove", credential, body).0,
            403
        );
    }
    assert_eq!(call(&n1, "POST", "/admin/snapshot", &ada, "").0, 200);

    // Every kind of bad credential is refused with 401.
    let secret_less = URL_SAFE_NO_PAD.encode("x");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({"sub": "ada", "iss": "raftkv", "aud": "raftkv", "iat": now,
        "nbf": now, "exp": now + 600, "generation": 1});
    // One character of the signature changed (not its last, whose low bits are padding).
    let tampered = {
        let mut t: Vec<char> = admin.chars().collect();
        let at = t.len() - 10;
        t[at] = if t[at] == 'A' { 'B' } else { 'A' };
        t.into_iter().collect::<String>()
    };
    let bad = [
        ("a made-up token", bearer("abc.def.ghi")),
        ("a tampered signature", bearer(&tampered)),
        (
            "alg none",
            bearer(&format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )),
        ),
        (
            "signed with another key",
            bearer(&forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, &[1; 32])),
        ),
        (
            "a token of another scheme",
            "Authorization: Basic YWRhOmFkYQ==\r\n".into(),
        ),
        (
            "an unknown API key",
            api_key(&format!("ak_0123456789abcdef_{secret_less}")),
        ),
        (
            "both a token and a key",
            format!("{}{}", bearer(&admin), api_key(&key)),
        ),
    ];
    for (what, credential) in bad {
        let (status, answer) = call(&n2, "GET", "/keys/app/seed", &credential, "");
        assert_eq!(
            (status, code_of(&answer).as_str()),
            (401, "unauthenticated"),
            "{what}: {answer}"
        );
    }
    let (status, answer) = call(
        &n1,
        "POST",
        "/auth/login",
        "",
        r#"{"username":"ada","password":"wrong-password"}"#,
    );
    assert_eq!(
        (status, code_of(&answer).as_str()),
        (401, "unauthenticated")
    );

    // A password change revokes the user's tokens on every node; the new password works.
    let (status, answer) = call(
        &n2,
        "PUT",
        "/auth/users/walt/password",
        &walt,
        r#"{"password":"walt-second-password"}"#,
    );
    assert_eq!(status, 200, "a user changes their own password: {answer}");
    for n in [&n1, &n2, &n3] {
        wait_until("the old token is refused everywhere", || {
            call(n, "GET", "/keys/app/seed", &walt, "").0 == 401
        });
    }
    let walt = bearer(&login(&n1, "walt", "walt-second-password"));
    assert_eq!(call(&n3, "GET", "/keys/app/seed", &walt, "").0, 200);
    assert_eq!(
        call(
            &n1,
            "PUT",
            "/auth/users/ada/password",
            &walt,
            r#"{"password":"taken-over-pw"}"#
        )
        .0,
        403,
        "only ada or an admin changes ada's password"
    );

    // A revoked API key is refused on every node.
    let id = created["id"].as_str().expect("an id");
    let (status, answer) = call(&n3, "DELETE", &format!("/auth/apikeys/{id}"), &ada, "");
    assert_eq!(status, 200, "{answer}");
    for n in [&n1, &n2, &n3] {
        wait_until("the revoked key is refused everywhere", || {
            call(n, "GET", "/keys/app/seed", &app, "").0 == 401
        });
    }
    let (_, listed) = call(&n1, "GET", "/auth/apikeys", &ada, "");
    assert!(!listed.contains(id), "{listed}");
    assert!(
        !listed.contains(&key),
        "a listing never shows a secret: {listed}"
    );
}

#[test]
fn tokens_and_keys_survive_a_leader_change_and_a_restart() {
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3, admin) = secured_cluster(root.path());
    let admin_h = bearer(&admin);
    let (_, answer) = call(
        &n1,
        "POST",
        "/auth/apikeys",
        &admin_h,
        r#"{"name":"svc","role":"write"}"#,
    );
    let key = api_key(json_of(&answer)["key"].as_str().expect("a key"));
    assert_eq!(call(&n2, "PUT", "/keys/before", &key, "1").0, 200);
    // A snapshot on every node, so that the restart below reads the records back from it.
    for n in [&n1, &n2, &n3] {
        assert_eq!(call(n, "POST", "/admin/snapshot", &admin_h, "").0, 200);
    }

    // When the leader is killed and another takes over,
    let mut nodes = [n1, n2, n3];
    let old = leader_of(&[&nodes[0], &nodes[1], &nodes[2]], &admin_h).expect("a leader");
    nodes[old].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    wait_until("a new leader", || {
        leader_of(&[&nodes[survivors[0]], &nodes[survivors[1]]], &admin_h).is_some()
    });
    // then the token and the key from before work on the survivors,
    for &i in &survivors {
        let n = &nodes[i];
        wait_until("the survivors serve the admin's token", || {
            call(n, "PUT", &format!("/keys/after-{i}"), &admin_h, "2").0 == 200
        });
        assert_eq!(call(n, "GET", "/keys/before", &key, "").0, 200);
    }
    // and on the old leader once it is back, restarted from its snapshot and log.
    nodes[old].start();
    let back = &nodes[old];
    wait_until("the old leader is back", || back.get("/ready").0 == 200);
    wait_until("it serves the token from before", || {
        call(back, "GET", "/keys/before", &admin_h, "").0 == 200
    });
    assert_eq!(call(back, "GET", "/keys/before", &key, "").0, 200);
    assert_eq!(call(back, "GET", "/keys/before", "", "").0, 401);
}

#[test]
fn a_node_told_to_found_auth_without_a_password_refuses_to_start() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut p = Proc::configure(
        "n1",
        root.path(),
        None,
        &["--bootstrap", "--set", "auth.enabled=true"],
    );
    let log = p.start_expecting_refusal();
    assert!(log.contains("RaftKV has no default password"), "{log}");
    assert!(!p.dir.exists(), "nothing was written: {}", p.dir.display());

    // A joiner whose admin password is wrong is refused at start, saying why.
    let flags = auth_flags(root.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("founder", root.path(), None, &flags);
    wait_until("auth founded", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
    });
    let wrong = root.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let mut joiner = Proc::configure(
        "joiner",
        root.path(),
        Some(format!("http://{}", n1.http)),
        &[
            "--set",
            "auth.enabled=true",
            "--set",
            &format!("auth.admin_password_file={}", wrong.display()),
        ],
    );
    let log = joiner.start_expecting_refusal();
    assert!(
        log.contains("logging in as admin failed") && log.contains("wrong username or password"),
        "{log}"
    );
}

async fn grpc_channel(p: &Proc) -> Channel {
    Channel::from_shared(format!("http://{}", p.grpc))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect")
}

fn with_token<M>(message: M, token: &str) -> Request<M> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII"),
    );
    request
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        consistency: 0,
    }
}

fn put(key: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        condition: None,
        session: None,
    }
}

#[test]
fn auth_turned_on_at_run_time_over_grpc_guards_both_apis() {
    let root = tempfile::tempdir().expect("temp dir");
    let n1 = Proc::new("n1", root.path(), None, &cheap_hashing());
    wait_until("n1 ready", || n1.get("/ready").0 == 200);
    runtime().block_on(async {
        let mut auth = AuthClient::new(grpc_channel(&n1).await);
        let mut kv = KvClient::new(grpc_channel(&n1).await);
        // Given a running cluster without authentication: enabling it needs an admin first.
        let refused = auth
            .enable(pb::AuthEnableRequest {})
            .await
            .expect_err("no admin yet");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        for (user, role) in [("root", "admin"), ("reader", "read")] {
            auth.user_add(pb::UserAddRequest {
                username: user.into(),
                password: format!("{user}-password"),
                role: role.into(),
            })
            .await
            .expect("users are made while authentication is off");
        }
        let on = auth
            .enable(pb::AuthEnableRequest {})
            .await
            .expect("enabled");
        assert!(on.into_inner().enabled);

        // Then a call without a credential is UNAUTHENTICATED, over gRPC and REST alike,
        let refused = kv.get(get("k")).await.expect_err("no credential");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(n1.get("/keys/k").0, 401);
        // a token from the gRPC login works over both,
        let login = |user: &str| pb::LoginRequest {
            username: user.into(),
            password: format!("{user}-password"),
        };
        let root_token = auth
            .login(login("root"))
            .await
            .expect("login")
            .into_inner()
            .token;
        kv.put(with_token(put("k"), &root_token))
            .await
            .expect("the admin writes");
        assert_eq!(call(&n1, "GET", "/keys/k", &bearer(&root_token), "").0, 200);
        // a read-only user is PERMISSION_DENIED on a write,
        let reader = auth
            .login(login("reader"))
            .await
            .expect("login")
            .into_inner()
            .token;
        kv.get(with_token(get("k"), &reader))
            .await
            .expect("a reader reads");
        let denied = kv
            .put(with_token(put("k"), &reader))
            .await
            .expect_err("a reader does not write");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = auth
            .user_list(with_token(pb::UserListRequest {}, &reader))
            .await
            .expect_err("a reader does not list users");
        assert_eq!(denied.code(), Code::PermissionDenied);
        // and an API key made over gRPC authenticates over REST.
        let made = auth
            .api_key_add(with_token(
                pb::ApiKeyAddRequest {
                    name: "ci".into(),
                    role: "read".into(),
                },
                &root_token,
            ))
            .await
            .expect("a key")
            .into_inner();
        assert_eq!(call(&n1, "GET", "/keys/k", &api_key(&made.key), "").0, 200);
        let users = auth
            .user_list(with_token(pb::UserListRequest {}, &root_token))
            .await
            .expect("listed")
            .into_inner()
            .users;
        assert_eq!(users.len(), 2);

        // When it is turned off again, the calls need no credential.
        auth.disable(with_token(pb::AuthDisableRequest {}, &root_token))
            .await
            .expect("disabled");
        kv.get(get("k")).await.expect("open again");
    });
}

use common::kvcli_with_stdin as kvcli;

#[test]
fn kvcli_logs_in_keeps_its_token_private_and_manages_users_and_keys() {
    let root = tempfile::tempdir().expect("temp dir");
    let flags = auth_flags(root.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root.path(), None, &flags);
    wait_until("auth founded", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
    });
    let endpoint = format!("http://{}", n1.http);
    let token_file = root.path().join("kvcli").join("token");
    let tf = token_file.to_str().expect("UTF-8 path");
    let base = ["--endpoints", &endpoint, "--token-file", tf];
    let with =
        |more: &[&str]| -> Vec<String> { base.iter().chain(more).map(|s| s.to_string()).collect() };
    let run = |more: &[&str], stdin: &str| {
        let args = with(more);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kvcli(&args, stdin)
    };

    // Given no credential, a command fails with exit code 6.
    let (_, code) = run(&["get", "k"], "");
    assert_eq!(code, cli::command::EXIT_AUTH);
    // When the admin logs in with the password on stdin, the token is kept, 0600,
    let (out, code) = run(&["auth", "login", "admin"], &format!("{ADMIN_PASSWORD}\n"));
    assert_eq!(code, 0, "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("kept")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // and later commands use it: users, roles and keys are managed,
    assert_eq!(run(&["put", "k", "v"], "").1, 0);
    let (out, code) = run(
        &["auth", "user", "add", "bob", "--role", "read"],
        "bob-password\n",
    );
    assert_eq!(code, 0, "{out}");
    let (out, code) = run(
        &[
            "auth",
            "role",
            "put",
            "logs",
            "--permission",
            "write",
            "--prefix",
            "logs/",
        ],
        "",
    );
    assert_eq!(
        (code, out.trim()),
        (0, "role logs: write on keys under logs/")
    );
    let (out, code) = run(
        &[
            "--json", "auth", "apikey", "add", "shipper", "--role", "logs",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let key = json_of(&out)["key"].as_str().expect("a key").to_string();
    let (out, _) = run(&["auth", "user", "list"], "");
    assert!(out.contains("bob") && out.contains("admin"), "{out}");
    // an API key given on the command line wins over the kept token and is held to its role,
    let (_, code) = run(&["--api-key", &key, "put", "logs/1", "x"], "");
    assert_eq!(code, 0);
    let (_, code) = run(&["--api-key", &key, "put", "k", "x"], "");
    assert_eq!(code, cli::command::EXIT_AUTH, "outside the key's prefix");
    // and over gRPC too.
    let grpc = format!("grpc://{}", n1.grpc);
    let (out, code) = kvcli(
        &[
            "--endpoints",
            &grpc,
            "--api-key",
            &key,
            "put",
            "logs/2",
            "y",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    // Logging out forgets the token.
    assert_eq!(run(&["auth", "logout"], "").1, 0);
    assert!(!token_file.exists());
    assert_eq!(run(&["get", "k"], "").1, cli::command::EXIT_AUTH);
}

#[test]
fn request_rates_and_failed_logins_are_limited_per_client() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut flags: Vec<String> = auth_flags(root.path());
    flags.extend(
        [
            "--set",
            "performance.enable_rate_limit=true",
            "--set",
            "performance.rate_limit_per_second=2",
            "--set",
            "performance.rate_limit_burst=5",
            "--set",
            "auth.failed_logins_per_user=3",
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root.path(), None, &flags);
    wait_until("auth founded", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
    });
    let admin = bearer(&login(&n1, "admin", ADMIN_PASSWORD));
    let body = r#"{"username":"other","password":"other-password","role":"read"}"#;
    assert_eq!(call(&n1, "POST", "/auth/users", &admin, body).0, 200);
    let other = bearer(&login(&n1, "other", "other-password"));

    // Given a burst of 5 and 2 a second: a quick run of requests goes over, and the refusal
    // says when to come back, in a header and in the body.
    let statuses: Vec<u16> = (0..12)
        .map(|_| call(&n1, "GET", "/keys/k", &admin, "").0)
        .collect();
    assert!(
        statuses.contains(&404),
        "the first ones are served: {statuses:?}"
    );
    let (status, head, body) = common::http_full(&n1.http, "GET", "/keys/k", &admin, b"");
    assert_eq!(
        (status, code_of(&body).as_str()),
        (429, "rate_limited"),
        "{body}"
    );
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(json_of(&body)["retry_after_seconds"], 1);
    // Another principal has its own allowance, and probes are never limited.
    assert_eq!(call(&n1, "GET", "/keys/k", &other, "").0, 404);
    for _ in 0..10 {
        assert_eq!(n1.get("/health").0, 200);
    }
    // The same principal over gRPC draws from the same allowance.
    let token = admin
        .trim_start_matches("Authorization: Bearer ")
        .trim_end()
        .to_string();
    runtime().block_on(async {
        let mut kv = KvClient::new(grpc_channel(&n1).await);
        let mut refused = None;
        for _ in 0..10 {
            if let Err(status) = kv.get(with_token(get("k"), &token)).await
                && status.code() == Code::ResourceExhausted
            {
                refused = Some(status);
                break;
            }
        }
        let refused = refused.expect("over its rate over gRPC as well");
        assert!(refused.message().contains("request rate"), "{refused:?}");
    });

    // Failed logins: after 3 wrong passwords for a user, even the right one is refused for a
    // while, without being checked; other users log in from the same address.
    let attempt = |user: &str, password: &str| {
        call(
            &n1,
            "POST",
            "/auth/login",
            "",
            &json!({"username": user, "password": password}).to_string(),
        )
    };
    for _ in 0..3 {
        assert_eq!(attempt("other", "wrong-password").0, 401);
    }
    let (status, body) = attempt("other", "other-password");
    assert_eq!(
        (status, code_of(&body).as_str()),
        (429, "rate_limited"),
        "{body}"
    );
    assert!(body.contains("too many failed logins"), "{body}");
    assert_eq!(attempt("admin", ADMIN_PASSWORD).0, 200);

    // Guesses sent all at once get no more than the allowance: each takes its share before
    // its password is checked.
    let body = r#"{"username":"third","password":"third-password","role":"read"}"#;
    wait_until("the admin is under its rate again and adds a user", || {
        call(&n1, "POST", "/auth/users", &admin, body).0 == 200
    });
    let guesses: Vec<std::thread::JoinHandle<u16>> = (0..10)
        .map(|i| {
            let addr = n1.http.clone();
            std::thread::spawn(move || {
                let body = json!({"username": "third", "password": format!("guess-{i}-pw")});
                http_with(
                    &addr,
                    "POST",
                    "/auth/login",
                    "",
                    body.to_string().as_bytes(),
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses
        .into_iter()
        .map(|g| g.join().expect("a guess"))
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 3 && statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

#[test]
fn every_kind_of_bad_token_is_refused_by_a_running_node_over_rest_and_grpc() {
    // Given a node whose signing secret the test knows, so that it can forge tokens the node
    // would otherwise accept,
    let root = tempfile::tempdir().expect("temp dir");
    let secret = "a-secret-the-test-knows-0123456789abcdef";
    let mut flags = auth_flags(root.path());
    flags.extend(["--set".to_string(), format!("auth.jwt_secret={secret}")]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root.path(), None, &flags);
    wait_until("auth founded", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
    });
    let real = login(&n1, "admin", ADMIN_PASSWORD);
    let payload = real.split('.').nth(1).expect("a JWT has three parts");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url claims"))
            .expect("JSON claims");
    let now = claims["iat"].as_i64().expect("iat");
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let key = secret.as_bytes();
    // A forged token with the real claims is accepted: the forgeries below differ in one way.
    let control = forge(hs256, &claims, key);
    assert_eq!(call(&n1, "GET", "/keys/k", &bearer(&control), "").0, 404);
    let bad = [
        (
            "expired",
            forge(hs256, &with("exp", (now - 120).into()), key),
        ),
        (
            "not yet valid",
            forge(hs256, &with("nbf", (now + 600).into()), key),
        ),
        (
            "another issuer",
            forge(hs256, &with("iss", "someone".into()), key),
        ),
        (
            "another audience",
            forge(hs256, &with("aud", "other".into()), key),
        ),
        (
            "an old password",
            forge(hs256, &with("generation", 1.into()), key),
        ),
        (
            "another user",
            forge(hs256, &with("sub", "nobody".into()), key),
        ),
        (
            "another key",
            forge(hs256, &claims, b"not-the-secret-0123456789abcdef!!"),
        ),
        (
            "algorithm none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            ),
        ),
        (
            "RS256 in the header (algorithm confusion)",
            forge(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, key),
        ),
    ];
    runtime().block_on(async {
        let mut kv = KvClient::new(grpc_channel(&n1).await);
        for (what, token) in &bad {
            let (status, body) = call(&n1, "GET", "/keys/k", &bearer(token), "");
            assert_eq!(
                (status, code_of(&body).as_str()),
                (401, "unauthenticated"),
                "{what}: {body}"
            );
            let refused = kv.get(with_token(get("k"), token)).await.expect_err(what);
            assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
        }
    });
}

/// `message` carrying `credential` in its metadata: a token, or an API key (`ak_...`).
fn with<M>(credential: &str, message: M) -> Request<M> {
    let (name, value) = if credential.starts_with("ak_") {
        ("x-api-key", credential.to_string())
    } else {
        ("authorization", format!("Bearer {credential}"))
    };
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(name, value.parse().expect("ASCII"));
    request
}

#[test]
fn the_permission_matrix_holds_over_grpc_role_by_role() {
    use proto::pb::{cluster_client::ClusterClient, maintenance_client::MaintenanceClient};
    let root = tempfile::tempdir().expect("temp dir");
    let flags = auth_flags(root.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root.path(), None, &flags);
    wait_until("auth founded", || {
        call(&n1, "GET", "/auth/status", "", "").1.contains("true")
    });
    let admin = login(&n1, "admin", ADMIN_PASSWORD);
    runtime().block_on(async {
        let channel = grpc_channel(&n1).await;
        let mut auth = AuthClient::new(channel.clone());
        // Given a user of each built-in role and a key of a role limited to `app/`,
        for (user, role) in [("rita", "read"), ("walt", "write"), ("ada", "admin")] {
            auth.user_add(with_token(
                pb::UserAddRequest {
                    username: user.into(),
                    password: format!("{user}-password"),
                    role: role.into(),
                },
                &admin,
            ))
            .await
            .expect("a user");
        }
        auth.role_put(with_token(
            pb::RolePutRequest {
                name: "app".into(),
                permission: "write".into(),
                prefixes: vec![Bytes::from_static(b"app/")],
            },
            &admin,
        ))
        .await
        .expect("a role");
        let key = auth
            .api_key_add(with_token(
                pb::ApiKeyAddRequest {
                    name: "svc".into(),
                    role: "app".into(),
                },
                &admin,
            ))
            .await
            .expect("a key")
            .into_inner()
            .key;
        let token = |user: &str| {
            let password = format!("{user}-password");
            let mut auth = auth.clone();
            let user = user.to_string();
            async move {
                auth.login(pb::LoginRequest {
                    username: user,
                    password,
                })
                .await
                .expect("login")
                .into_inner()
                .token
            }
        };
        let (rita, walt, ada) = (token("rita").await, token("walt").await, token("ada").await);
        let mut kv = KvClient::new(channel.clone());
        kv.put(with(&ada, put("app/seed"))).await.expect("seeded");

        // Then each method answers each caller as the matrix says: Ok, or PERMISSION_DENIED.
        // Methods: get app/seed, put app/x, put other, list app/, list all, delete prefix
        // app/x, register a session, cluster nodes, list users, snapshot.
        let matrix: [(&str, &str, [bool; 10]); 4] = [
            (
                "read",
                &rita,
                [
                    true, false, false, true, true, false, false, true, false, false,
                ],
            ),
            (
                "write",
                &walt,
                [true, true, true, true, true, true, true, true, false, false],
            ),
            ("admin", &ada, [true; 10]),
            (
                "app key",
                &key,
                [
                    true, true, false, true, false, true, true, true, false, false,
                ],
            ),
        ];
        for (who, credential, expected) in matrix {
            let list = |prefix: &'static [u8]| pb::ListRequest {
                prefix: Bytes::from_static(prefix),
                after: Bytes::new(),
                limit: 10,
                consistency: 0,
            };
            let outcomes: [Result<(), tonic::Status>; 10] = [
                kv.get(with(credential, get("app/seed"))).await.map(drop),
                kv.put(with(credential, put("app/x"))).await.map(drop),
                kv.put(with(credential, put("other"))).await.map(drop),
                kv.list(with(credential, list(b"app/"))).await.map(drop),
                kv.list(with(credential, list(b""))).await.map(drop),
                kv.delete_prefix(with(
                    credential,
                    pb::DeletePrefixRequest {
                        prefix: Bytes::from_static(b"app/x"),
                        all: false,
                        session: None,
                    },
                ))
                .await
                .map(drop),
                kv.register_session(with(credential, pb::RegisterSessionRequest {}))
                    .await
                    .map(drop),
                ClusterClient::new(channel.clone())
                    .nodes(with(credential, pb::NodesRequest {}))
                    .await
                    .map(drop),
                auth.clone()
                    .user_list(with(credential, pb::UserListRequest {}))
                    .await
                    .map(drop),
                MaintenanceClient::new(channel.clone())
                    .snapshot(with(credential, pb::SnapshotRequest {}))
                    .await
                    .map(drop),
            ];
            for (i, (outcome, allowed)) in outcomes.into_iter().zip(expected).enumerate() {
                match outcome {
                    Ok(()) => assert!(allowed, "{who}: method {i} should be denied"),
                    Err(status) => {
                        assert!(!allowed, "{who}: method {i}: {status:?}");
                        assert_eq!(status.code(), Code::PermissionDenied, "{who}: method {i}");
                    }
                }
            }
        }
    });
}
