//! The command-line client (`ferrogram login`, `send`, `chat`, ...): each subcommand
//! connects with `ferrogram-net`'s blocking client, acts as the account saved in a profile,
//! and prints what it got.

mod account;
mod chat;
mod devices;
mod format;
mod groups;
mod media;
mod messages;
mod peer;
mod profile;
mod progress;

use std::path::PathBuf;

use anyhow::Context;
use ferrogram_net::client::{connect_blocking, Authorized};
use ferrogram_net::transfer::{PARTS_IN_FLIGHT_DEFAULT, RANGES_IN_FLIGHT_DEFAULT};
use ferrogram_net::BlockingClient;

use self::devices::{KindArgument, MuteArguments};
use self::peer::{ChatArgument, Peer};
use self::profile::Profile;
pub use self::progress::human_bytes;

/// The server a profile without one talks to.
pub const SERVER_DEFAULT: &str = "127.0.0.1:7450";

/// Flags every client subcommand takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// The server, as host:port [default: the profile's server, else 127.0.0.1:7450].
    #[arg(long, env = "FERROGRAM_SERVER")]
    pub server: Option<String>,
    /// The saved login to act as (see `login`); kept in $FERROGRAM_HOME/profiles, else
    /// ~/.config/ferrogram/profiles.
    #[arg(long, default_value = "default")]
    pub profile: String,
}

