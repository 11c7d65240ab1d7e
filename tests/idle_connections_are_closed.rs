//! Silent connections are closed by the idle timeout, enforced by each shard's deadline sweep,
//! while a quiet client that pings stays connected.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrogram_net::codec;
use ferrogram_net::frame::FrameType;
use ferrogram_net::limits::PROTOCOL_VERSION;
use ferrogram_net::Hello;
use support::Server;

fn greet(stream: &mut TcpStream) {
    let mut hello = Vec::new();
    codec::encode_hello(&mut hello, &Hello { protocol_version: PROTOCOL_VERSION, client: "idle-test".into() })
        .expect("hello encodes");
    stream.write_all(&hello).expect("send hello");
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).expect("welcome header");
    assert_eq!(header[4], FrameType::Welcome as u8);
    let mut body = vec![0; u32::from_le_bytes(header[..4].try_into().unwrap()) as usize - 1];
    stream.read_exact(&mut body).expect("welcome body");
}

/// Reads until the server closes; returns how long that took (at most `limit`).
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buffer = [0u8; 256];
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

// With a 2 s idle timeout, a greeted connection that sends nothing is closed within about 2 s
// (plus the one-second sweep), and one that pings every 500 ms is still open after 4 s.
#[test]
fn silent_connections_close_and_pinging_ones_stay() {
    let server = Server::start("idle-timeout", &["--cores", "1", "--idle-timeout-s", "2"]);
    let mut silent = TcpStream::connect(server.address).expect("connect");
    greet(&mut silent);
    let mut pinging = TcpStream::connect(server.address).expect("connect");
    greet(&mut pinging);

    let pinger = std::thread::spawn(move || {
        let started = Instant::now();
        pinging.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut buffer = [0u8; 256];
        while started.elapsed() < Duration::from_secs(4) {
            let mut ping = Vec::new();
            codec::encode_ping(&mut ping, FrameType::Ping, b"still here").expect("ping encodes");
            if pinging.write_all(&ping).is_err() {
                return false;
            }
            match pinging.read(&mut buffer) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                }
                Err(_) => return false,
            }
        }
        true
    });

    let closed = time_to_close(&mut silent, Duration::from_secs(10)).expect("the silent connection is closed");
    assert!(closed >= Duration::from_millis(1500), "closed after {closed:?}, before the idle timeout");
    assert!(closed <= Duration::from_secs(4), "closed after {closed:?}: the sweep runs every second");
    assert!(pinger.join().expect("pinger"), "the pinging connection stayed open for 4 s");
}
