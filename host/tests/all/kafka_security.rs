//! The Kafka users run: every codec a producer may use, and TLS and mTLS end to end — the
//! pipeline consuming and committing, its alerts and dead letters produced, `produce` and
//! `consume` — through a real TLS terminator (socat's OpenSSL listener) in front of `stockpipe
//! broker`, which runs in a network namespace of its own so that the address it advertises is the
//! one the client dials (see ../shared/NOTES.md). An untrusted certificate and a missing client
//! certificate each stop the start, naming the cause.
//!
//! Needs root (network namespaces; CI runs as root), Debian's `socat` and `openssl`, and PyPI's
//! `confluent-kafka` (a producer with every codec); `.ci/run` and scripts/test.sh install them.

use crate::support::{last_json_line, workspace};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stockpipe")
}

/// Kills (and reaps) the child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for its first stdout line (`stockpipe broker` prints its address).
fn first_line(mut command: Command) -> (Reaped, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().unwrap();
    let child = Reaped(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

fn run(command: &mut Command) -> Output {
    command
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("runs")
}

/// Produces the sample's ticks into `topic` with `codec` (confluent-kafka: its librdkafka has
/// every codec).
fn produce_with(brokers: &str, codec: &str, topic: &str) {
    let script = r#"
import json, sys
from confluent_kafka import Producer
brokers, codec, path, topic = sys.argv[1:5]
p = Producer({"bootstrap.servers": brokers, "compression.type": codec, "linger.ms": 50})
for t in json.load(open(path)):
    p.produce(topic, json.dumps(t).encode(), key=str(t["instrument_token"]).encode())
assert p.flush(30) == 0, "messages left unsent"
"#;
    let sample = workspace().join("data/stock_data_sample.json");
    let out = Command::new("python3")
        .args(["-c", script, brokers, codec])
        .arg(&sample)
        .arg(topic)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "producing with {codec} (pip install confluent-kafka; scripts/test.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 400 ticks produced with gzip, snappy, lz4 and zstd (100 each, in their own batches) are all
/// consumed, stored and committed; before librdkafka was built with zstd, a zstd topic gave
/// `consumed: 0` and `run --once` never ended.
#[test]
fn every_codec_is_consumed_whole() {
    let (_broker, line) = first_line({
        let mut c = Command::new(bin());
        c.args(["broker", "--partitions", "3"]);
        c
    });
    let brokers = serde_json::from_str::<serde_json::Value>(&line).unwrap()["bootstrap_servers"]
        .as_str()
        .unwrap()
        .to_string();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        produce_with(&brokers, codec, "stock-stream");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(bin())
        .args(["run", "--once", "--brokers", &brokers, "--lake"])
        .arg(dir.path().join("lake")));
    assert!(out.status.success(), "{out:?}");
    let summary = last_json_line(&out);
    assert_eq!(summary["consumed"], 400, "{summary}");
    assert_eq!(summary["accepted"], 400, "{summary}");
    assert_eq!(crate::support::committed_total(&summary), 400, "{summary}");
    assert_eq!(
        crate::support::lake_documents(&dir.path().join("lake")).len(),
        400
    );
}

/// Test certificates: a CA, the broker's (for 127.0.0.1), a client's, and a CA nobody trusts.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for (ca, name) in [("ca", "test CA"), ("other", "a CA nobody trusts")] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-subj",
            &format!("/CN={name}"),
        ]);
    }
    for (who, ext) in [("server", Some("san.ext")), ("client", None)] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN=stockpipe {who}"),
        ]);
        let mut sign = vec![
            "x509".to_string(),
            "-req".into(),
            "-days".into(),
            "2".into(),
            "-in".into(),
            format!("{who}.csr"),
            "-CA".into(),
            "ca.pem".into(),
            "-CAkey".into(),
            "ca.key".into(),
            "-CAcreateserial".into(),
            "-out".into(),
            format!("{who}.pem"),
        ];
        if let Some(ext) = ext {
            sign.extend(["-extfile".to_string(), ext.to_string()]);
        }
        openssl(&sign.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// `stockpipe broker` in a network namespace of its own, reached through socat's TLS listener
/// on the port it advertises (mTLS: client certificates required, signed by the test CA).
struct TlsBroker {
    namespace: String,
    port: u16,
    _children: Vec<Reaped>,
}

impl TlsBroker {
    fn start(dir: &Path) -> Self {
        let namespace = format!("stockpipe-tls-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip runs");
            assert!(out.status.success(), "ip {args:?} (root needed): {out:?}");
        };
        ip(&["netns", "add", &namespace]);
        ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"]);
        let (broker, line) = first_line({
            let mut c = Command::new("ip");
            c.args([
                "netns",
                "exec",
                &namespace,
                bin(),
                "broker",
                "--partitions",
                "3",
            ]);
            c
        });
        let inside = serde_json::from_str::<serde_json::Value>(&line).unwrap()["bootstrap_servers"]
            .as_str()
            .unwrap()
            .to_string();
        let port: u16 = inside.rsplit(':').next().unwrap().parse().unwrap();
        let socket = dir.join("broker.sock");
        let relay = Command::new("ip")
            .args(["netns", "exec", &namespace, "socat"])
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:{inside}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs (apt-get install socat)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "socat's socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        let file = |name: &str| dir.join(name).display().to_string();
        let tls = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,cert={},key={},cafile={},verify=1",
                file("server.pem"),
                file("server.key"),
                file("ca.pem")
            ))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS listener did not open");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            namespace,
            port,
            _children: vec![Reaped(tls), Reaped(relay), broker],
        }
    }

    /// A config reaching it over TLS, trusting `ca`, with the client certificate or without.
    fn config(&self, dir: &Path, name: &str, ca: &str, client_certificate: bool) -> PathBuf {
        let file = |name: &str| dir.join(name).display().to_string();
        let mut text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:{}\"\nsecurity_protocol = \"SSL\"\nssl_ca_file = \"{}\"\n",
            self.port,
            file(ca)
        );
        if client_certificate {
            text += &format!(
                "ssl_certificate_file = \"{}\"\nssl_key_file = \"{}\"\n",
                file("client.pem"),
                file("client.key")
            );
        }
        text += &format!("[lake]\nurl = \"{}\"\n", file(&format!("lake-{name}")));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self._children.clear();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.namespace])
            .output();
    }
}

