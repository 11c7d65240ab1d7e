//! `chat`: an interactive session. New messages (of one chat, or of every chat) print as they
//! arrive, typing shows as "<name> is typing…", and each line typed is sent. When the update
//! stream reports lost events (`Resync`) the session catches up with `GetDifference` so that
//! nothing is silently skipped.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;
use ferrogram_net::{
    BlockingClient, ChatId, ClientError, ErrorCode, LiveEvent, Message, Pts, Request, Response, Sequenced, Update,
    UserId,
};

use super::format::{display_name, history_line, local_offset_s, unknown_user};
use super::messages::chat_title;
use super::peer::{resolve_chat, Peer};
use super::{random_id, Common, Session};

/// Lines and events waiting for the main thread; past this the readers wait, and the update
/// stream's own bound (with its `Resync`) takes over.
const INPUT_QUEUE_MAX: usize = 256;
/// How often the event forwarder checks whether the session is over.
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A user typing is shown at most this often per chat.
const TYPING_SHOWN_INTERVAL: Duration = Duration::from_secs(5);
/// Updates asked for per `GetDifference` page while catching up, and the pages one catch-up
/// reads before giving up (a server that keeps answering `slice` must not loop forever).
const CATCH_UP_PAGE_UPDATES: u32 = 100;
const CATCH_UP_PAGES_MAX: usize = 1000;
/// The longest line sent; longer input is refused with a message rather than cut.
const LINE_BYTES_MAX: usize = 64 * 1024;

pub fn run(common: &Common, peer: Option<&Peer>) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let client = &session.client;
    let mut view = View {
        me: session.me.user.id,
        target: None,
        box_pts: session.me.state.pts,
        answered: BTreeSet::new(),
        subscribed: HashMap::new(),
        names: HashMap::new(),
        titles: HashMap::new(),
        typing_shown: HashMap::new(),
    };
    view.names.insert(view.me, display_name(&session.me.user));
    match peer {
        Some(peer) => {
            let chat = client.get_chat(resolve_chat(client, peer)?)?;
            if chat.fanout_on_read {
                // A channel's posts are not copied into each member's box: they stream only to
                // connections that subscribe.
                view.subscribed.insert(chat.id, client.subscribe_chat(chat.id)?);
            }
            let title = view.title(client, chat.id);
            view.target = Some(chat.id);
            println!("chatting with {title}: type a message and press enter; /quit leaves");
            if let Some(peer) = chat.peer {
                // Asking for the peer's presence also has the server tell us when it changes.
                if let Ok(Response::Presence { online, .. }) = client.call(Request::GetPresence { user: peer }) {
                    println!("{title} is {}", if online { "online" } else { "offline" });
                }
            }
        }
        None => {
            let page_max = client.welcome().limits.dialogs_page_max;
            let channels: Vec<ChatId> = client
                .get_dialogs(None, page_max)?
                .into_iter()
                .filter(|dialog| dialog.fanout_on_read)
                .map(|dialog| dialog.chat)
                .collect();
            for chat in channels {
                view.subscribed.insert(chat, client.subscribe_chat(chat)?);
            }
            println!("following every chat (read-only; `chat <peer>` to write); /quit leaves");
        }
    }

    // Lines and live events land in one queue so the main thread handles them in order.
    let (sender, receiver) = mpsc::sync_channel(INPUT_QUEUE_MAX);
    read_lines(sender.clone())?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| forward_events(client, &stop, sender));
        // `receiver` is dropped when `handle` returns, which unblocks a forwarder waiting for
        // room in the queue, so the scope can end.
        let result = view.handle(client, receiver);
        stop.store(true, Ordering::Relaxed);
        result
    })
}

enum Input {
    Line(String),
    StdinClosed,
    // Boxed: a live event with its message body is some 300 bytes, the other inputs a few.
    Event(Box<LiveEvent>),
    Disconnected,
}

