//! `--metrics` serves Prometheus text that counts what the server did: requests by method,
//! errors by code, the send → ack histogram and the WAL's group commits and fdatasyncs.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ferrogram_net::ErrorCode;
use support::{free_port, Server};

fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

/// The value of the first sample line starting with `prefix`, summed over shards.
fn total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// Three sends, one refused request: the counters say so, and the WAL figures move.
#[test]
fn metrics_count_requests_errors_and_commits() {
    let metrics = free_port();
    let server = Server::start("metrics", &["--cores", "2", "--metrics", &metrics.to_string()]);
    let (alice, _) = server.login("+15550001001", "Alice Metric");
    let (_bob, bob) = server.login("+15550001002", "Bob Metric");
    let chat = alice.open_private(bob.user.id).expect("open");
    for i in 1..=3 {
        alice.send_message(chat, i, "counted").expect("send");
    }
    let anonymous = server.connect();
    assert_eq!(anonymous.get_state().expect_err("no login").code(), Some(ErrorCode::AuthRequired));

    // The WAL figures are sampled once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(metrics);
        if total(&text, "ferrogram_wal_fsyncs_total") > 0.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        total(&text, "ferrogram_requests_total{shard=\"0\",method=\"send_message\"}")
            + total(&text, "ferrogram_requests_total{shard=\"1\",method=\"send_message\"}"),
        3.0
    );
    assert_eq!(total(&text, "ferrogram_send_ack_seconds_count"), 3.0);
    assert!(
        total(&text, "ferrogram_errors_total{shard=\"0\",code=\"AUTH_REQUIRED\"}")
            + total(&text, "ferrogram_errors_total{shard=\"1\",code=\"AUTH_REQUIRED\"}")
            >= 1.0
    );
    assert!(total(&text, "ferrogram_wal_batches_total") > 0.0, "group commits are counted");
    assert!(total(&text, "ferrogram_wal_fsyncs_total") > 0.0, "fdatasyncs are counted");
    assert!(total(&text, "ferrogram_connections_open") >= 3.0);
    assert_eq!(total(&text, "ferrogram_insecure_fixed_login_code"), 0.0);
}
