//! Push notifications from the command line: `devices` (list, `register`, `unregister`) and
//! `notify <peer>` (show or change a chat's mute and previews).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ferrogram_net::{DeviceKind, NotifySettings, PushDevice, UnixMs};

use super::format::{date_time, local_offset_s};
use super::peer::{resolve_chat, Peer};
use super::{Common, DevicesCommand, Session};

/// The longest `--mute-for`: Telegram treats a mute of more than a year as "for ever", so a
/// longer one here is refused in favour of `--mute-forever` rather than guessed at.
pub const MUTE_FOR_MAX: Duration = Duration::from_secs(366 * SECONDS_PER_DAY);
/// The longest `--mute-for` text: a few number-and-unit pairs, never a whole pasted file.
pub const MUTE_FOR_TEXT_BYTES_MAX: usize = 32;

const SECONDS_PER_DAY: u64 = 86_400;

/// A push service, as `--kind` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArgument {
    Apns,
    Fcm,
    #[value(name = "webpush")]
    WebPush,
    Webhook,
}

impl From<KindArgument> for DeviceKind {
    fn from(kind: KindArgument) -> DeviceKind {
        match kind {
            KindArgument::Apns => DeviceKind::Apns,
            KindArgument::Fcm => DeviceKind::Fcm,
            KindArgument::WebPush => DeviceKind::WebPush,
            KindArgument::Webhook => DeviceKind::Webhook,
        }
    }
}

/// How `notify` changes a chat's mute; at most one of the three flags.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
#[group(multiple = false)]
pub struct MuteArguments {
    /// Mute for a while: a number and a unit (s, m, h, d, w), or several, e.g. 8h, 30m, 2d,
    /// 1h30m; at most 366 days.
    #[arg(long, value_name = "DURATION")]
    pub mute_for: Option<MuteFor>,
    /// Mute until unmuted.
    #[arg(long)]
    pub mute_forever: bool,
    /// Unmute.
    #[arg(long)]
    pub unmute: bool,
}

/// A `--mute-for` duration: between one second and [`MUTE_FOR_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuteFor(pub Duration);

/// Why a `--mute-for` text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}`: expected a number and a unit (s, m, h, d, w), e.g. 8h, 30m, 2d or 1h30m")]
    Form(String),
    #[error("`{0}`: a mute lasts at least a second")]
    Zero(String),
    #[error("`{0}`: at most 366 days; use --mute-forever for longer")]
    TooLong(String),
}

impl FromStr for MuteFor {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<MuteFor, DurationError> {
        let form = || DurationError::Form(text.to_owned());
        if text.is_empty() || text.len() > MUTE_FOR_TEXT_BYTES_MAX {
            return Err(form());
        }
        let mut seconds: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, after) = rest.split_at(digits);
            let mut units = after.chars();
            let unit_s = match units.next() {
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3600,
                Some('d') => SECONDS_PER_DAY,
                Some('w') => 7 * SECONDS_PER_DAY,
                _ => return Err(form()),
            };
            // At most 32 bytes of text, but "99999999999999999999s" still overflows a u64:
            // anything that does is far past the limit anyway.
            let too_long = || DurationError::TooLong(text.to_owned());
            let count: u64 = number.parse().map_err(|_| if number.is_empty() { form() } else { too_long() })?;
            seconds = count.checked_mul(unit_s).and_then(|part| seconds.checked_add(part)).ok_or_else(too_long)?;
            rest = units.as_str();
        }
        let duration = Duration::from_secs(seconds);
        if duration.is_zero() {
            return Err(DurationError::Zero(text.to_owned()));
        }
        if duration > MUTE_FOR_MAX {
            return Err(DurationError::TooLong(text.to_owned()));
        }
        Ok(MuteFor(duration))
    }
}

