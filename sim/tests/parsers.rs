//! Every reader refuses malformed input with a clear error that names the line, and never
//! panics. Also: [`Format::sniff`] recognises each format.

use sim::lincheck::formats::{ParseError, parse};
use sim::lincheck::{Format, ModelSpec};

fn error(format: Format, text: &str) -> ParseError {
    match parse(format, text) {
        Ok(loaded) => panic!(
            "{} accepted malformed input {text:?}: {loaded:?}",
            format.name()
        ),
        Err(error) => error,
    }
}

fn assert_error(format: Format, text: &str, line: usize, words: &[&str]) {
    let error = error(format, text);
    assert_eq!(error.line, line, "{}: {error} for {text:?}", format.name());
    for word in words {
        assert!(
            error.message.contains(word),
            "{}: `{error}` lacks `{word}` for {text:?}",
            format.name()
        );
    }
    let shown = error.to_string();
    assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
    assert!(!shown.contains('\n'), "one line: {shown:?}");
}

const INVOKE_PUT: &str =
    r#"{"type":"invoke","process":1,"time":10,"f":"put","key":"a","value":"1"}"#;

#[test]
fn raftkv_rejects_malformed_lines() {
    let f = Format::Raftkv;
    assert_error(f, "not json\n", 1, &["invalid JSON"]);
    assert_error(f, "[1,2]\n", 1, &["JSON object"]);
    assert_error(
        f,
        &format!("{INVOKE_PUT}\n{{\"type\":\"ok\"}}\n"),
        2,
        &["`process`"],
    );
    assert_error(
        f,
        r#"{"type":"invoke","process":-1,"time":1,"f":"get","key":"a"}"#,
        1,
        &["`process`", "non-negative"],
    );
    assert_error(
        f,
        r#"{"type":"invoke","process":1,"time":1,"f":"get","key":"a","value":"x"}"#,
        1,
        &["`value`", "get"],
    );
    assert_error(
        f,
        r#"{"type":"invoke","process":1,"time":1,"f":"incr","key":"a"}"#,
        1,
        &["unknown operation", "incr"],
    );
    assert_error(
        f,
        r#"{"type":"begin","process":1,"time":1,"f":"get","key":"a"}"#,
        1,
        &["unknown type", "begin"],
    );
    assert_error(
        f,
        r#"{"type":"invoke","process":1,"time":1,"f":"cas","key":"a","new":"2"}"#,
        1,
        &["`expected`"],
    );
    assert_error(
        f,
        &format!(
            "{INVOKE_PUT}\n{}\n",
            r#"{"type":"ok","process":1,"time":11,"f":"get","value":"1"}"#
        ),
        2,
        &["get", "put"],
    );
    // A cas completion needs `swapped`; a get's value must be a string or null.
    assert_error(
        f,
        "{\"type\":\"invoke\",\"process\":1,\"time\":1,\"f\":\"cas\",\"key\":\"a\",\"expected\":null,\"new\":\"2\"}\n\
         {\"type\":\"ok\",\"process\":1,\"time\":2}\n",
        2,
        &["`swapped`"],
    );
    assert_error(
        f,
        "{\"type\":\"invoke\",\"process\":1,\"time\":1,\"f\":\"get\",\"key\":\"a\"}\n\
         {\"type\":\"ok\",\"process\":1,\"time\":2,\"value\":5}\n",
        2,
        &["`value`", "string or null"],
    );
    // Pairing errors come from the history, with the line.
    assert_error(
        f,
        r#"{"type":"ok","process":3,"time":1}"#,
        1,
        &["no outstanding invocation"],
    );
    assert_error(
        f,
        &format!(
            "{INVOKE_PUT}\n{}\n",
            r#"{"type":"invoke","process":1,"time":12,"f":"get","key":"a"}"#
        ),
        2,
        &["outstanding"],
    );
    assert_error(
        f,
        &format!(
            "{INVOKE_PUT}\n{}\n",
            r#"{"type":"ok","process":1,"time":9}"#
        ),
        2,
        &["back in time"],
    );
}

