//! Push devices and per-chat notification settings over the wire, against the real `ferrogram
//! serve`: devices register once per (kind, token), re-registering changes only the flags,
//! unregistering says whether there was one, bad tokens are refused without harming the
//! connection; settings default, change, stay per user and per chat, are refused outside the
//! user's chats, and both devices and settings survive a SIGKILL and a graceful restart. The
//! command-line client (`ferrogram devices`, `ferrogram notify`) does the same through the
//! binary.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use ferrogram_net::client::BlockingClient;
use ferrogram_net::limits::DEVICE_TOKEN_BYTES_MAX;
use ferrogram_net::{ChatId, ClientError, DeviceKind, ErrorCode, NotifySettings, PushDevice, Response, UnixMs};
use support::{cli, cli_login, cli_ok, Server};

/// An APNs device token: 32 bytes in hex.
const APNS_TOKEN: &str = "9f1c4e3b2a7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f5e4d3c";
const FCM_TOKEN: &str = "cHVzaC10b2tlbi1mb3ItdGhlLXRlc3Q6QVBBOTFiRzZ4ZjN0LXNhbXBsZQ";
const HOUR_MS: u64 = 3_600_000;

// Alice registers two devices and re-registers one with other flags (still two, the changed one
// now newest), unregisters one (true, then false); empty and oversized tokens are refused while
// the connection keeps working, and a token of exactly the limit is accepted. Her settings for a
// private chat and a group start at the defaults, change (muted for an hour without previews;
// muted for ever), read back, and stay hers alone; Carol may not set them for a chat she is not
// in, nor for a chat that does not exist. A SIGKILL and restart keeps all of it; a change after
// it survives a graceful restart too, and leaving the group forgets its settings.
#[test]
fn devices_and_settings_round_trip_and_survive_restarts() {
    let mut server = Server::start("devices-notify", &["--cores", "2", "--durability", "sync"]);
    let (alice, alice_login) = server.login("+15550000701", "Alice Push");
    let (bob, bob_login) = server.login("+15550000702", "Bob Push");
    let (carol, _) = server.login("+15550000703", "Carol Outside");

    // Devices.
    assert_eq!(alice.list_devices().expect("list"), []);
    alice.register_device(DeviceKind::Apns, APNS_TOKEN, false, false).expect("register apns");
    alice.register_device(DeviceKind::Fcm, FCM_TOKEN, true, false).expect("register fcm");
    let apns = device(DeviceKind::Apns, APNS_TOKEN, false, false);
    let fcm = device(DeviceKind::Fcm, FCM_TOKEN, true, false);
    assert_eq!(alice.list_devices().expect("list"), [apns.clone(), fcm.clone()], "oldest first");

    alice.register_device(DeviceKind::Apns, APNS_TOKEN, true, true).expect("re-register apns");
    let apns = device(DeviceKind::Apns, APNS_TOKEN, true, true);
    assert_eq!(
        alice.list_devices().expect("list"),
        [fcm.clone(), apns.clone()],
        "re-registering changes the flags and makes the device the newest, without a second entry"
    );
    // The same token under another kind is another device; unregistering it leaves Alice's FCM
    // device alone.
    assert!(!alice.unregister_device(DeviceKind::WebPush, FCM_TOKEN).expect("unregister another kind"));
    assert_eq!(bob.list_devices().expect("bob's list"), [], "devices are per user");

    assert!(alice.unregister_device(DeviceKind::Fcm, FCM_TOKEN).expect("unregister fcm"));
    assert!(!alice.unregister_device(DeviceKind::Fcm, FCM_TOKEN).expect("unregister fcm again"));
    assert_eq!(alice.list_devices().expect("list"), std::slice::from_ref(&apns));

    // Bad tokens are refused with a typed error, and the connection stays usable.
    let refused = |result: Result<(), ClientError>| result.expect_err("refused").code();
    assert_eq!(refused(alice.register_device(DeviceKind::Fcm, "", false, false)), Some(ErrorCode::InvalidArgument));
    let too_long = "t".repeat(DEVICE_TOKEN_BYTES_MAX + 1);
    assert_eq!(refused(alice.register_device(DeviceKind::Webhook, &too_long, false, false)), Some(ErrorCode::TooLarge));
    let unregister_empty = alice.unregister_device(DeviceKind::Fcm, "").map(|_| ());
    assert_eq!(refused(unregister_empty), Some(ErrorCode::InvalidArgument));
    assert!(!alice.is_closed(), "a refused request leaves the connection open");
    assert_eq!(
        alice.list_devices().expect("list after refusals"),
        std::slice::from_ref(&apns),
        "nothing was registered"
    );
    let longest = "w".repeat(DEVICE_TOKEN_BYTES_MAX);
    alice.register_device(DeviceKind::Webhook, &longest, false, true).expect("a token of exactly the limit");
    let webhook = device(DeviceKind::Webhook, &longest, false, true);
    assert_eq!(alice.list_devices().expect("list"), [apns.clone(), webhook.clone()]);

    // Settings.
    let private = alice.open_private(bob_login.user.id).expect("open the private chat");
    let group = bob.create_group("push settings", &[alice_login.user.id]).expect("create the group");
    assert_eq!(alice.get_notify_settings(private).expect("get"), NotifySettings::DEFAULT);
    assert_eq!(alice.get_notify_settings(group).expect("get"), NotifySettings::DEFAULT);

    let an_hour = NotifySettings { mute_until: UnixMs(alice.welcome().server_time.0 + HOUR_MS), show_previews: false };
    alice.set_notify_settings(private, an_hour).expect("mute for an hour without previews");
    let forever = NotifySettings { mute_until: NotifySettings::MUTED_FOREVER, show_previews: true };
    alice.set_notify_settings(group, forever).expect("mute for ever");
    assert_eq!(alice.get_notify_settings(private).expect("get"), an_hour);
    assert_eq!(alice.get_notify_settings(group).expect("get"), forever);
    assert_eq!(bob.get_notify_settings(private).expect("bob's"), NotifySettings::DEFAULT, "settings are per user");

    // Outside her chats Carol is refused, and her connection keeps working.
    let outside = carol.set_notify_settings(private, an_hour).expect_err("not a member");
    assert_eq!(outside.code(), Some(ErrorCode::PermissionDenied), "{outside}");
    let unknown = unknown_chat(group);
    let missing = carol.set_notify_settings(unknown, an_hour).expect_err("no such chat");
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing}");
    assert_eq!(carol.get_self().expect("carol's connection still works").phone, "+15550000703");
    assert_eq!(alice.get_notify_settings(private).expect("get"), an_hour, "Carol changed nothing");

    // A SIGKILL: everything acknowledged is durable under `sync`.
    drop((alice, bob, carol));
    server.kill();
    server.spawn();
    let alice = authenticate(&server, &alice_login.token);
    assert_eq!(alice.list_devices().expect("list after a kill"), [apns.clone(), webhook.clone()]);
    assert_eq!(alice.get_notify_settings(private).expect("get after a kill"), an_hour);
    assert_eq!(alice.get_notify_settings(group).expect("get after a kill"), forever);

    // Changes after the restart, then a graceful one.
    alice.unregister_device(DeviceKind::Webhook, &longest).expect("unregister the long token");
    alice.register_device(DeviceKind::Fcm, FCM_TOKEN, false, false).expect("register fcm again");
    alice.set_notify_settings(private, NotifySettings::DEFAULT).expect("unmute, previews on");
    drop(alice);
    assert!(server.terminate(), "the server exits 0 after SIGTERM");
    server.spawn();
    let alice = authenticate(&server, &alice_login.token);
    let fcm = device(DeviceKind::Fcm, FCM_TOKEN, false, false);
    assert_eq!(alice.list_devices().expect("list after a graceful restart"), [apns, fcm]);
    assert_eq!(alice.get_notify_settings(private).expect("get"), NotifySettings::DEFAULT);
    assert_eq!(alice.get_notify_settings(group).expect("get"), forever);

    // Leaving a chat forgets its settings.
    alice.leave_chat(group).expect("leave the group");
    assert_eq!(alice.get_notify_settings(group).expect("get after leaving"), NotifySettings::DEFAULT);
}