// The client's subcommands, meant to be flattened into the binary's own (`#[command(flatten)]`).
// No doc comment: clap would take it as the about text of the command it is flattened into.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in with a phone number, signing up if it has no account, and save the login in
    /// the profile.
    Login {
        #[command(flatten)]
        common: Common,
        /// E.164: `+` and 8 to 15 digits.
        #[arg(long)]
        phone: String,
        /// The login code; asked for on standard input when not given.
        #[arg(long)]
        code: Option<String>,
        /// "First Last": needed to sign up a phone that has no account yet.
        #[arg(long)]
        name: Option<String>,
    },
    /// Log out: revoke the profile's login on the server and forget its token.
    Logout {
        #[command(flatten)]
        common: Common,
    },
    /// Show the logged-in account.
    Whoami {
        #[command(flatten)]
        common: Common,
    },
    /// Set or clear the account's @username.
    #[command(subcommand)]
    Username(UsernameCommand),
    /// List the account's logins (the current one marked), or revoke one.
    Sessions {
        #[command(flatten)]
        common: Common,
        /// The id of a login to revoke.
        #[arg(long, value_name = "ID")]
        revoke: Option<u64>,
    },
    /// List chats, most recent first: title, unread count, top message.
    Dialogs {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print a chat's latest messages, oldest first.
    History {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID.
        peer: Peer,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send a message and print its id.
    Send {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID.
        peer: Peer,
        /// The text; several words are joined with spaces.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Chat interactively: print new messages as they arrive (of one chat, or of all), and
    /// send each line typed. `/quit` or end of input leaves.
    Chat {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID; all chats (read-only) when left out.
        peer: Option<Peer>,
    },
    /// Create and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Create, post to, join and leave channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// List the devices registered for push notifications (kind, flags, token), or register
    /// or unregister one.
    #[command(args_conflicts_with_subcommands = true)]
    Devices {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Show a chat's notification settings, or change them: mute for a while or for ever,
    /// unmute, and show or hide previews (sender and text) in pushes.
    Notify {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID.
        peer: Peer,
        #[command(flatten)]
        mute: MuteArguments,
        /// Whether pushes show the sender and the start of the text.
        #[arg(long, value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
        previews: Option<bool>,
    },
    /// Send a file: upload it (with a progress bar), send it to the peer as a photo or
    /// document, and print the message's id. Pictures (jpg, jpeg, png, gif, webp) go as
    /// photos, anything else as a document.
    Upload {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID.
        peer: Peer,
        /// The file to send.
        path: PathBuf,
        /// The message's text (at most 1024 characters).
        #[arg(long, default_value = "")]
        caption: String,
        /// Send as a photo whatever the extension.
        #[arg(long)]
        photo: bool,
        /// The name shown with the file [default: the path's file name].
        #[arg(long)]
        name: Option<String>,
        /// The MIME type shown with the file, e.g. image/jpeg [default: from the extension,
        /// else application/octet-stream].
        #[arg(long)]
        mime: Option<String>,
        /// Part size in KiB: 1, 2, 4, ... or 512.
        #[arg(long, default_value_t = 512)]
        part_kib: usize,
        /// Parts sent ahead of the oldest unanswered one.
        #[arg(long, default_value_t = PARTS_IN_FLIGHT_DEFAULT)]
        parts_in_flight: usize,
    },
    /// Download the file of a media message (with a progress bar).
    Download {
        #[command(flatten)]
        common: Common,
        /// @username, +phone or chat:ID: the chat the message is in.
        peer: Peer,
        /// The message's id, as `history` and `upload` show it.
        #[arg(value_name = "MESSAGE-ID")]
        message: u64,
        /// Where to write it [default: the file's name from the message, in the current
        /// directory]; `-` writes to standard output.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
        /// 1 MiB ranges asked for ahead of the oldest unanswered one.
        #[arg(long, default_value_t = RANGES_IN_FLIGHT_DEFAULT)]
        ranges_in_flight: usize,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum DevicesCommand {
    /// Register this device's push token (again, to change its flags).
    Register {
        #[command(flatten)]
        common: Common,
        /// The push service the token belongs to.
        #[arg(long, value_enum)]
        kind: KindArgument,
        /// The token the push service gave the app.
        #[arg(long)]
        token: String,
        /// A development build: APNs pushes go to the sandbox.
        #[arg(long)]
        sandbox: bool,
        /// No silent pushes for muted chats.
        #[arg(long)]
        no_muted: bool,
    },
    /// Stop pushes to a device.
    Unregister {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        kind: KindArgument,
        #[arg(long)]
        token: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum UsernameCommand {
    /// Claim @NAME for the account.
    Set {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Remove the account's username.
    Clear {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group with the given members (@username or +phone) and print its chat id.
    Create {
        #[command(flatten)]
        common: Common,
        title: String,
        members: Vec<Peer>,
    },
    /// Add a user to a group.
    Add {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
        peer: Peer,
    },
    /// Remove a user from a group.
    Remove {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
        peer: Peer,
    },
    /// Make a member an admin.
    Promote {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
        peer: Peer,
    },
    /// Leave a group.
    Leave {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
    },
    /// List a group's members and their roles.
    Members {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ChannelCommand {
    /// Create a channel and print its chat id.
    Create {
        #[command(flatten)]
        common: Common,
        title: String,
    },
    /// Post to a channel and print the message id.
    Post {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    Join {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
    },
    Leave {
        #[command(flatten)]
        common: Common,
        chat: ChatArgument,
    },
}

/// Runs one client subcommand. Server errors come back as `ferrogram_net::ClientError`s whose
/// text reads `FLOOD_WAIT: ... (retry in 7 s)`; print them with `{:#}`.
pub fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Login { common, phone, code, name } => {
            account::login(&common, &phone, code.as_deref(), name.as_deref())
        }
        ClientCommand::Logout { common } => account::logout(&common),
        ClientCommand::Whoami { common } => account::whoami(&common),
        ClientCommand::Username(UsernameCommand::Set { common, name }) => account::set_username(&common, Some(&name)),
        ClientCommand::Username(UsernameCommand::Clear { common }) => account::set_username(&common, None),
        ClientCommand::Sessions { common, revoke } => account::sessions(&common, revoke),
        ClientCommand::Dialogs { common, limit } => messages::dialogs(&common, limit),
        ClientCommand::History { common, peer, limit } => messages::history(&common, &peer, limit),
        ClientCommand::Send { common, peer, text } => messages::send(&common, &peer, &text.join(" ")),
        ClientCommand::Chat { common, peer } => chat::run(&common, peer.as_ref()),
        ClientCommand::Group(command) => groups::group(command),
        ClientCommand::Channel(command) => groups::channel(command),
        ClientCommand::Devices { common, command } => devices::devices(&common, command),
        ClientCommand::Notify { common, peer, mute, previews } => devices::notify(&common, &peer, &mute, previews),
        ClientCommand::Upload { common, peer, path, caption, photo, name, mime, part_kib, parts_in_flight } => {
            let arguments = media::UploadArguments { caption, photo, name, mime, part_kib, parts_in_flight };
            media::upload(&common, &peer, &path, &arguments)
        }
        ClientCommand::Download { common, peer, message, output, force, ranges_in_flight } => {
            let arguments = media::DownloadArguments { output, force, ranges_in_flight };
            media::download(&common, &peer, ferrogram_net::MessageId(message), &arguments)
        }
    }
}

/// What `Hello` says this client is; the server shows it as the login's device.
fn client_name() -> String {
    format!("ferrogram-cli {}", env!("CARGO_PKG_VERSION"))
}

/// A connection acting as a profile's account.
struct Session {
    client: BlockingClient,
    me: Authorized,
    profile: Profile,
    profiles: PathBuf,
}

impl Session {
    /// Connects to the profile's server and authenticates with its token.
    fn open(common: &Common) -> anyhow::Result<Session> {
        let profiles = profile::profiles_directory()?;
        let profile = profile::load(&profiles, &common.profile)?.unwrap_or_default();
        let Some(token) = profile.token_bytes()? else {
            anyhow::bail!("profile `{}` is not logged in: run `ferrogram login --phone +NNN`", common.profile);
        };
        let client = connect(common, &profile)?;
        let me = client.authenticate(&token)?;
        Ok(Session { client, me, profile, profiles })
    }
}

/// The server to use: `--server` (or `$FERROGRAM_SERVER`), else the profile's, else the default.
fn server_address(common: &Common, profile: &Profile) -> String {
    common.server.clone().or_else(|| profile.server.clone()).unwrap_or_else(|| SERVER_DEFAULT.to_owned())
}

fn connect(common: &Common, profile: &Profile) -> anyhow::Result<BlockingClient> {
    let address = server_address(common, profile);
    connect_blocking(address.as_str(), &client_name()).with_context(|| format!("connecting to {address}"))
}

/// A random id for a send, so that a retried send is not stored twice.
fn random_id() -> anyhow::Result<u64> {
    // getrandom's error is not a std error without its `std` feature; its Display is enough.
    getrandom::u64().map_err(|error| anyhow::anyhow!("the system's random source failed: {error}"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    // The subcommands parse as documented: common flags on every one, peers checked at parse
    // time, multi-word text joined, and clap's own consistency checks pass.
    #[test]
    fn subcommands_parse() {
        TestCli::command().debug_assert();
        let parse = |line: &str| TestCli::try_parse_from(line.split(' '));

        let cli = parse("ferrogram send @alice hello there --profile work --server 127.0.0.2:1").expect("parses");
        let ClientCommand::Send { common, peer, text } = cli.command else { panic!("not send") };
        assert_eq!((common.profile.as_str(), common.server.as_deref()), ("work", Some("127.0.0.2:1")));
        assert_eq!((peer, text.join(" ")), (Peer::Username("alice".into()), "hello there".to_owned()));

        let cli = parse("ferrogram group add chat:12 +15550001111").expect("parses");
        let ClientCommand::Group(GroupCommand::Add { common, chat, peer }) = cli.command else { panic!("not add") };
        assert_eq!(common.profile, "default");
        assert_eq!((chat.0 .0, peer), (12, Peer::Phone("+15550001111".into())));

        assert!(parse("ferrogram history alice").is_err(), "a peer without @, + or chat: is refused");
        assert!(parse("ferrogram send @alice").is_err(), "send needs text");
        assert!(parse("ferrogram login --phone +15550001111 --code 12345").is_ok());
        assert!(parse("ferrogram chat").is_ok(), "chat without a peer follows every chat");
    }

    // The push commands parse as documented: `devices` alone lists, its subcommands take a
    // kind and a token, and `notify` takes at most one mute flag, durations checked at parse
    // time, and previews as on or off.
    #[test]
    fn push_commands_parse() {
        let parse = |line: &str| TestCli::try_parse_from(line.split(' '));

        let cli = parse("ferrogram devices --profile work").expect("parses");
        let ClientCommand::Devices { common, command: None } = cli.command else { panic!("not a list") };
        assert_eq!(common.profile, "work");

        let cli = parse("ferrogram devices register --kind webpush --token T1 --sandbox --server 127.0.0.2:1")
            .expect("parses");
        let ClientCommand::Devices {
            command: Some(DevicesCommand::Register { common, kind, token, sandbox, no_muted }),
            ..
        } = cli.command
        else {
            panic!("not register")
        };
        assert_eq!(common.server.as_deref(), Some("127.0.0.2:1"));
        assert_eq!((kind, token.as_str(), sandbox, no_muted), (KindArgument::WebPush, "T1", true, false));
        assert!(parse("ferrogram devices unregister --kind apns --token abc").is_ok());
        assert!(parse("ferrogram devices register --kind gcm --token abc").is_err(), "unknown kind");
        assert!(parse("ferrogram devices register --kind fcm").is_err(), "register needs a token");

        let cli = parse("ferrogram notify @alice --mute-for 8h --previews off").expect("parses");
        let ClientCommand::Notify { peer, mute, previews, .. } = cli.command else { panic!("not notify") };
        assert_eq!(peer, Peer::Username("alice".into()));
        assert_eq!(mute.mute_for.map(|mute| mute.0.as_secs()), Some(8 * 3600));
        assert_eq!(previews, Some(false));
        let cli = parse("ferrogram notify chat:7").expect("parses");
        let ClientCommand::Notify { mute, previews, .. } = cli.command else { panic!("not notify") };
        assert_eq!((mute, previews), (MuteArguments::default(), None));
        assert!(parse("ferrogram notify chat:7 --mute-forever --previews on").is_ok());
        assert!(parse("ferrogram notify chat:7 --unmute").is_ok());
        assert!(parse("ferrogram notify chat:7 --mute-forever --unmute").is_err(), "one mute flag at most");
        assert!(parse("ferrogram notify chat:7 --mute-for 8h --unmute").is_err(), "one mute flag at most");
        assert!(parse("ferrogram notify chat:7 --mute-for 8x").is_err(), "durations are checked");
        assert!(parse("ferrogram notify chat:7 --previews maybe").is_err());
    }

    // The media commands parse as documented: a peer and a path (options anywhere), a peer and
    // a message id; the old one-argument forms (a bare path, a file reference) are gone.
    #[test]
    fn media_commands_parse() {
        let parse = |line: &str| TestCli::try_parse_from(line.split(' '));

        let cli =
            parse("ferrogram upload @alice photo.jpg --name holiday.jpg --mime image/jpeg --part-kib 128 --photo")
                .expect("parses");
        let ClientCommand::Upload { peer, path, caption, photo, name, mime, part_kib, parts_in_flight, .. } =
            cli.command
        else {
            panic!("not upload")
        };
        assert_eq!((peer, path), (Peer::Username("alice".into()), PathBuf::from("photo.jpg")));
        assert_eq!((caption.as_str(), photo), ("", true));
        assert_eq!((name.as_deref(), mime.as_deref(), part_kib), (Some("holiday.jpg"), Some("image/jpeg"), 128));
        assert_eq!(parts_in_flight, PARTS_IN_FLIGHT_DEFAULT);
        let cli = TestCli::try_parse_from(["ferrogram", "upload", "chat:7", "a.pdf", "--caption", "the report, v2"])
            .expect("parses");
        let ClientCommand::Upload { peer, caption, photo, .. } = cli.command else { panic!("not upload") };
        assert_eq!((peer, caption.as_str(), photo), (Peer::Chat(ferrogram_net::ChatId(7)), "the report, v2", false));
        assert!(parse("ferrogram upload photo.jpg").is_err(), "upload needs a peer");
        assert!(parse("ferrogram upload alice photo.jpg").is_err(), "the peer is checked");
        assert!(parse("ferrogram upload @alice a b").is_err());

        let cli = parse("ferrogram download +15550001111 12 -o out.bin --force").expect("parses");
        let ClientCommand::Download { peer, message, output, force, .. } = cli.command else { panic!("not download") };
        assert_eq!((peer, message), (Peer::Phone("+15550001111".into()), 12));
        assert_eq!((output, force), (Some(PathBuf::from("out.bin")), true));
        assert!(parse("ferrogram download @alice").is_err(), "download needs a message id");
        assert!(parse("ferrogram download file:4097:00abcdef01234567").is_err(), "file references are gone");
        assert!(parse("ferrogram download @alice twelve").is_err(), "the message id is a number");
    }

    // The server comes from the flag (or environment) first, then the profile, then the
    // default.
    #[test]
    fn the_server_flag_overrides_the_profile() {
        let profile = Profile { server: Some("127.0.0.3:7450".into()), ..Profile::default() };
        let flag = Common { server: Some("127.0.0.4:1".into()), profile: "default".into() };
        let none = Common { server: None, profile: "default".into() };
        assert_eq!(server_address(&flag, &profile), "127.0.0.4:1");
        assert_eq!(server_address(&none, &profile), "127.0.0.3:7450");
        assert_eq!(server_address(&none, &Profile::default()), SERVER_DEFAULT);
    }
}