#[test]
fn porcupine_etcd_rejects_malformed_lines() {
    let f = Format::PorcupineEtcd;
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nhello\n",
        2,
        &["INFO jepsen.util"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - x\t:invoke\t:read\tnil\n",
        1,
        &["process", "x"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:incr\t1\n",
        1,
        &["unknown operation"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:begin\t:read\tnil\n",
        1,
        &["unknown type"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:cas\t[1]\n",
        1,
        &["[old new]"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:write\t\"s\"\n",
        1,
        &["integer"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:write\t[1 2\n",
        1,
        &["never closed"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:invoke\t:write\t1 2\n",
        1,
        &["exactly one value"],
    );
    assert_error(
        f,
        "INFO  jepsen.util - 0\t:ok\t:write\t1\n",
        1,
        &["no outstanding invocation"],
    );
}

#[test]
fn porcupine_kv_rejects_malformed_lines() {
    let f = Format::PorcupineKv;
    let ok = "{:process 0, :type :invoke, :f :get, :key \"0\", :value nil}\n";
    assert_error(
        f,
        &format!("{ok}{{:type :ok, :f :get}}\n"),
        2,
        &[":process"],
    );
    assert_error(
        f,
        "{:process 0, :type :invoke, :f :incr, :key \"0\", :value nil}",
        1,
        &["unknown operation"],
    );
    assert_error(
        f,
        "{:process 0, :type \"invoke\", :f :get, :key \"0\"}",
        1,
        &[":type", "keyword"],
    );
    assert_error(
        f,
        "{:process 0, :type :invoke, :f :put, :key \"0\", :value nil}",
        1,
        &["needs a value"],
    );
    assert_error(
        f,
        "{:process 0, :type :invoke, :f :get, :key \"0\"",
        1,
        &["never closed"],
    );
    assert_error(
        f,
        "{:process 0, :type :invoke, :f :get, :key \"0 }",
        1,
        &["never closed"],
    );
    assert_error(
        f,
        "{:process 0, :type :invoke, :f :get, :key 1.5}",
        1,
        &["integer"],
    );
}

#[test]
fn knossos_rejects_malformed_histories() {
    let f = Format::Knossos;
    assert_error(f, "", 0, &["empty"]);
    assert_error(f, "; only a comment\n", 0, &["empty"]);
    assert_error(f, "{:process 0}", 1, &["vector or a list"]);
    assert_error(
        f,
        "[{:process 0 :type :invoke :f :read}] []",
        1,
        &["more forms"],
    );
    assert_error(f, "[\n1]", 2, &["operation map"]);
    assert_error(
        f,
        "[{:process \"p\" :type :invoke :f :read}]",
        1,
        &[":process"],
    );
    assert_error(
        f,
        "[\n{:process 1 :type :invoke :f :read}\n{:process 1 :type :ok}]",
        3,
        &[":f"],
    );
    assert_error(
        f,
        "[{:process 1 :type :invoke :f :cas :value [1 2 3]}]",
        1,
        &["[old new]"],
    );
    assert_error(
        f,
        "[{:process 1 :type :invoke :f :lock :value nil}]",
        1,
        &["unknown operation"],
    );
    assert_error(
        f,
        "[{:process 1 :type :invoke :f :txn :value [[:read :x]]}]",
        1,
        &["micro-op"],
    );
    assert_error(
        f,
        "[{:process 1 :type :invoke :f :read :value #{1}}]",
        1,
        &["not supported"],
    );
    assert_error(f, &"[".repeat(100_000), 1, &["nested deeper"]);
    assert_error(
        f,
        "[{:process 1 :type :invoke :f :read :value nil} {:process 1}",
        1,
        &["never closed"],
    );
}

#[test]
fn binary_garbage_is_refused_by_every_reader_without_panicking() {
    let garbage: String = (0u32..2000)
        .map(|i| char::from_u32(i.wrapping_mul(2_654_435_761) % 0x2FF).unwrap_or('?'))
        .collect();
    for format in [
        Format::Raftkv,
        Format::PorcupineKv,
        Format::PorcupineEtcd,
        Format::Knossos,
    ] {
        let _ = error(format, &garbage);
    }
}

#[test]
fn sniffing_recognises_each_format_from_its_first_line() {
    assert_eq!(
        Format::sniff(&format!("\n{INVOKE_PUT}\n")),
        Some(Format::Raftkv)
    );
    assert_eq!(
        Format::sniff("{:process 0, :type :invoke}"),
        Some(Format::PorcupineKv)
    );
    assert_eq!(
        Format::sniff("; comment\n[{:process 0}]"),
        Some(Format::Knossos)
    );
    assert_eq!(Format::sniff("({:process 0})"), Some(Format::Knossos));
    assert_eq!(
        Format::sniff("INFO  jepsen.util - 0 :invoke :read nil"),
        Some(Format::PorcupineEtcd)
    );
    assert_eq!(Format::sniff("hello"), None);
    assert_eq!(Format::sniff(""), None);
}

#[test]
fn each_format_names_the_model_its_source_meant() {
    let model = |format, text: &str| parse(format, text).expect("valid").model;
    assert_eq!(model(Format::Raftkv, ""), ModelSpec::Kv { initial: None });
    assert_eq!(
        model(Format::PorcupineKv, ""),
        ModelSpec::Kv {
            initial: Some(String::new())
        }
    );
    assert_eq!(
        model(Format::PorcupineEtcd, ""),
        ModelSpec::Register { initial: None }
    );
    assert_eq!(
        model(Format::Knossos, "[]"),
        ModelSpec::Register {
            initial: Some("0".into())
        }
    );
}
