//! The admin API: the mutating endpoints need the token when one is set, reads stay open; a host
//! that listens beyond loopback without a token serves its reads and keeps its admin endpoints
//! closed; connections that never finish their headers are closed.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockpipe::chain::swap::GuestRegistry;
use stockpipe::http::{ApiState, ServeLimits, serve};
use stockpipe::telemetry::Telemetry;

async fn api(
    token: Option<&str>,
    limits: ServeLimits,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = ApiState {
        registry: Arc::new(GuestRegistry::default()),
        triggers: None,
        telemetry: Arc::new(Telemetry::new()),
        dependencies: Vec::new(),
        admin: token.map_or(stockpipe::http::AdminAccess::Open, |t| {
            stockpipe::http::AdminAccess::Token(Arc::from(t))
        }),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_endpoint_needs_the_token() {
    let (addr, _stop) = api(Some("s3cret"), ServeLimits::default()).await;
    let client = reqwest::Client::new();
    let reload = format!("http://{addr}/guests/all/reload?force=true");
    let promote = format!("http://{addr}/guests/validate/promote");
    for endpoint in [&reload, &promote] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("s3cret"),
        ] {
            let mut request = client
                .post(endpoint)
                .body("{\"component_base64\":\"AA==\"}");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status().as_u16(), 401, "{endpoint} {auth:?}");
            assert_eq!(answer.headers()["www-authenticate"], "Bearer");
        }
    }
    // A promotion with the token but a body that is not one is refused, naming what it expects.
    let answer = client
        .post(&promote)
        .header("authorization", "Bearer s3cret")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    assert!(answer.text().await.unwrap().contains("component_base64"));
    // With the token the request gets through to the swap logic (no guests directory here).
    let answer = client
        .post(&reload)
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 409);
    // Reads need nothing.
    for read in ["/health", "/guests", "/api/live", "/metrics", "/"] {
        let answer = client
            .get(format!("http://{addr}{read}"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{read}: {}", answer.status());
    }
}

/// A replica beyond loopback without a token (Prometheus scrapes it; no one administers it): the
/// reads are served, the admin endpoints answer 401 naming the variable that would open them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_without_a_token_the_reads_are_served_and_the_admin_endpoints_closed() {
    // The test relies on the token being unset (nothing in the tests sets it).
    assert!(std::env::var(stockpipe::http::ADMIN_TOKEN_ENV).is_err());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let admin = stockpipe::http::admin_access(listen, |k| std::env::var(k).ok());
    assert_eq!(admin, stockpipe::http::AdminAccess::Closed { listen });
    let state = ApiState {
        registry: Arc::new(GuestRegistry::default()),
        triggers: None,
        telemetry: Arc::new(Telemetry::new()),
        dependencies: Vec::new(),
        admin,
    };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, ServeLimits::default(), async {
        let _ = stopped.await;
    }));
    let addr = format!("127.0.0.1:{}", listen.port());
    let client = reqwest::Client::new();
    for read in ["/health", "/ready", "/metrics", "/"] {
        let answer = client
            .get(format!("http://{addr}{read}"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{read}: {}", answer.status());
    }
    for auth in [None, Some("Bearer anything")] {
        let mut request = client.post(format!("http://{addr}/guests/all/reload"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{auth:?}");
        let body = answer.text().await.unwrap();
        assert!(
            body.contains(stockpipe::http::ADMIN_TOKEN_ENV) && body.contains("closed"),
            "{body}"
        );
    }
}

/// 300 connections that send half a request head and stop: each is closed once the header
/// deadline passes, and the API answers others meanwhile (they were held 70 s and more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let limits = ServeLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(1),
    };
    let (addr, _stop) = api(None, limits).await;
    let stalled: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let client = reqwest::Client::new();
    let health = tokio::time::timeout(
        Duration::from_secs(30),
        client.get(format!("http://{addr}/health")).send(),
    )
    .await
    .expect("the API answers while slow clients hold connections")
    .unwrap();
    assert!(health.status().is_success());
    // Every stalled connection is closed by the server (read ends) within a few deadlines.
    let give_up = started + Duration::from_secs(15);
    tokio::task::spawn_blocking(move || {
        for mut s in stalled {
            let left = give_up.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
