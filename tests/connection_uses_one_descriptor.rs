//! A client connection holds one file descriptor on the server (its socket, shared by the
//! connection's reader and writer), greeted or logged in, and gives it back when it closes;
//! and a server whose open-files limit is nearly spent refuses further connections with an
//! answer instead of failing to accept them (issue 5).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrogram_net::codec;
use ferrogram_net::frame::FrameType;
use ferrogram_net::limits::{FRAME_HEADER_BYTES, PROTOCOL_VERSION};
use ferrogram_net::{ErrorCode, Hello};
use support::Server;

/// Descriptors the server may open meanwhile on its own (a WAL segment prepared ahead, a
/// checkpoint): the counts below allow this many more than the connections explain.
const OWN_FILES_SLACK: usize = 6;

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the server's descriptors").count()
}

/// The server's descriptor count once it has held still for 300 ms (at most 10 s).
fn settled_descriptors(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = descriptors(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = descriptors(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Connects and completes the handshake; `Err` carries the error frame's code if the server
/// answered with one instead of a Welcome.
fn greet(address: SocketAddr) -> Result<TcpStream, Option<ErrorCode>> {
    let mut stream = TcpStream::connect(address).map_err(|_| None)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut hello = Vec::new();
    codec::encode_hello(&mut hello, &Hello { protocol_version: PROTOCOL_VERSION, client: "fd-test".into() })
        .expect("hello encodes");
    // A refused connection may be closed before the Hello arrives: the answer is what counts.
    let _ = stream.write_all(&hello);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).map_err(|_| None)?;
    let length = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
    let mut body = vec![0; length.saturating_sub(1)];
    stream.read_exact(&mut body).map_err(|_| None)?;
    if header[4] == FrameType::Welcome as u8 {
        return Ok(stream);
    }
    assert_eq!(header[4], FrameType::Error as u8, "neither a Welcome nor an error");
    Err(ferrogram_net::codec::decode_error(&body).ok().map(|error| error.code))
}

// K greeted connections add K descriptors to the server, not 2K; logged-in ones one each too;
// closing them gives them all back.
#[test]
fn each_connection_holds_one_descriptor() {
    const GREETED: usize = 200;
    const LOGGED_IN: usize = 10;
    let server = Server::start("one-descriptor", &["--cores", "1"]);
    let pid = server.pid().expect("the server runs");
    let before = settled_descriptors(pid);

    let greeted: Vec<TcpStream> = (0..GREETED).map(|_| greet(server.address).expect("greeted")).collect();
    let with_greeted = settled_descriptors(pid);
    let added = with_greeted - before;
    assert!(
        (GREETED..=GREETED + OWN_FILES_SLACK).contains(&added),
        "{GREETED} greeted connections added {added} descriptors to the server ({before} before)"
    );

    let logged_in: Vec<_> =
        (0..LOGGED_IN).map(|index| server.login(&format!("+1555900{index:04}"), "Descriptor Test").0).collect();
    let with_logged_in = settled_descriptors(pid);
    let added = with_logged_in - with_greeted;
    assert!(
        (LOGGED_IN..=LOGGED_IN + OWN_FILES_SLACK).contains(&added),
        "{LOGGED_IN} logged-in connections added {added} descriptors"
    );

    drop(greeted);
    drop(logged_in);
    let after = settled_descriptors(pid);
    assert!(after <= before + OWN_FILES_SLACK, "{after} descriptors after every client left ({before} before)");
}

/// `ferrogram serve` with its open-files limit (soft and hard) set to `limit`.
fn serve_with_open_files_limit(directory: &std::path::Path, limit: u64) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrogram"));
    command
        .arg("serve")
        .arg("--cores")
        .arg("1")
        .arg("--data-dir")
        .arg(directory.join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--code-sender")
        .arg(format!("file:{}", directory.join("codes").display()))
        .arg("--connections-per-ip-max")
        .arg("100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec only `setrlimit` runs, which is async-signal-safe, on a
    // struct owned by the closure.
    unsafe {
        command.pre_exec(move || {
            let wanted = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().expect("start ferrogram serve");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = sender.send(line);
        }
        for _ in lines {}
    });
    let line = receiver.recv_timeout(Duration::from_secs(60)).expect("the server starts");
    let address = line
        .strip_prefix("ferrogram listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (child, address)
}

// With an open-files limit of 1,100, the server takes connections up to what the limit leaves
// after its own files and a headroom (a quarter of the limit here), answers the next one
// OVERLOADED, and takes new ones again once others close.
#[test]
fn connections_past_the_open_files_limit_are_refused_with_an_answer() {
    const LIMIT: u64 = 1100;
    let directory = std::env::temp_dir().join(format!("ferrogram-open-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("test directory");
    let (mut child, address) = serve_with_open_files_limit(&directory, LIMIT);

    let mut held = Vec::new();
    let refused = loop {
        match greet(address) {
            Ok(stream) => held.push(stream),
            Err(code) => break code,
        }
        assert!(held.len() < LIMIT as usize, "the server took {} connections under a limit of {LIMIT}", held.len());
    };
    assert_eq!(refused, Some(ErrorCode::Overloaded), "refused with an answer after {} connections", held.len());
    // The limit less the headroom (275) and the server's own descriptors (a few dozen).
    assert!((700..=825).contains(&held.len()), "{} connections held under a limit of {LIMIT}", held.len());

    held.truncate(held.len() - 10);
    std::thread::sleep(Duration::from_millis(500));
    assert!(greet(address).is_ok(), "a connection is taken again once others closed");

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&directory);
}