/// What the session shows and what it has seen.
struct View {
    me: UserId,
    /// The chat lines are sent to; `None` follows every chat, read-only.
    target: Option<ChatId>,
    /// The last box update shown, so a catch-up starts after it and replays are skipped.
    box_pts: Pts,
    /// Box pts of this session's own messages, from their answers: the server does not send a
    /// connection its own sends as updates (PROTOCOL §5.2). Each is taken as seen once the
    /// stream reaches the pts before it.
    answered: BTreeSet<Pts>,
    /// Subscribed channels and the last of their updates shown.
    subscribed: HashMap<ChatId, Pts>,
    names: HashMap<UserId, String>,
    titles: HashMap<ChatId, String>,
    typing_shown: HashMap<(ChatId, UserId), Instant>,
}

impl View {
    fn handle(&mut self, client: &BlockingClient, inputs: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        while let Ok(input) = inputs.recv() {
            match input {
                Input::Line(line) => {
                    let line = line.trim();
                    if line == "/quit" {
                        return Ok(());
                    }
                    self.send(client, line)?;
                }
                Input::StdinClosed => return Ok(()),
                Input::Event(event) => self.show_event(client, *event)?,
                Input::Disconnected => break,
            }
        }
        match client.connection_error() {
            Some(error) => bail!("the server closed the connection: {error}"),
            None => bail!("the server closed the connection"),
        }
    }