/// `devices`: one line per registered device, oldest first; `register` and `unregister`.
pub fn devices(common: &Common, command: Option<DevicesCommand>) -> anyhow::Result<()> {
    match command {
        None => {
            let session = Session::open(common)?;
            let devices = session.client.list_devices()?;
            if devices.is_empty() {
                println!("no devices registered");
            }
            for device in &devices {
                println!("{}", device_line(device));
            }
        }
        Some(DevicesCommand::Register { common, kind, token, sandbox, no_muted }) => {
            let session = Session::open(&common)?;
            session.client.register_device(kind.into(), &token, sandbox, no_muted)?;
            println!("registered the {} device", KindName(kind.into()));
        }
        Some(DevicesCommand::Unregister { common, kind, token }) => {
            let session = Session::open(&common)?;
            if session.client.unregister_device(kind.into(), &token)? {
                println!("unregistered the {} device", KindName(kind.into()));
            } else {
                println!("no {} device with that token was registered", KindName(kind.into()));
            }
        }
    }
    Ok(())
}

/// `notify <peer>`: prints the chat's settings, after changing them if asked to.
pub fn notify(common: &Common, peer: &Peer, mute: &MuteArguments, previews: Option<bool>) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let client = &session.client;
    let chat = resolve_chat(client, peer)?;
    // Mutes are measured on the server's clock, which the handshake just reported: a client
    // whose own clock is off still mutes for the time asked.
    let now = client.welcome().server_time;
    let current = client.get_notify_settings(chat)?;
    let wanted = changed(current, mute, previews, now);
    if wanted != current {
        client.set_notify_settings(chat, wanted)?;
    }
    println!("{peer}: {}", describe(wanted, now, local_offset_s(wanted.mute_until)));
    Ok(())
}

/// The settings after the flags of `notify`: what they do not mention stays as it was.
fn changed(current: NotifySettings, mute: &MuteArguments, previews: Option<bool>, now: UnixMs) -> NotifySettings {
    let mute_until = if mute.unmute {
        UnixMs(0)
    } else if mute.mute_forever {
        NotifySettings::MUTED_FOREVER
    } else if let Some(MuteFor(duration)) = mute.mute_for {
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        UnixMs(now.0.saturating_add(duration_ms))
    } else {
        current.mute_until
    };
    NotifySettings { mute_until, show_previews: previews.unwrap_or(current.show_previews) }
}

/// Settings as a person reads them, with dates in the local time zone `offset_s` east of UTC.
fn describe(settings: NotifySettings, now: UnixMs, offset_s: i64) -> String {
    let mute = if settings.mute_until == NotifySettings::MUTED_FOREVER {
        "muted for ever".to_owned()
    } else if settings.muted_at(now) {
        format!("muted until {}", date_time(settings.mute_until, offset_s))
    } else {
        "not muted".to_owned()
    };
    let previews = if settings.show_previews { "on" } else { "off" };
    format!("{mute}, previews {previews}")
}

/// One device: its kind, its flags and its token (whole: `unregister` needs it).
fn device_line(device: &PushDevice) -> String {
    let mut flags = Vec::new();
    if device.app_sandbox {
        flags.push("sandbox");
    }
    if device.no_muted {
        flags.push("no-muted");
    }
    let flags = if flags.is_empty() { "-".to_owned() } else { flags.join(",") };
    // A token is the service's text; control characters would let one pass for other lines.
    let token: String = device.token.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    format!("{:<8} {flags:<17} {token}", KindName(device.kind).to_string())
}

