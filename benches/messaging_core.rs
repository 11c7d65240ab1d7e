//! Criterion benchmarks of the messaging core alone (no I/O, one shard): the CPU cost of a
//! private-chat send (validate, encode the chat record and the box record of both users,
//! append to an in-memory journal, apply, release the reply and live updates), and of a
//! 50-message history page. Together with `ferrogram bench-messaging` they show how much of
//! a send is the core and how much the log and the thread hops.
//!
//! Run with `cargo bench --bench messaging_core`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrogram::engine::messaging::{
    ChatId, HistoryPage, Journal, MessagingCore, Origin, Request, Response, SendRequest, UnixMs, UserId,
};
use ferrogram::engine::messaging::{RandomId, SessionId};
use ferrogram::engine::vshards::VShardTable;
use ferrogram::engine::wal::AppendError;
use ferrogram::engine::{Lsn, RecordKind, ShardId, VShard};

const USERS: usize = 1000;

/// A journal that only counts: every append succeeds and is at once durable.
struct CountingJournal {
    next: u64,
    bytes: u64,
}

impl Journal for CountingJournal {
    fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> Result<Lsn, AppendError> {
        let first = Lsn(self.next);
        self.next += records.len() as u64;
        self.bytes += records.iter().map(|(_, _, payload)| payload.len() as u64).sum::<u64>();
        Ok(first)
    }
}

struct Setup {
    core: MessagingCore,
    journal: CountingJournal,
    chats: Vec<(ChatId, UserId)>,
    request: u64,
}

impl Setup {
    fn call(&mut self, request: Request) -> Response {
        self.request += 1;
        let origin = Origin { shard: ShardId(0), request: self.request };
        self.core.handle(origin, request, UnixMs(1_700_000_000_000), &mut self.journal);
        let last = Lsn(self.journal.next - 1);
        self.core.advance(last, last, &mut self.journal);
        let effects = self.core.take_effects();
        match effects.replies.into_iter().find(|(o, _)| *o == origin) {
            Some((_, Ok(response))) => response,
            other => panic!("request failed: {other:?}"),
        }
    }
}

fn setup() -> Setup {
    let table = Arc::new(VShardTable::round_robin(1));
    let mut setup = Setup {
        core: MessagingCore::new(ShardId(0), table),
        journal: CountingJournal { next: 1, bytes: 0 },
        chats: Vec::new(),
        request: 0,
    };
    setup.core.resume(0, Lsn::ZERO);
    let mut users = Vec::new();
    for index in 0..USERS {
        let request =
            Request::SignUp { phone: format!("+1555{index:07}"), first_name: "User".into(), last_name: String::new() };
        let Response::User(user) = setup.call(request) else { panic!("sign up") };
        users.push(user);
    }
    for pair in users.chunks(2) {
        let Response::Chat(chat) = setup.call(Request::OpenPrivate { user: pair[0], peer: pair[1] }) else {
            panic!("open private")
        };
        setup.chats.push((chat, pair[0]));
    }
    // Every user online, so each send also produces its live deliveries.
    for (index, &user) in users.iter().enumerate() {
        setup.request += 1;
        let origin = Origin { shard: ShardId(0), request: setup.request };
        let session = SessionId::compose(index as u64 + 1, ShardId(0));
        setup.core.handle(origin, Request::Connect { user, session }, UnixMs(1_700_000_000_000), &mut setup.journal);
        let _ = setup.core.take_effects();
    }
    setup
}

fn send(c: &mut Criterion) {
    let mut setup = setup();
    let mut group = c.benchmark_group("messaging_core");
    group.throughput(Throughput::Elements(1));
    let mut sequence = 0u64;
    group.bench_function("private_send_128B", |b| {
        b.iter(|| {
            sequence += 1;
            let (chat, sender) = setup.chats[sequence as usize % setup.chats.len()];
            let request = Request::Send(SendRequest {
                chat,
                sender,
                session: None,
                random_id: RandomId(sequence),
                text: "x".repeat(128),
                reply_to: None,
                forwarded_from: None,
                media: None,
            });
            setup.call(request)
        })
    });
    let (chat, reader) = setup.chats[0];
    group.bench_function("history_page_50", |b| {
        b.iter(|| {
            let page = HistoryPage { limit: 50, ..HistoryPage::default() };
            setup.call(Request::GetHistory { chat, user: reader, page })
        })
    });
    group.finish();
}

criterion_group!(benches, send);
criterion_main!(benches);
