//! What a connection costs the server in heap memory, counted byte for byte: the engine and
//! the gateway run in this process under a counting allocator, clients are plain sockets, and
//! the live heap is compared before and after opening connections, greeting them and
//! authorizing them (issue 5: 10,000 connections at under 8 KiB each). The live allocations
//! that appeared, by size, are printed, so a regression names its culprit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{Engine, EngineConfig};
use ferrogram_gateway_shim::{CodeSender, GatewayConfig, GatewayHandle, GatewayLimits};
use ferrogram_net::codec;
use ferrogram_net::frame::FrameType;
use ferrogram_net::limits::{FRAME_HEADER_BYTES, PROTOCOL_VERSION};
use ferrogram_net::{Hello, Outcome, Request, Response};

/// Live allocations counted exactly by size up to this; larger ones share the last slot.
const SIZES_TRACKED: usize = 16 * 1024;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BY_SIZE: [AtomicI64; SIZES_TRACKED + 1] = [const { AtomicI64::new(0) }; SIZES_TRACKED + 1];

fn record(layout: Layout, sign: i64) {
    LIVE_BYTES.fetch_add(sign * layout.size() as i64, Relaxed);
    LIVE_BY_SIZE[layout.size().min(SIZES_TRACKED)].fetch_add(sign, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            record(layout, 1);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            record(layout, 1);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        record(layout, -1);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            record(layout, -1);
            // SAFETY: `realloc` succeeded, so `new_size` with the old alignment is a valid layout.
            record(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) }, 1);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The live heap at one point. Every snapshot's storage is allocated before the first is
/// taken, so the snapshots themselves are in every figure alike and cancel out.
struct Snapshot {
    bytes: i64,
    by_size: Vec<i64>,
}

impl Snapshot {
    fn new() -> Snapshot {
        Snapshot { bytes: 0, by_size: vec![0; SIZES_TRACKED + 1] }
    }

    /// Takes the snapshot once the live heap has stopped moving (the server finishes its work
    /// asynchronously).
    fn settled(&mut self) -> &Snapshot {
        let mut last = LIVE_BYTES.load(Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = LIVE_BYTES.load(Relaxed);
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        self.bytes = LIVE_BYTES.load(Relaxed);
        for (count, live) in self.by_size.iter_mut().zip(&LIVE_BY_SIZE) {
            *count = live.load(Relaxed);
        }
        self
    }
}

/// Prints the allocations that appeared between two snapshots, per connection, by size.
fn report(what: &str, before: &Snapshot, after: &Snapshot, connections: usize) -> f64 {
    let per_connection = (after.bytes - before.bytes) as f64 / connections as f64;
    eprintln!("{what}: {per_connection:.1} heap bytes per connection");
    for (size, (b, a)) in before.by_size.iter().zip(&after.by_size).enumerate() {
        let per = (a - b) as f64 / connections as f64;
        if per.abs() >= 0.2 {
            let size = if size == SIZES_TRACKED { format!(">={SIZES_TRACKED}") } else { size.to_string() };
            eprintln!("    {per:>6.2} allocations of {size} bytes");
        }
    }
    per_connection
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A client on a plain blocking socket: no tasks, no buffers kept between calls.
struct Client {
    stream: TcpStream,
    next_req_id: u64,
}

impl Client {
    fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Client { stream, next_req_id: 1 }
    }

    fn greet(&mut self) {
        let mut hello = Vec::new();
        codec::encode_hello(&mut hello, &Hello { protocol_version: PROTOCOL_VERSION, client: "memory".into() })
            .expect("hello encodes");
        self.stream.write_all(&hello).expect("send hello");
        let (frame_type, _) = self.read_frame();
        assert_eq!(frame_type, FrameType::Welcome as u8);
    }

    fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut header).expect("frame header");
        let length = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
        let mut body = vec![0; length - 1];
        self.stream.read_exact(&mut body).expect("frame body");
        (header[4], body)
    }

    fn call(&mut self, request: &Request) -> Response {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let mut frame = Vec::new();
        codec::encode_request(&mut frame, req_id, request).expect("request encodes");
        self.stream.write_all(&frame).expect("send request");
        loop {
            let (frame_type, body) = self.read_frame();
            if frame_type != FrameType::Response as u8 {
                continue;
            }
            match codec::decode_response(&body).expect("response decodes") {
                (id, Outcome::Ok(response)) if id == req_id => return response,
                (id, Outcome::Err(error)) if id == req_id => panic!("{request:?} failed: {error:?}"),
                _ => {}
            }
        }
    }
}

