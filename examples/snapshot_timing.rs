//! Times a messaging checkpoint on its own: builds one shard's core in memory (10,000 users,
//! 5,000 private chats, N messages of 64 bytes; the journal is a counter), then times
//! `MessagingCore::snapshot` and `restore`, and prints what the checkpoint's bytes are made of
//! (each part archived on its own, per message). `cargo run --release --example snapshot_timing -- N`.

use std::sync::Arc;
use std::time::Instant;

use ferrogram::engine::messaging::{Journal, MessagingCore, Origin, RandomId, Request, SendRequest, UnixMs};
use ferrogram::engine::vshards::VShardTable;
use ferrogram::engine::wal::AppendError;
use ferrogram::engine::{Lsn, RecordKind, ShardId, VShard};

struct J(u64);
impl Journal for J {
    fn append_all(&mut self, r: &[(RecordKind, VShard, &[u8])]) -> Result<Lsn, AppendError> {
        let f = Lsn(self.0);
        self.0 += r.len() as u64;
        Ok(f)
    }
}

fn main() {
    let mut core = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
    let mut j = J(1);
    core.resume(0, Lsn::ZERO);
    let mut n = 0;
    let mut call = |core: &mut MessagingCore, j: &mut J, r: Request| {
        n += 1;
        core.handle(Origin { shard: ShardId(0), request: n }, r, UnixMs(1_700_000_000_000), j);
        let l = Lsn(j.0 - 1);
        core.advance(l, l, j);
        core.take_effects().replies.pop().expect("a reply").1.expect("the request succeeds")
    };
    let mut users = vec![];
    for i in 0..10000 {
        let r = call(
            &mut core,
            &mut j,
            Request::SignUp { phone: format!("+1555{i:07}"), first_name: "A".into(), last_name: "".into() },
        );
        if let ferrogram::engine::messaging::Response::User(u) = r {
            users.push(u)
        }
    }
    let mut chats = vec![];
    for p in users.chunks(2) {
        if let ferrogram::engine::messaging::Response::Chat(c) =
            call(&mut core, &mut j, Request::OpenPrivate { user: p[0], peer: p[1] })
        {
            chats.push((c, p[0]))
        }
    }
    let messages: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    for i in 0..messages {
        let (chat, sender) = chats[i as usize % chats.len()];
        call(
            &mut core,
            &mut j,
            Request::Send(SendRequest {
                chat,
                sender,
                session: None,
                random_id: RandomId(i + 1),
                text: "x".repeat(64),
                reply_to: None,
                forwarded_from: None,
                media: None,
            }),
        );
    }
    print_composition(&core, messages);
    let t = Instant::now();
    let bytes = core.snapshot();
    let s = t.elapsed();
    // Restored from one contiguous buffer, as opening maps the checkpoint file.
    let bytes = bytes.to_vec();
    let t = Instant::now();
    let mut other = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
    other.restore(&bytes).expect("the checkpoint restores");
    println!(
        "{messages} messages: snapshot {} MB in {:?} ({:.0} MB/s), restore in {:?}",
        bytes.len() >> 20,
        s,
        bytes.len() as f64 / 1e6 / s.as_secs_f64(),
        t.elapsed()
    );
}

/// Archives each part of the state on its own, as a plain vector where the state keeps it in
/// chunks, and prints its bytes per message.
fn print_composition(core: &MessagingCore, messages: u64) {
    fn archived<T>(value: &T) -> u64
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        rkyv::to_bytes::<rkyv::rancor::Error>(value).map_or(0, |bytes| bytes.len() as u64)
    }
    let state = core.state();
    let mut parts = [("messages", 0), ("chat logs", 0), ("random_ids", 0), ("box entries", 0), ("dialogs", 0)];
    for chat in state.chats.values() {
        parts[0].1 += archived(&chat.messages.iter().cloned().collect::<Vec<_>>());
        parts[1].1 += archived(&chat.log.iter().cloned().collect::<Vec<_>>());
        parts[2].1 += archived(&chat.random_ids);
    }
    for user in state.users.values() {
        parts[3].1 += archived(&user.update_box.entries.iter().cloned().collect::<Vec<_>>());
        parts[4].1 += archived(&user.update_box.dialogs);
    }
    let order = ("idempotency order", archived(&state.idempotency_order.iter().copied().collect::<Vec<_>>()));
    for (part, bytes) in parts.into_iter().chain([order]) {
        println!("{part:>18}: {:>5} MB, {:>6.1} bytes per message", bytes >> 20, bytes as f64 / messages as f64);
    }
}
