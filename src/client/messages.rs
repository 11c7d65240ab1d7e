//! The reading and sending subcommands: `dialogs`, `history`, `send`.

use std::collections::HashMap;

use ferrogram_net::{BlockingClient, Chat, ChatKind, DialogsOffset, MessageId, Request, Response, UserId};

use super::format::{display_name, history_line, local_offset_s, unknown_user};
use super::peer::{resolve_chat, Peer};
use super::{random_id, Common, Session};

/// `dialogs`: one line per chat, most recent first.
pub fn dialogs(common: &Common, limit: u32) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let client = &session.client;
    let page_max = client.welcome().limits.dialogs_page_max.max(1);
    let mut dialogs = Vec::new();
    let mut offset = None;
    while dialogs.len() < limit as usize {
        let wanted = (limit - dialogs.len() as u32).min(page_max);
        let page = client.get_dialogs(offset, wanted)?;
        let Some(last) = page.last() else { break };
        offset = Some(DialogsOffset { date: last.top_date, chat: last.chat });
        let complete = page.len() < wanted as usize;
        dialogs.extend(page);
        if complete {
            break;
        }
    }

    // One round trip for every chat's details, and one per page of users for the names of
    // private chats' peers.
    let chats: Vec<Option<Chat>> = client
        .call_many(dialogs.iter().map(|dialog| Request::GetChat { chat: dialog.chat }).collect())
        .into_iter()
        .map(|answer| match answer {
            Ok(Response::Chat(chat)) => Some(chat),
            _ => None,
        })
        .collect();
    let peers: Vec<UserId> = chats.iter().flatten().filter_map(|chat| chat.peer).collect();
    let names = user_names(client, &peers)?;
    for (dialog, chat) in dialogs.iter().zip(&chats) {
        let title = chat.as_ref().map_or_else(|| format!("chat:{}", dialog.chat), |chat| chat_title(chat, &names));
        println!("{title:<32} {:>5} unread  top #{:<8} chat:{}", dialog.unread, dialog.top_message, dialog.chat);
    }
    Ok(())
}

/// `history`: the latest `limit` messages of a chat, oldest first.
pub fn history(common: &Common, peer: &Peer, limit: u32) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let client = &session.client;
    let chat = resolve_chat(client, peer)?;
    let page_max = client.welcome().limits.history_page_max.max(1);
    let mut messages = Vec::new();
    let mut offset = MessageId(0);
    while messages.len() < limit as usize {
        let wanted = (limit - messages.len() as u32).min(page_max);
        let page = client.get_history(chat, offset, wanted)?;
        // Pages run newest first: the next one starts below this one's oldest message.
        let Some(oldest) = page.last() else { break };
        offset = oldest.id;
        let complete = page.len() < wanted as usize;
        messages.extend(page);
        if complete {
            break;
        }
    }
    messages.reverse();
    let senders: Vec<UserId> = messages.iter().map(|message| message.sender).collect();
    let names = user_names(client, &senders)?;
    for message in &messages {
        let sender = names.get(&message.sender).cloned().unwrap_or_else(|| unknown_user(message.sender));
        println!("{}", history_line(message, &sender, local_offset_s(message.date)));
    }
    Ok(())
}

/// `send`: sends one message and prints its id.
pub fn send(common: &Common, peer: &Peer, text: &str) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let chat = resolve_chat(&session.client, peer)?;
    let sent = session.client.send_message(chat, random_id()?, text)?;
    println!("{}", sent.id);
    Ok(())
}

/// Display names of `users`, fetched a page of ids at a time; users the server does not
/// return are left out (callers fall back to `user <id>`).
pub fn user_names(client: &BlockingClient, users: &[UserId]) -> anyhow::Result<HashMap<UserId, String>> {
    let mut wanted = users.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let page_max = (client.welcome().limits.ids_per_request_max as usize).max(1);
    let mut names = HashMap::with_capacity(wanted.len());
    for page in wanted.chunks(page_max) {
        for user in client.get_users(page)? {
            names.insert(user.id, display_name(&user));
        }
    }
    Ok(names)
}

/// A chat's name: the peer's for a private chat, the title otherwise.
pub fn chat_title(chat: &Chat, names: &HashMap<UserId, String>) -> String {
    match (chat.kind, chat.peer) {
        (ChatKind::Private, Some(peer)) => names.get(&peer).cloned().unwrap_or_else(|| unknown_user(peer)),
        (ChatKind::Channel, _) => format!("{} (channel)", chat.title),
        _ => chat.title.clone(),
    }
}