#[test]
fn tls_and_mtls_end_to_end_and_refused_certificates_named() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let broker = TlsBroker::start(dir.path());
    let mtls = broker.config(dir.path(), "mtls", "ca.pem", true);
    // The sample and one tick that does not decode, produced over mTLS.
    let input = dir.path().join("input.ndjson");
    let mut text: String = std::fs::read_to_string(workspace().join("data/stock_data_sample.json"))
        .map(|t| {
            serde_json::from_str::<Vec<serde_json::Value>>(&t)
                .unwrap()
                .iter()
                .map(|v| format!("{v}\n"))
                .collect()
        })
        .unwrap();
    text += "{\"instrument_token\": \"not a number\"}\n";
    std::fs::write(&input, text).unwrap();
    let out = run(Command::new(bin())
        .args(["produce", "--config"])
        .arg(&mtls)
        .arg("--input")
        .arg(&input));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(last_json_line(&out)["produced"], 101);
    // Nearly every tick raises an alert (any change at all): the alerts topic is produced to over
    // mTLS too.
    let out = run(Command::new(bin())
        .args(["run", "--once", "--config"])
        .arg(&mtls)
        .env("STOCKPIPE_ROUTE_CHANGE_ALERT_PCT", "0.000000001"));
    assert!(out.status.success(), "{out:?}");
    let summary = last_json_line(&out);
    assert_eq!(summary["consumed"], 101, "{summary}");
    assert_eq!(summary["dead_lettered"], 1, "{summary}");
    let alerts = summary["alerts"].as_u64().unwrap();
    assert!(alerts > 0, "{summary}");
    assert_eq!(crate::support::committed_total(&summary), 101, "{summary}");
    // `consume` reads the dead letter back over mTLS.
    let out = run(Command::new(bin())
        .args([
            "consume",
            "--json",
            "--max",
            "1",
            "--topic",
            "stock-stream.dlq",
            "--config",
        ])
        .arg(&mtls));
    assert!(out.status.success(), "{out:?}");
    let letter = last_json_line(&out);
    assert_eq!(letter["headers"]["stockpipe.stage"], "decode", "{letter}");
    let out = run(Command::new(bin())
        .args([
            "consume",
            "--json",
            "--max",
            "1",
            "--topic",
            "stock-alerts",
            "--config",
        ])
        .arg(&mtls));
    assert!(out.status.success(), "{out:?}");
    let alert: serde_json::Value =
        serde_json::from_str(last_json_line(&out)["payload"].as_str().unwrap()).unwrap();
    assert!(alert["alert_reason"].is_string(), "{alert}");

    // `check` finds everything in order over mTLS.
    let out = run(Command::new(bin())
        .args(["check", "--json", "--config"])
        .arg(&mtls));
    assert!(out.status.success(), "{out:?}");
    let report = last_json_line(&out);
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kafka", "kafka.output", "kafka.group", "lake"],
        "{report}"
    );

    // A CA that did not sign the broker's certificate, and no client certificate where the
    // broker requires one: each stops the start, naming why, and `check` says the same.
    for (name, ca, client, cause) in [
        ("untrusted", "other.pem", true, "certificate verify failed"),
        (
            "no-client-certificate",
            "ca.pem",
            false,
            "certificate required",
        ),
    ] {
        let config = broker.config(dir.path(), name, ca, client);
        let started = Instant::now();
        let out = run(Command::new(bin())
            .args(["run", "--once", "--config"])
            .arg(&config));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(cause), "{name}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: not at start-up"
        );
        let out = run(Command::new(bin())
            .args(["check", "--timeout-secs", "4", "--config"])
            .arg(&config));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name}: {stdout}");
        let kafka = stdout
            .lines()
            .find(|l| l.contains(" kafka "))
            .unwrap_or_default();
        assert!(
            kafka.starts_with("FAILED") && kafka.contains(cause),
            "{name}: {stdout}"
        );
    }
}