    fn send(&mut self, client: &BlockingClient, line: &str) -> anyhow::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let Some(chat) = self.target else {
            eprintln!("following every chat is read-only: run `ferrogram chat <peer>` to write");
            return Ok(());
        };
        if line.len() > LINE_BYTES_MAX {
            eprintln!("error: that line is {} bytes; the limit is {LINE_BYTES_MAX}", line.len());
            return Ok(());
        }
        let random_id = random_id()?;
        match client.send_message(chat, random_id, line) {
            Ok(sent) => {
                // A message to a chat synced into boxes comes back only as this answer: show
                // it as the others see it. (A channel post comes back on the subscription.)
                if let Some(pts) = sent.sender_pts {
                    self.answered.insert(pts);
                    self.skip_answered();
                    let message = Message {
                        id: sent.id,
                        chat,
                        sender: self.me,
                        date: sent.date,
                        random_id,
                        text: line.to_owned(),
                        reply_to: None,
                        forwarded_from: None,
                        edit_date: None,
                        deleted: false,
                        media: None,
                    };
                    let update = Update::NewMessage { chat, id: sent.id, sender: self.me, date: sent.date };
                    self.show_update(client, &Sequenced { pts, date: sent.date, update }, Some(&message));
                }
                Ok(())
            }
            // The session goes on after a refused message (a flood wait, a text too long).
            Err(error @ ClientError::Server(_)) => {
                eprintln!("error: {error}");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn show_event(&mut self, client: &BlockingClient, event: LiveEvent) -> anyhow::Result<()> {
        match event {
            LiveEvent::Box { update, message } => {
                if update.pts <= self.box_pts {
                    return Ok(()); // Already shown by a catch-up.
                }
                self.box_pts = update.pts;
                self.skip_answered();
                self.show_update(client, &update, message.as_ref());
            }
            LiveEvent::Chat { chat, update, message } => {
                let seen = self.subscribed.entry(chat).or_default();
                if update.pts <= *seen {
                    return Ok(());
                }
                *seen = update.pts;
                self.show_update(client, &update, message.as_ref());
            }
            LiveEvent::Typing { chat, user } => {
                if user == self.me || !self.follows(chat) {
                    return Ok(());
                }
                let now = Instant::now();
                let shown = self.typing_shown.get(&(chat, user));
                if shown.is_none_or(|shown| now.duration_since(*shown) >= TYPING_SHOWN_INTERVAL) {
                    self.typing_shown.insert((chat, user), now);
                    let name = self.name(client, user);
                    println!("{}{name} is typing…", self.prefix(client, chat));
                }
            }
            LiveEvent::Presence { user, online, .. } => {
                let name = self.name(client, user);
                println!("{name} is {}", if online { "online" } else { "offline" });
            }
            LiveEvent::Resync => self.catch_up(client)?,
            LiveEvent::Revoked => bail!("this login was revoked; log in again"),
        }
        Ok(())
    }

    /// Prints a new message; other updates (reads, edits, membership) are not shown.
    fn show_update(&mut self, client: &BlockingClient, update: &Sequenced, message: Option<&Message>) {
        let (Update::NewMessage { chat, .. }, Some(message)) = (&update.update, message) else { return };
        if !self.follows(*chat) {
            return;
        }
        let sender = self.name(client, message.sender);
        println!("{}{}", self.prefix(client, *chat), history_line(message, &sender, local_offset_s(message.date)));
    }

    /// Reads the updates the stream dropped: the box's with `GetDifference`, each subscribed
    /// channel's with `GetChatDifference`.
    fn catch_up(&mut self, client: &BlockingClient) -> anyhow::Result<()> {
        for _ in 0..CATCH_UP_PAGES_MAX {
            let difference = match client.get_difference(self.box_pts, CATCH_UP_PAGE_UPDATES) {
                Ok(difference) => difference,
                Err(error) if error.code() == Some(ErrorCode::DifferenceTooLong) => {
                    self.box_pts = client.get_state()?.pts;
                    eprintln!("(too far behind to show every missed message; `history` has them)");
                    break;
                }
                Err(error) => return Err(error.into()),
            };
            for update in &difference.updates {
                let message = message_of(&update.update, &difference.messages);
                self.show_update(client, update, message);
            }
            self.box_pts = difference.state.pts;
            self.skip_answered();
            if !difference.slice {
                break;
            }
        }
        let channels: Vec<(ChatId, Pts)> = self.subscribed.iter().map(|(chat, pts)| (*chat, *pts)).collect();
        for (chat, mut pts) in channels {
            for _ in 0..CATCH_UP_PAGES_MAX {
                let difference = client.get_chat_difference(chat, pts, CATCH_UP_PAGE_UPDATES)?;
                for update in &difference.updates {
                    let message = message_of(&update.update, &difference.messages);
                    self.show_update(client, update, message);
                }
                pts = difference.pts;
                if !difference.slice {
                    break;
                }
            }
            self.subscribed.insert(chat, pts);
        }
        Ok(())
    }

    /// Moves `box_pts` over the answered sends that directly follow it; one further on waits
    /// for the updates before it, still on their way.
    fn skip_answered(&mut self) {
        while let Some(&first) = self.answered.first() {
            if first.0 > self.box_pts.0 + 1 {
                break;
            }
            self.answered.pop_first();
            self.box_pts = self.box_pts.max(first);
        }
    }

    fn follows(&self, chat: ChatId) -> bool {
        self.target.is_none_or(|target| target == chat)
    }

    /// Following every chat, each line starts with the chat's name.
    fn prefix(&mut self, client: &BlockingClient, chat: ChatId) -> String {
        match self.target {
            Some(_) => String::new(),
            None => format!("{} | ", self.title(client, chat)),
        }
    }

    /// A user's name, fetched once. A failed lookup shows the id rather than ending the
    /// session.
    fn name(&mut self, client: &BlockingClient, user: UserId) -> String {
        if let Some(name) = self.names.get(&user) {
            return name.clone();
        }
        let name = match client.get_users(&[user]) {
            Ok(users) => users.first().map_or_else(|| unknown_user(user), display_name),
            Err(_) => return unknown_user(user),
        };
        self.names.insert(user, name.clone());
        name
    }

    fn title(&mut self, client: &BlockingClient, chat: ChatId) -> String {
        if let Some(title) = self.titles.get(&chat) {
            return title.clone();
        }
        let Ok(details) = client.get_chat(chat) else { return format!("chat:{chat}") };
        if let Some(peer) = details.peer {
            let name = self.name(client, peer);
            self.names.insert(peer, name);
        }
        let title = chat_title(&details, &self.names);
        self.titles.insert(chat, title.clone());
        title
    }
}

/// The body of the message a `NewMessage` update refers to, among those a difference carried.
fn message_of<'a>(update: &Update, messages: &'a [Message]) -> Option<&'a Message> {
    let Update::NewMessage { chat, id, .. } = update else { return None };
    messages.iter().find(|message| message.chat == *chat && message.id == *id)
}

