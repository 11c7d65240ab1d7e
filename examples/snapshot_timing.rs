//! Times a messaging checkpoint on its own: builds one shard's core in memory (10,000 users,
//! 5,000 private chats, N messages of 64 bytes; the journal is a counter), then times
//! `MessagingCore::snapshot` and `restore`. `cargo run --release --example snapshot_timing -- N`.

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
                random_id: RandomId(i + 1),
                text: "x".repeat(64),
                reply_to: None,
                forwarded_from: None,
                media: None,
            }),
        );
    }
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