// A greeted connection and an authorized one (engine session and live-update pump included)
// each stay within their heap budget, and answering a request leaves little behind; the
// allocations behind the figures are printed.
#[test]
fn a_connection_costs_little_heap() {
    const CONNECTIONS: usize = 1000;
    const CODE: &str = "12345";
    let dir = temp_dir("connection-memory");
    let mut config = EngineConfig::new(&dir);
    config.log.segment_bytes = 4 << 20;
    let engine = Engine::open(config).expect("engine opens");
    let mut gateway = GatewayConfig::new("127.0.0.1:0".parse().expect("address"), CodeSender::Fixed(CODE.into()));
    gateway.limits = GatewayLimits {
        connections_per_ip_max: 100_000,
        requests_per_ip_per_second: 1_000_000,
        logins_per_ip_per_minute: 1_000_000,
        codes_per_phone_per_hour: 1_000_000,
        ..GatewayLimits::default()
    };
    gateway.idle_timeout = Duration::from_secs(3600);
    let handle = GatewayHandle::start(engine, gateway).expect("gateway starts");
    let address = handle.local_addr();

    // Every user signs up once, keeps its token and leaves: what stays is the users' own state.
    let mut tokens = Vec::with_capacity(CONNECTIONS);
    for index in 0..CONNECTIONS {
        let phone = format!("+1999{index:07}");
        let mut client = Client::connect(address);
        client.greet();
        client.call(&Request::SendCode { phone: phone.clone() });
        let signed_in = client.call(&Request::SignIn { phone: phone.clone(), code: CODE.into() });
        let response = match signed_in {
            Response::SignUpRequired => client.call(&Request::SignUp {
                phone,
                code: CODE.into(),
                first_name: "Memory".into(),
                last_name: index.to_string(),
            }),
            other => other,
        };
        match response {
            Response::Authorized { token, .. } => tokens.push(token),
            other => panic!("expected Authorized, got {other:?}"),
        }
    }
    let mut clients: Vec<Client> = Vec::with_capacity(CONNECTIONS);
    let [mut before, mut greeted, mut authorized, mut first_round, mut second_round] =
        std::array::from_fn(|_| Snapshot::new());
    before.settled();

    for _ in 0..CONNECTIONS {
        let mut client = Client::connect(address);
        client.greet();
        clients.push(client);
    }
    greeted.settled();
    for (client, token) in clients.iter_mut().zip(&tokens) {
        match client.call(&Request::Authenticate { token: token.clone() }) {
            Response::Authorized { .. } => {}
            other => panic!("expected Authorized, got {other:?}"),
        }
    }
    authorized.settled();
    // A request and its answer each, twice: the reader's buffers, the writer's queue and the
    // request task are gone again afterwards. The first round also leaves a rate limiter entry
    // per authorization and the shard's first-use allocations (metrics), the second nothing.
    for round in [&mut first_round, &mut second_round] {
        for client in &mut clients {
            match client.call(&Request::GetAuthorizations) {
                Response::Authorizations(_) => {}
                other => panic!("expected Authorizations, got {other:?}"),
            }
        }
        round.settled();
    }

    let greeted_bytes = report("greeted connection", &before, &greeted, CONNECTIONS);
    let session_bytes = report("authorizing it (engine session, update pump)", &greeted, &authorized, CONNECTIONS);
    let total = report("authorized connection in all", &before, &authorized, CONNECTIONS);
    report("after a first request each", &authorized, &first_round, CONNECTIONS);
    let after_request = report("after a second request each", &first_round, &second_round, CONNECTIONS);
    drop(clients);
    handle.shutdown().expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);

    // Requested bytes, before the allocator's rounding; RSS is measured with loadgen
    // (docs/BENCHMARKS.md, "Memory per connection"). Measured when written: 1,537, 968 and
    // 2,505 bytes, then 35 and 0 after the two requests; before issue 5's work 3,935, 1,904
    // and 5,839, then 176 (the writer kept its largest batch), with a page-aligned buffer
    // per idle connection besides (a peek's, counted here as the 1 byte asked for).
    assert!(greeted_bytes < 2200.0, "a greeted connection holds {greeted_bytes:.0} heap bytes");
    assert!(session_bytes < 1500.0, "authorizing a connection adds {session_bytes:.0} heap bytes");
    assert!(total < 3600.0, "an authorized connection holds {total:.0} heap bytes");
    assert!(after_request < 32.0, "a connection holds {after_request:.0} more heap bytes after a request");
}