// The command-line client logs in (code typed on standard input), lists no devices, registers
// one, shows it, and unregisters it (then says it was not registered); `notify` mutes a chat for
// two hours without previews, shows it, unmutes it, and refuses a malformed duration. Each step
// is checked through a wire client of the same user, not only by what the CLI printed.
#[test]
fn the_command_line_client_manages_devices_and_settings() {
    let server = Server::start("devices-notify-cli", &["--cores", "1"]);
    let home = server.directory.join("cli-home");
    let phone = "+15550000711";
    cli_login(&server, &home, phone, "Dana Cli");
    let (dana, dana_login) = server.login(phone, "Dana Cli");
    let (_erin, erin_login) = server.login("+15550000712", "Erin Peer");
    assert_ne!(dana_login.user.id, erin_login.user.id);

    assert_eq!(cli_ok(&server, &home, &["devices"]), "no devices registered\n");
    let registered =
        cli_ok(&server, &home, &["devices", "register", "--kind", "webpush", "--token", "cli-token-1", "--no-muted"]);
    assert_eq!(registered, "registered the webpush device\n");
    assert_eq!(dana.list_devices().expect("list"), [device(DeviceKind::WebPush, "cli-token-1", false, true)]);
    assert_eq!(cli_ok(&server, &home, &["devices"]), "webpush  no-muted          cli-token-1\n");
    let unregistered =
        cli_ok(&server, &home, &["devices", "unregister", "--kind", "webpush", "--token", "cli-token-1"]);
    assert_eq!(unregistered, "unregistered the webpush device\n");
    assert_eq!(dana.list_devices().expect("list"), []);
    let again = cli_ok(&server, &home, &["devices", "unregister", "--kind", "webpush", "--token", "cli-token-1"]);
    assert_eq!(again, "no webpush device with that token was registered\n");

    let chat = dana.open_private(erin_login.user.id).expect("open the chat");
    let peer = format!("chat:{chat}");
    let before = now_ms();
    let muted = cli_ok(&server, &home, &["notify", &peer, "--mute-for", "2h", "--previews", "off"]);
    let after = now_ms();
    assert!(muted.starts_with(&format!("{peer}: muted until ")) && muted.ends_with(", previews off\n"), "{muted}");
    let settings = dana.get_notify_settings(chat).expect("get");
    assert!(!settings.show_previews);
    // Two hours from the server's clock at the CLI's handshake (the same machine's clock).
    let window = (before + 2 * HOUR_MS - 1000)..=(after + 2 * HOUR_MS + 1000);
    assert!(window.contains(&settings.mute_until.0), "{} not in {window:?}", settings.mute_until.0);
    assert_eq!(cli_ok(&server, &home, &["notify", &peer]), muted, "without flags it shows the settings");

    let unmuted = cli_ok(&server, &home, &["notify", &peer, "--unmute", "--previews", "on"]);
    assert_eq!(unmuted, format!("{peer}: not muted, previews on\n"));
    assert_eq!(dana.get_notify_settings(chat).expect("get"), NotifySettings::DEFAULT);

    let refused = cli(&server, &home, &["notify", &peer, "--mute-for", "8x"]);
    assert!(!refused.status.success(), "a malformed duration is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("8x"), "the error names the duration");
    assert_eq!(dana.get_notify_settings(chat).expect("get"), NotifySettings::DEFAULT, "nothing was changed");
}

fn device(kind: DeviceKind, token: &str, app_sandbox: bool, no_muted: bool) -> PushDevice {
    PushDevice { kind, token: token.into(), app_sandbox, no_muted }
}

/// A chat id on the same vshard as `chat` (the low 12 bits) that no chat has been given.
fn unknown_chat(chat: ChatId) -> ChatId {
    ChatId(chat.0 + (1_000_000 << 12))
}

fn authenticate(server: &Server, token: &[u8]) -> BlockingClient {
    let (client, response) = server.reconnect(token);
    assert!(matches!(response, Response::Authorized { .. }), "the token still works: {response:?}");
    client
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}