/// `check`'s Elasticsearch line: the version, and the rights a user lacks named (a scripted
/// cluster whose `_has_privileges` says the user may not manage templates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_elasticsearch_rights_a_user_lacks() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let es = MockServer::start().await;
    let answer = |body: serde_json::Value| {
        ResponseTemplate::new(200)
            .insert_header("x-elastic-product", "Elasticsearch")
            .set_body_json(body)
    };
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(answer(serde_json::json!({"version": {"number": "8.15.3"}})))
        .mount(&es)
        .await;
    let all = serde_json::json!({"create_doc": true, "index": true, "create_index": true});
    Mock::given(method("POST"))
        .and(path("/_security/user/_has_privileges"))
        .respond_with(answer(serde_json::json!({
            "has_all_requested": false,
            "cluster": {"monitor": true, "manage_index_templates": false, "manage_ilm": false},
            "index": {"stock-*": all, "stockpipe-*": all}
        })))
        .mount(&es)
        .await;
    let (_broker, line) = first_line({
        let mut c = Command::new(bin());
        c.args(["broker", "--partitions", "1"]);
        c
    });
    let brokers = serde_json::from_str::<serde_json::Value>(&line).unwrap()["bootstrap_servers"]
        .as_str()
        .unwrap()
        .to_string();
    let lake = tempfile::tempdir().unwrap();
    let check = |put_templates: &str| {
        run(Command::new(bin())
            .args(["check", "--json", "--brokers", &brokers])
            .env("STOCKPIPE_ELASTICSEARCH_URL", es.uri())
            .env("STOCKPIPE_ELASTICSEARCH_PUT_TEMPLATES", put_templates)
            .env("STOCKPIPE_LAKE_URL", lake.path()))
    };
    let out = tokio::task::block_in_place(|| check("true"));
    assert!(!out.status.success());
    let report = last_json_line(&out);
    let line = &report["checks"][3];
    assert_eq!(line["name"], "elasticsearch", "{report}");
    assert_eq!(line["ok"], false, "{report}");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("8.15.3") && detail.contains("manage_index_templates"),
        "{detail}"
    );
    // An ingest-only key (its templates put by someone else) needs no template rights.
    let out = tokio::task::block_in_place(|| check("false"));
    let report = last_json_line(&out);
    assert!(out.status.success(), "{report}");
    let detail = report["checks"][3]["detail"].as_str().unwrap();
    assert!(detail.contains("ingest rights only"), "{report}");
}