/// Reads standard input on a thread of its own: a blocking read cannot be interrupted, so
/// the thread is left behind when the session ends (the process exits soon after).
fn read_lines(sender: mpsc::SyncSender<Input>) -> anyhow::Result<()> {
    std::thread::Builder::new().name("ferrogram-chat-input".into()).spawn(move || {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            let input = match lines.next() {
                Some(Ok(line)) => Input::Line(line),
                Some(Err(error)) => {
                    eprintln!("error: reading standard input: {error}");
                    Input::StdinClosed
                }
                None => Input::StdinClosed,
            };
            let ended = matches!(input, Input::StdinClosed);
            if sender.send(input).is_err() || ended {
                return;
            }
        }
    })?;
    Ok(())
}

/// Moves live events into the input queue until the session ends or the connection does.
fn forward_events(client: &BlockingClient, stop: &AtomicBool, sender: mpsc::SyncSender<Input>) {
    while !stop.load(Ordering::Relaxed) {
        let input = match client.next_update_timeout(EVENT_POLL_INTERVAL) {
            Some(event) => Input::Event(Box::new(event)),
            None if client.updates().is_ended() => Input::Disconnected,
            None => continue,
        };
        let ended = matches!(input, Input::Disconnected);
        if sender.send(input).is_err() || ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogram_net::{MessageId, UnixMs};

    // A difference's NewMessage update finds its own message body, not another chat's message
    // with the same id.
    #[test]
    fn updates_find_their_message() {
        let message = |chat, id| Message {
            id: MessageId(id),
            chat: ChatId(chat),
            sender: UserId(1),
            date: UnixMs(0),
            random_id: 0,
            text: format!("{chat}/{id}"),
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: None,
        };
        let messages = [message(1, 5), message(2, 5)];
        let update = Update::NewMessage { chat: ChatId(2), id: MessageId(5), sender: UserId(1), date: UnixMs(0) };
        assert_eq!(message_of(&update, &messages).map(|found| found.text.as_str()), Some("2/5"));
        let other = Update::ReadOutbox { chat: ChatId(2), max_id: MessageId(5) };
        assert!(message_of(&other, &messages).is_none());
    }

    // Own sends are answered, not streamed: their pts count as seen once the stream reaches
    // the pts before them, and not earlier, so a catch-up never skips an update in between.
    #[test]
    fn answered_sends_are_seen_in_order() {
        let mut view = View {
            me: UserId(1),
            target: None,
            box_pts: Pts(5),
            answered: BTreeSet::new(),
            subscribed: HashMap::new(),
            names: HashMap::new(),
            titles: HashMap::new(),
            typing_shown: HashMap::new(),
        };
        view.answered.extend([Pts(6), Pts(8), Pts(9)]);
        view.skip_answered();
        assert_eq!(view.box_pts, Pts(6), "6 follows 5; 8 waits for 7");
        assert_eq!(view.answered.iter().copied().collect::<Vec<_>>(), [Pts(8), Pts(9)]);
        view.box_pts = Pts(7); // 7 arrives live
        view.skip_answered();
        assert_eq!(view.box_pts, Pts(9));
        assert!(view.answered.is_empty());
        // An answer the stream already passed (a catch-up read it) is dropped.
        view.answered.insert(Pts(4));
        view.skip_answered();
        assert_eq!((view.box_pts, view.answered.len()), (Pts(9), 0));
    }
}
