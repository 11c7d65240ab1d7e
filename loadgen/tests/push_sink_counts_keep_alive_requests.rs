//! The push sink as a relay's clients see it: it answers `200 {}` to every POST on a kept-alive
//! connection (pipelined or one by one), closes when asked to, refuses what is too large, and
//! counts exactly the requests and messages it answered, also with many connections at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ferrogram_loadgen::limits::SINK_BODY_BYTES_MAX;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::sink::{PushSink, SinkCounters, SinkTotals};

/// A sink on a loopback port of its own, served by `runtime`.
fn start_sink(runtime: &Runtime) -> (SocketAddr, Arc<SinkCounters>) {
    let sink = PushSink::bind("127.0.0.1:0".parse().expect("an address")).expect("the sink listens");
    let address = sink.local_addr().expect("its address");
    let counters = sink.counters();
    let handle = runtime.handle();
    runtime.handle().spawn(sink.serve(handle)).detach();
    (address, counters)
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    stream
}

fn post(body: &str, extra_headers: &str) -> String {
    format!("POST /push HTTP/1.1\r\nHost: sink\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// Reads one answer: its status line, headers and `Content-Length` body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> (u16, Vec<String>, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    let status = status_line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().expect("a length");
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    (status, headers, String::from_utf8(body).expect("text"))
}

/// Waits until the sink's counters show `requests` (answers are written after counting, so
/// they are normally there already).
fn wait_for_requests(counters: &SinkCounters, requests: u64) -> SinkTotals {
    for _ in 0..500 {
        let totals = counters.totals();
        if totals.requests >= requests {
            return totals;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    counters.totals()
}

// One connection carries many requests: two pipelined in one write, then one after another,
// each answered `200 {}` in order; a GET is answered 405 and the connection stays usable; a
// request asking to close is answered and the connection ends.
#[test]
fn one_connection_carries_many_requests_until_it_asks_to_close() {
    let runtime = Runtime::new(2).expect("threads");
    let (address, counters) = start_sink(&runtime);
    let stream = connect(address);
    let mut writer = stream.try_clone().expect("a writer");
    let mut reader = BufReader::new(stream);

    let pipelined = format!("{}{}", post(r#"{"count":2}"#, ""), post(r#"{"count":3}"#, ""));
    writer.write_all(pipelined.as_bytes()).expect("sent");
    for _ in 0..2 {
        let (status, headers, body) = read_answer(&mut reader);
        assert_eq!((status, body.as_str()), (200, "{}"));
        assert!(!headers.iter().any(|header| header.starts_with("connection: close")));
    }
    for _ in 0..5 {
        writer.write_all(post(r#"{"kind":"webhook","count":1}"#, "").as_bytes()).expect("sent");
        assert_eq!(read_answer(&mut reader).0, 200);
    }
    writer.write_all(b"GET / HTTP/1.1\r\nHost: sink\r\n\r\n").expect("sent");
    assert_eq!(read_answer(&mut reader).0, 405);
    writer.write_all(post("{}", "Connection: close\r\n").as_bytes()).expect("sent");
    let (status, headers, _) = read_answer(&mut reader);
    assert_eq!(status, 200);
    assert!(headers.iter().any(|header| header == "connection: close"), "{headers:?}");
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).expect("the end"), 0, "the sink closed the connection");

    let totals = wait_for_requests(&counters, 8);
    assert_eq!((totals.requests, totals.messages, totals.not_posts), (8, 10, 1));
    assert_eq!((totals.connections_accepted, totals.bad_requests), (1, 0));
}

// A body over the bound is refused with 413 before it is sent and the connection closes; a
// request split into single bytes is still read whole; `Expect: 100-continue` gets its
// interim answer.
#[test]
fn oversized_requests_are_refused_and_slow_ones_are_read_whole() {
    let runtime = Runtime::new(2).expect("threads");
    let (address, counters) = start_sink(&runtime);

    let stream = connect(address);
    let mut writer = stream.try_clone().expect("a writer");
    let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", SINK_BODY_BYTES_MAX + 1);
    writer.write_all(head.as_bytes()).expect("sent");
    let mut reader = BufReader::new(stream);
    assert_eq!(read_answer(&mut reader).0, 413);
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).expect("the end"), 0, "closed after refusing");

    let stream = connect(address);
    stream.set_nodelay(true).expect("no delay");
    let mut writer = stream.try_clone().expect("a writer");
    let mut reader = BufReader::new(stream);
    for byte in post(r#"{"count":4}"#, "").bytes() {
        writer.write_all(&[byte]).expect("sent");
    }
    assert_eq!(read_answer(&mut reader).0, 200);
    writer.write_all(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").expect("sent");
    assert_eq!(read_answer(&mut reader).0, 100);
    writer.write_all(b"{}").expect("sent");
    assert_eq!(read_answer(&mut reader).0, 200);

    let totals = wait_for_requests(&counters, 2);
    assert_eq!((totals.requests, totals.messages, totals.bad_requests), (2, 4, 1));
}

// Many clients at once, each with its own kept-alive connection: every request is answered
// and counted once, and each client used exactly one connection.
#[test]
fn many_connections_are_counted_exactly() {
    const CLIENTS: usize = 32;
    const REQUESTS_PER_CLIENT: usize = 300;
    let runtime = Runtime::new(3).expect("threads");
    let (address, counters) = start_sink(&runtime);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let stream = connect(address);
                let mut writer = stream.try_clone().expect("a writer");
                let mut reader = BufReader::new(stream);
                let request = post(r#"{"kind":"webhook","token":"loadgen-1","count":1}"#, "");
                // Ten in flight at a time, as a pipelining client would keep them.
                for _ in 0..REQUESTS_PER_CLIENT / 10 {
                    writer.write_all(request.repeat(10).as_bytes()).expect("sent");
                    for _ in 0..10 {
                        assert_eq!(read_answer(&mut reader).0, 200);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("every client got every answer");
    }
    let expected = (CLIENTS * REQUESTS_PER_CLIENT) as u64;
    let totals = wait_for_requests(&counters, expected);
    assert_eq!((totals.requests, totals.messages), (expected, expected));
    assert_eq!((totals.connections_accepted, totals.bad_requests), (CLIENTS as u64, 0));
}
