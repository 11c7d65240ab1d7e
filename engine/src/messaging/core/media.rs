//! The core's requests about media messages: a message's media for a reader who can see it,
//! the release outbox (see `messaging/media.rs`), and the leak sweep's question about keys.

use super::*;
use crate::messaging::media::PendingRelease;

impl MessagingCore {
    pub(super) fn dispatch_media(
        &mut self,
        origin: Origin,
        request: Request,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        match request {
            Request::GetMessageMedia { chat, user, id } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let message = state.visible(user, id).ok_or(MessagingError::UnknownMessage(chat, id))?;
                let media = message.media.as_deref().cloned().ok_or(MessagingError::NoMedia(chat, id))?;
                // Answered once the message is durable: a reader never fetches a file through
                // a message recovery could lose.
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Media(media)));
            }
            Request::PendingMediaReleases { after, limit } => {
                let pending: Vec<PendingRelease> = self
                    .state
                    .media_releases
                    .pending
                    .range(after.saturating_add(1)..)
                    .take(limit.clamp(1, MEDIA_PAGE_MAX))
                    .map(|(_, release)| *release)
                    .collect();
                // Only durable tombstones' releases: the file's reference goes back after the
                // tombstone survives a crash, never before.
                self.reply_after_acked(self.last_lsn, origin, Ok(Response::MediaReleases(pending)));
            }
            Request::MediaReleasesDone { sequences } => {
                if sequences.len() > MEDIA_PAGE_MAX {
                    let length = sequences.len();
                    return Err(MessagingError::TooLong { what: "media releases", length, limit: MEDIA_PAGE_MAX });
                }
                let pending = &self.state.media_releases.pending;
                let mut done: Vec<u64> = sequences.into_iter().filter(|s| pending.contains_key(s)).collect();
                done.sort_unstable();
                done.dedup();
                let lsn = if done.is_empty() {
                    self.last_lsn
                } else {
                    self.commit_plain(Event::MediaReleasesDone { sequences: done }, journal)?
                };
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
            }
            Request::CheckMediaHolders { chat, holders } => {
                if holders.len() > MEDIA_PAGE_MAX {
                    let length = holders.len();
                    return Err(MessagingError::TooLong { what: "media holders", length, limit: MEDIA_PAGE_MAX });
                }
                self.live.holders_refused.retain(|_, until| *until > now);
                let state = self.state.chats.get(&chat);
                let answers: Vec<bool> = holders
                    .iter()
                    .map(|&(sender, random_id, file)| {
                        state
                            .and_then(|state| {
                                let id = state.media_index.get(&(sender, random_id))?;
                                state.message(*id)?.media.as_ref()
                            })
                            .is_some_and(|media| media.file == file)
                    })
                    .collect();
                let until = UnixMs(now.0 + HOLDER_REFUSAL_MS);
                for (&(sender, random_id, _), _) in holders.iter().zip(&answers).filter(|(_, live)| !**live) {
                    self.live.holders_refused.insert((chat, sender, random_id), until);
                }
                // After the chat's newest record is durable: a message appended but not yet
                // durable counts as live (it may still be acknowledged).
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::HolderStates(answers)));
            }
            other => unreachable!("not a media request: {other:?}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::protocol::SendRequest;

    const NOW: u64 = 1_700_000_000_000;
    const FILE: u64 = 12_345 << 12 | 9;

    /// Keeps every record, to replay them.
    #[derive(Default)]
    struct Recording(Vec<Vec<u8>>);

    impl Journal for Recording {
        fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError> {
            let first = Lsn(self.0.len() as u64 + 1);
            self.0.extend(records.iter().map(|(_, _, payload)| payload.to_vec()));
            Ok(first)
        }
    }

    fn call(core: &mut MessagingCore, journal: &mut Recording, request: Request) -> MessagingResult<Response> {
        call_at(core, journal, request, UnixMs(NOW + journal.0.len() as u64))
    }

    fn call_at(
        core: &mut MessagingCore,
        journal: &mut Recording,
        request: Request,
        now: UnixMs,
    ) -> MessagingResult<Response> {
        let origin = Origin { shard: ShardId(0), request: journal.0.len() as u64 };
        core.handle(origin, request, now, journal);
        let last = Lsn(journal.0.len() as u64);
        core.advance(last, last, journal);
        core.take_effects().replies.pop().expect("an answer").1
    }

    fn media(file: u64) -> MessageMedia {
        MessageMedia {
            kind: MediaKind::Photo,
            file,
            access_hash: 77,
            size: 1234,
            name: "cat.jpg".into(),
            mime_type: "image/jpeg".into(),
        }
    }

    fn send(chat: ChatId, sender: UserId, random_id: u64, media: Option<MessageMedia>) -> Request {
        Request::Send(SendRequest {
            chat,
            sender,
            session: None,
            random_id: RandomId(random_id),
            text: if media.is_some() { "a cat".into() } else { "text".into() },
            reply_to: None,
            forwarded_from: None,
            media,
        })
    }

    fn sign_up(core: &mut MessagingCore, journal: &mut Recording, phone: &str) -> UserId {
        let request = Request::SignUp { phone: phone.into(), first_name: "U".into(), last_name: String::new() };
        let Ok(Response::User(user)) = call(core, journal, request) else { panic!("sign up") };
        user
    }

    fn pending(core: &mut MessagingCore, journal: &mut Recording) -> Vec<PendingRelease> {
        match call(core, journal, Request::PendingMediaReleases { after: 0, limit: 100 }) {
            Ok(Response::MediaReleases(pending)) => pending,
            other => panic!("pending releases answered {other:?}"),
        }
    }

    fn rebuilt(journal: &Recording, table: &Arc<VShardTable>) -> MessagingCore {
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        for payload in &journal.0 {
            core.replay(EVENT_KIND, payload).expect("replays");
        }
        core.resume(0, Lsn(journal.0.len() as u64));
        core
    }

    /// Proves a media message is read only by who can see it, a tombstone queues its file
    /// reference's release exactly once in a durable outbox that replay and checkpoints keep,
    /// and the leak sweep's question answers by key and refuses a key it answered `false` for.
    #[test]
    fn media_messages_release_their_files_through_the_outbox() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        core.resume(0, Lsn::ZERO);
        let mut journal = Recording::default();
        let (alice, bob, carol) = (
            sign_up(&mut core, &mut journal, "+15550000001"),
            sign_up(&mut core, &mut journal, "+15550000002"),
            sign_up(&mut core, &mut journal, "+15550000003"),
        );
        let Ok(Response::Chat(chat)) = call(&mut core, &mut journal, Request::OpenPrivate { user: alice, peer: bob })
        else {
            panic!("open private")
        };
        let Ok(Response::Sent(ack)) = call(&mut core, &mut journal, send(chat, alice, 7, Some(media(FILE)))) else {
            panic!("media send")
        };
        let Ok(Response::Sent(text)) = call(&mut core, &mut journal, send(chat, alice, 8, None)) else {
            panic!("text send")
        };
        let get = |id, user| Request::GetMessageMedia { chat, user, id };
        assert_eq!(call(&mut core, &mut journal, get(ack.id, bob)), Ok(Response::Media(media(FILE))));
        assert_eq!(call(&mut core, &mut journal, get(ack.id, carol)), Err(MessagingError::NotMember(carol)));
        assert_eq!(call(&mut core, &mut journal, get(text.id, bob)), Err(MessagingError::NoMedia(chat, text.id)));
        let Ok(Response::Messages(history)) =
            call(&mut core, &mut journal, Request::GetMessages { chat, user: bob, ids: vec![ack.id] })
        else {
            panic!("get messages")
        };
        assert_eq!(history[0].media.as_deref(), Some(&media(FILE)), "history carries the media");
        // A retry is the same message; the same random_id with another file is not.
        let Ok(Response::Sent(retry)) = call(&mut core, &mut journal, send(chat, alice, 7, Some(media(FILE)))) else {
            panic!("retry")
        };
        assert!(retry.duplicate && retry.id == ack.id);
        assert_eq!(
            call(&mut core, &mut journal, send(chat, alice, 7, Some(media(FILE + 4096)))),
            Err(MessagingError::RandomIdReused)
        );
        // Caption limits.
        let mut long = send(chat, alice, 20, Some(media(FILE)));
        if let Request::Send(request) = &mut long {
            request.text = "x".repeat(CAPTION_CHARS_MAX + 1);
        }
        assert!(matches!(call(&mut core, &mut journal, long), Err(MessagingError::TooLong { what: "caption", .. })));

        // The leak sweep's question: by key and file.
        let check = Request::CheckMediaHolders {
            chat,
            holders: vec![(alice, RandomId(7), FILE), (alice, RandomId(9), FILE), (alice, RandomId(7), FILE + 1)],
        };
        assert_eq!(call(&mut core, &mut journal, check), Ok(Response::HolderStates(vec![true, false, false])));
        assert_eq!(
            call(&mut core, &mut journal, send(chat, alice, 9, Some(media(FILE)))),
            Err(MessagingError::FileUnavailable),
            "a key the sweep is releasing is refused to media sends"
        );

        // A checkpoint keeps the media.
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&core.snapshot().to_vec()).expect("restores");
        restored.resume(0, Lsn(journal.0.len() as u64));
        assert_eq!(call(&mut restored, &mut journal, get(ack.id, bob)), Ok(Response::Media(media(FILE))));
        // And so does a checkpoint of the restored core, which finds media messages by the
        // index restore rebuilt.
        let mut again = MessagingCore::new(ShardId(0), table.clone());
        again.restore(&restored.snapshot().to_vec()).expect("restores");
        again.resume(0, Lsn(journal.0.len() as u64));
        assert_eq!(call(&mut again, &mut journal, get(ack.id, bob)), Ok(Response::Media(media(FILE))));

        // The tombstone queues the release once, however often the delete is asked for.
        assert!(pending(&mut core, &mut journal).is_empty());
        for _ in 0..2 {
            let delete = Request::Delete { chat, user: alice, ids: vec![ack.id], for_everyone: true };
            assert_eq!(call(&mut core, &mut journal, delete), Ok(Response::Done));
        }
        let queued = pending(&mut core, &mut journal);
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(
            (queued[0].file, queued[0].chat, queued[0].sender, queued[0].random_id),
            (FILE, chat, alice, RandomId(7))
        );
        assert_eq!(call(&mut core, &mut journal, get(ack.id, bob)), Err(MessagingError::UnknownMessage(chat, ack.id)));
        let check = Request::CheckMediaHolders { chat, holders: vec![(alice, RandomId(7), FILE)] };
        assert_eq!(call(&mut core, &mut journal, check), Ok(Response::HolderStates(vec![false])));

        // Replay and a checkpoint both keep the outbox.
        assert_eq!(pending(&mut rebuilt(&journal, &table), &mut journal), queued);
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&core.snapshot().to_vec()).expect("restores");
        restored.resume(0, Lsn(journal.0.len() as u64));
        assert_eq!(pending(&mut restored, &mut journal), queued);

        // Done (twice: a report after a crash) empties it, for good.
        for _ in 0..2 {
            let done = Request::MediaReleasesDone { sequences: vec![queued[0].sequence] };
            assert_eq!(call(&mut core, &mut journal, done), Ok(Response::Done));
        }
        assert!(pending(&mut core, &mut journal).is_empty());
        assert!(pending(&mut rebuilt(&journal, &table), &mut journal).is_empty());
    }

    /// Proves a media key (chat, sender, random_id) keys one file reference at a time: once
    /// the idempotency window has forgotten it, a new media send under it is refused while the
    /// old message is live or its release is queued (else one release would take the new
    /// message's reference, and the index, hence checkpoints, would lose one of the two), and
    /// accepted once the release is done. A plain message may take the key at any time.
    #[test]
    fn a_media_key_holds_one_reference_at_a_time() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        core.resume(0, Lsn::ZERO);
        let mut journal = Recording::default();
        let (alice, bob) =
            (sign_up(&mut core, &mut journal, "+15550000001"), sign_up(&mut core, &mut journal, "+15550000002"));
        let Ok(Response::Chat(chat)) = call(&mut core, &mut journal, Request::OpenPrivate { user: alice, peer: bob })
        else {
            panic!("open private")
        };
        let Ok(Response::Sent(first)) = call(&mut core, &mut journal, send(chat, alice, 7, Some(media(FILE)))) else {
            panic!("media send")
        };
        // A day and more later the window has forgotten the key, but the message holds it.
        let later = |days: u64| UnixMs(NOW + 1_000 + days * IDEMPOTENCY_WINDOW_MS);
        for file in [FILE, FILE + 4096] {
            let again = send(chat, alice, 7, Some(media(file)));
            assert_eq!(call_at(&mut core, &mut journal, again, later(1)), Err(MessagingError::RandomIdReused));
        }
        let Ok(Response::Sent(plain)) = call_at(&mut core, &mut journal, send(chat, alice, 7, None), later(1)) else {
            panic!("a plain message under the key")
        };
        assert!(!plain.duplicate);
        // Deleted, its release queued: still taken.
        let delete = Request::Delete { chat, user: alice, ids: vec![first.id], for_everyone: true };
        assert_eq!(call_at(&mut core, &mut journal, delete, later(2)), Ok(Response::Done));
        let queued = pending(&mut core, &mut journal);
        assert_eq!(queued.len(), 1, "{queued:?}");
        let again = send(chat, alice, 7, Some(media(FILE)));
        assert_eq!(call_at(&mut core, &mut journal, again, later(3)), Err(MessagingError::RandomIdReused));
        // Released: the key is free for one new media message, whose media checkpoints keep.
        let done = Request::MediaReleasesDone { sequences: vec![queued[0].sequence] };
        assert_eq!(call_at(&mut core, &mut journal, done, later(3)), Ok(Response::Done));
        let again = send(chat, alice, 7, Some(media(FILE + 4096)));
        let Ok(Response::Sent(second)) = call_at(&mut core, &mut journal, again, later(4)) else {
            panic!("media send under a released key")
        };
        assert!(!second.duplicate && second.id > plain.id);
        let check = Request::CheckMediaHolders { chat, holders: vec![(alice, RandomId(7), FILE + 4096)] };
        assert_eq!(call_at(&mut core, &mut journal, check, later(4)), Ok(Response::HolderStates(vec![true])));
        // Edited, it goes into checkpoints whole rather than in columns; its media stays apart.
        let edit = Request::Edit { chat, user: alice, id: second.id, text: "another cat".into() };
        assert_eq!(call_at(&mut core, &mut journal, edit, later(4)), Ok(Response::Done));
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&core.snapshot().to_vec()).expect("restores");
        restored.resume(0, Lsn(journal.0.len() as u64));
        let get = Request::GetMessageMedia { chat, user: bob, id: second.id };
        assert_eq!(call_at(&mut restored, &mut journal, get, later(4)), Ok(Response::Media(media(FILE + 4096))));
        let get = Request::GetMessages { chat, user: bob, ids: vec![second.id] };
        let Ok(Response::Messages(restored_messages)) = call_at(&mut restored, &mut journal, get, later(4)) else {
            panic!("get messages")
        };
        assert_eq!(restored_messages[0].text, "another cat");
        assert_eq!(restored_messages[0].media.as_deref(), Some(&media(FILE + 4096)));
        // A restore and a replay both know the key is taken.
        for mut recovered in [restored, rebuilt(&journal, &table)] {
            let again = send(chat, alice, 7, Some(media(FILE)));
            assert_eq!(call_at(&mut recovered, &mut journal, again, later(6)), Err(MessagingError::RandomIdReused));
        }
    }
}