/// A device kind as `--kind` spells it.
struct KindName(DeviceKind);

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            DeviceKind::Apns => "apns",
            DeviceKind::Fcm => "fcm",
            DeviceKind::WebPush => "webpush",
            DeviceKind::Webhook => "webhook",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, DurationError> {
        text.parse::<MuteFor>().map(|mute| mute.0)
    }

    // Durations read as a number and a unit, or several in a row, and add up.
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(30 * 60)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse("1w"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse("366d"), Ok(MUTE_FOR_MAX));
    }

    // Near misses are refused with what was wrong, never guessed at: no unit, no number,
    // unknown or upper-case units, signs, spaces, fractions, zero, past the limit and past
    // what a u64 holds.
    #[test]
    fn bad_durations_are_refused() {
        for text in ["", "8", "h", "8x", "8H", "-8h", "+8h", " 8h", "8h ", "8 h", "1.5h", "8hh", "h8", "1h30"] {
            assert_eq!(parse(text), Err(DurationError::Form(text.into())), "{text:?}");
        }
        assert_eq!(parse("0h"), Err(DurationError::Zero("0h".into())));
        assert_eq!(parse("0s0m"), Err(DurationError::Zero("0s0m".into())));
        assert_eq!(parse("367d"), Err(DurationError::TooLong("367d".into())));
        assert_eq!(parse("366d1s"), Err(DurationError::TooLong("366d1s".into())));
        let huge = "99999999999999999999s";
        assert_eq!(parse(huge), Err(DurationError::TooLong(huge.into())));
        let overflow = "3000000000000000w";
        assert_eq!(parse(overflow), Err(DurationError::TooLong(overflow.into())));
        let long = "1s".repeat(17);
        assert_eq!(parse(&long), Err(DurationError::Form(long.clone())), "longer than 32 bytes");
    }

    // Each flag changes only what it names: a mute for a while counts from the server's
    // clock, for ever is u64::MAX, unmuting is 0, and previews keep their value unless given.
    #[test]
    fn flags_change_only_what_they_name() {
        let now = UnixMs(1_700_000_000_000);
        let current = NotifySettings { mute_until: UnixMs(5), show_previews: false };
        let none = MuteArguments::default();
        assert_eq!(changed(current, &none, None, now), current);
        assert_eq!(changed(current, &none, Some(true), now), NotifySettings { show_previews: true, ..current });

        let hour = MuteArguments { mute_for: Some(MuteFor(Duration::from_secs(3600))), ..Default::default() };
        assert_eq!(changed(current, &hour, None, now).mute_until, UnixMs(now.0 + 3_600_000));
        assert!(!changed(current, &hour, None, now).show_previews);

        let forever = MuteArguments { mute_forever: true, ..Default::default() };
        assert_eq!(changed(NotifySettings::DEFAULT, &forever, None, now).mute_until, UnixMs(u64::MAX));
        let unmute = MuteArguments { unmute: true, ..Default::default() };
        assert_eq!(changed(current, &unmute, Some(true), now), NotifySettings::DEFAULT);
    }

    // Settings read the way a person says them, and a mute that ended reads as not muted.
    #[test]
    fn settings_are_described_plainly() {
        let now = UnixMs(1_700_000_000_000);
        assert_eq!(describe(NotifySettings::DEFAULT, now, 0), "not muted, previews on");
        let forever = NotifySettings { mute_until: NotifySettings::MUTED_FOREVER, show_previews: false };
        assert_eq!(describe(forever, now, 0), "muted for ever, previews off");
        let hour = NotifySettings { mute_until: UnixMs(now.0 + 3_600_000), show_previews: true };
        assert_eq!(describe(hour, now, 0), "muted until 2023-11-14 23:13, previews on");
        let ended = NotifySettings { mute_until: UnixMs(now.0 - 1), show_previews: true };
        assert_eq!(describe(ended, now, 0), "not muted, previews on");
    }

    // A device line shows the kind as --kind spells it, the flags, and the whole token with
    // control characters made harmless.
    #[test]
    fn device_lines_show_kind_flags_and_token() {
        let device =
            PushDevice { kind: DeviceKind::WebPush, token: "tok\nen".into(), app_sandbox: true, no_muted: true };
        assert_eq!(device_line(&device), "webpush  sandbox,no-muted  tok\u{fffd}en");
        let plain = PushDevice { kind: DeviceKind::Apns, token: "a1b2".into(), app_sandbox: false, no_muted: false };
        assert_eq!(device_line(&plain), "apns     -                 a1b2");
    }
}
