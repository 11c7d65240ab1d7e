//! The media upkeep: a task on every shard that carries media messages' references between
//! the shard's messaging state and the media stores (DESIGN §7).
//!
//! - **Releases.** A media message's tombstone queues the release of its reference in the
//!   shard's durable outbox (`messaging/media.rs`). The upkeep reads the outbox (only releases
//!   of durable tombstones are handed out), gives each reference back on the file's shard, and
//!   records `MediaReleasesDone`. A crash between the two gives the reference back twice,
//!   which the store's keyed references make harmless.
//! - **Leaks.** A reference taken for a message that was then refused, or never appended
//!   because the process died, has no message. Every `holder_check_every_ms` the upkeep lists
//!   this shard's unconfirmed references older than `holder_grace_ms`, asks each one's chat
//!   shard whether a live message holds it, and confirms or releases it. The chat shard
//!   refuses media sends under a key it answered `false` for, so a late retry cannot append a
//!   message whose reference is being given back.
//!
//! It holds a [`Router`], not an `Engine`: a task on a shard must never own the last engine
//! handle (dropping it there would wait for this very shard to stop).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::Router;
use crate::ids::ShardId;
use crate::media::{FileId, Holder};
use crate::messaging::limits::MEDIA_PAGE_MAX;
use crate::messaging::media::PendingRelease;
use crate::messaging::protocol::{Request, Response};
use crate::messaging::types::{ChatId, MessagingResult, RandomId, UserId};
use crate::shard::ShardContext;

/// How often the release outbox is read: a deleted file's space comes back within about this.
const RELEASE_EVERY_MS: u64 = 500;

pub(crate) async fn run(router: Router, context: Rc<ShardContext>) {
    let shard = context.id;
    let settings = context.media.settings().clone();
    let check_every = Duration::from_millis(settings.holder_check_every_ms);
    let mut checked = Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_millis(RELEASE_EVERY_MS)).await;
        if context.media.is_stopping() {
            return;
        }
        // A shard that is stopping or overloaded answers with an error: try again next round.
        let _ = release_pending(&router, shard).await;
        if checked.elapsed() >= check_every {
            checked = Instant::now();
            let _ = check_holders(&router, shard, settings.holder_grace_ms).await;
        }
    }
}

/// Gives back the references of `shard`'s outbox, one page; the rest wait for the next round.
async fn release_pending(router: &Router, shard: ShardId) -> MessagingResult<usize> {
    let request = Request::PendingMediaReleases { after: 0, limit: MEDIA_PAGE_MAX };
    let Response::MediaReleases(pending) = router.messaging(shard, request).await? else {
        return Ok(0);
    };
    let mut done = Vec::with_capacity(pending.len());
    for release in &pending {
        let PendingRelease { sequence, file, chat, sender, random_id } = *release;
        if media::release_holder(router, FileId::from_raw(file), holder(chat, sender, random_id)).await.is_err() {
            break;
        }
        done.push(sequence);
    }
    if !done.is_empty() {
        router.messaging(shard, Request::MediaReleasesDone { sequences: done.clone() }).await?;
    }
    Ok(done.len())
}

/// Confirms or releases `shard`'s unconfirmed references older than `grace_ms`, one page.
async fn check_holders(router: &Router, shard: ShardId, grace_ms: u64) -> MessagingResult<(usize, usize)> {
    let Ok(unconfirmed) = media::unconfirmed_holders(router, shard, grace_ms, MEDIA_PAGE_MAX).await else {
        return Ok((0, 0));
    };
    let mut by_chat: BTreeMap<ChatId, Vec<(FileId, Holder)>> = BTreeMap::new();
    for (file, holder) in unconfirmed {
        by_chat.entry(ChatId(holder.chat)).or_default().push((file, holder));
    }
    let (mut confirmed, mut released) = (0, 0);
    for (chat, holders) in by_chat {
        let keys = holders.iter().map(|(file, h)| (UserId(h.sender), RandomId(h.random_id), file.raw())).collect();
        let request = Request::CheckMediaHolders { chat, holders: keys };
        let Response::HolderStates(live) = router.messaging(router.shard_of(chat.vshard()), request).await? else {
            continue;
        };
        for ((file, holder), live) in holders.into_iter().zip(live) {
            if live {
                let _ = media::confirm_holder(router, file, holder).await;
                confirmed += 1;
            } else {
                let _ = media::release_holder(router, file, holder).await;
                released += 1;
            }
        }
    }
    Ok((confirmed, released))
}

fn holder(chat: ChatId, sender: UserId, random_id: RandomId) -> Holder {
    crate::messaging::api::holder(chat, sender, random_id)
}

/// The few media store calls the upkeep makes, over a [`Router`] (see the module doc).
mod media {
    use std::future::Future;

    use crate::engine::Router;
    use crate::ids::ShardId;
    use crate::media::requests::{MediaRequest, Reply};
    use crate::media::{FileId, Holder};
    use crate::shard::ShardRequest;

    /// Any failure: the store refused, or the shard could not take the request. The upkeep
    /// tries again on a later round either way.
    #[derive(Debug)]
    pub(super) struct Failed;

    fn call<T: Send + 'static, E: Send + 'static>(
        router: &Router,
        shard: ShardId,
        make: impl FnOnce(Reply<T, E>) -> MediaRequest,
    ) -> impl Future<Output = Result<T, Failed>> + Send + 'static {
        let answer = router.request_raw(shard, move |reply| ShardRequest::Media(make(reply)));
        async move {
            match answer.await {
                Ok(Ok(value)) => Ok(value),
                _ => Err(Failed),
            }
        }
    }

    fn shard_of(router: &Router, file: FileId) -> ShardId {
        router.shard_of(crate::media::route(file.vshard()))
    }

    pub(super) fn release_holder(
        router: &Router,
        file: FileId,
        holder: Holder,
    ) -> impl Future<Output = Result<bool, Failed>> + Send + 'static {
        call(router, shard_of(router, file), move |reply| MediaRequest::ReleaseHolder { file, holder, reply })
    }

    pub(super) fn confirm_holder(
        router: &Router,
        file: FileId,
        holder: Holder,
    ) -> impl Future<Output = Result<bool, Failed>> + Send + 'static {
        call(router, shard_of(router, file), move |reply| MediaRequest::ConfirmHolder { file, holder, reply })
    }

    pub(super) fn unconfirmed_holders(
        router: &Router,
        shard: ShardId,
        older_than_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(FileId, Holder)>, Failed>> + Send + 'static {
        call(router, shard, move |reply| MediaRequest::UnconfirmedHolders { older_than_ms, limit, reply })
    }
}
