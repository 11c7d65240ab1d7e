//! The `group` and `channel` subcommands.

use ferrogram_net::{Member, Role, UserId};

use super::format::unknown_user;
use super::messages::user_names;
use super::peer::resolve_user;
use super::{random_id, ChannelCommand, GroupCommand, Session};

pub fn group(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { common, title, members } => {
            let session = Session::open(&common)?;
            let members = members
                .iter()
                .map(|member| resolve_user(&session.client, member).map(|user| user.id))
                .collect::<anyhow::Result<Vec<UserId>>>()?;
            let chat = session.client.create_group(&title, &members)?;
            println!("chat:{chat}");
        }
        GroupCommand::Add { common, chat, peer } => {
            let session = Session::open(&common)?;
            let user = resolve_user(&session.client, &peer)?;
            session.client.add_member(chat.0, user.id)?;
            println!("added {peer} to chat:{}", chat.0);
        }
        GroupCommand::Remove { common, chat, peer } => {
            let session = Session::open(&common)?;
            let user = resolve_user(&session.client, &peer)?;
            session.client.remove_member(chat.0, user.id)?;
            println!("removed {peer} from chat:{}", chat.0);
        }
        GroupCommand::Promote { common, chat, peer } => {
            let session = Session::open(&common)?;
            let user = resolve_user(&session.client, &peer)?;
            session.client.promote_member(chat.0, user.id)?;
            println!("{peer} is now an admin of chat:{}", chat.0);
        }
        GroupCommand::Leave { common, chat } => {
            Session::open(&common)?.client.leave_chat(chat.0)?;
            println!("left chat:{}", chat.0);
        }
        GroupCommand::Members { common, chat } => {
            let session = Session::open(&common)?;
            let mut members = Vec::new();
            loop {
                let page = session.client.get_members(chat.0, members.last().map(|m: &Member| m.user), 1000)?;
                let last = page.len() < 1000;
                members.extend(page);
                if last {
                    break;
                }
            }
            let ids: Vec<UserId> = members.iter().map(|member| member.user).collect();
            let names = user_names(&session.client, &ids)?;
            for member in members {
                let role = match member.role {
                    Role::Creator => "creator",
                    Role::Admin => "admin",
                    Role::Member => "member",
                };
                let name = names.get(&member.user).cloned().unwrap_or_else(|| unknown_user(member.user));
                println!("{role:<8} {name} (user {})", member.user);
            }
        }
    }
    Ok(())
}

pub fn channel(command: ChannelCommand) -> anyhow::Result<()> {
    match command {
        ChannelCommand::Create { common, title } => {
            let chat = Session::open(&common)?.client.create_channel(&title)?;
            println!("chat:{chat}");
        }
        ChannelCommand::Post { common, chat, text } => {
            let sent = Session::open(&common)?.client.send_message(chat.0, random_id()?, &text.join(" "))?;
            println!("{}", sent.id);
        }
        ChannelCommand::Join { common, chat } => {
            Session::open(&common)?.client.join_chat(chat.0)?;
            println!("joined chat:{}", chat.0);
        }
        ChannelCommand::Leave { common, chat } => {
            Session::open(&common)?.client.leave_chat(chat.0)?;
            println!("left chat:{}", chat.0);
        }
    }
    Ok(())
}
