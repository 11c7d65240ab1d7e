//! How the command-line client shows people, messages, dialogs and times.

use ferrogram_net::{MediaKind, Message, MessageMedia, UnixMs, User, UserId};

use super::progress::human_bytes;

const SECONDS_PER_DAY: i64 = 86_400;

/// A user as people read them: the name, else `@username`, else `user <id>`.
pub fn display_name(user: &User) -> String {
    let name = format!("{} {}", user.first_name, user.last_name);
    let name = name.trim();
    match (&user.username, name.is_empty()) {
        (_, false) => name.to_owned(),
        (Some(username), true) => format!("@{username}"),
        (None, true) => format!("user {}", user.id),
    }
}

/// The name to show for a user whose profile could not be fetched.
pub fn unknown_user(user: UserId) -> String {
    format!("user {user}")
}

/// One message as `[HH:MM:SS] Sender: text`, in the local time zone `offset_s` east of UTC; a
/// media message as `[HH:MM:SS] Sender: [photo cat.jpg, 12.30 KiB] caption`.
pub fn history_line(message: &Message, sender: &str, offset_s: i64) -> String {
    let time = clock(message.date, offset_s);
    if message.deleted {
        return format!("[{time}] {sender}: (deleted)");
    }
    let forwarded = if message.forwarded_from.is_some() { "(forwarded) " } else { "" };
    let edited = if message.edit_date.is_some() { " (edited)" } else { "" };
    // One message is one line: newlines in the text would pass for other messages.
    let text = message.text.replace(['\r', '\n'], " ↵ ");
    let text = match &message.media {
        Some(media) if text.is_empty() => media_tag(media),
        Some(media) => format!("{} {text}", media_tag(media)),
        None => text,
    };
    format!("[{time}] {sender}: {forwarded}{text}{edited}")
}

/// A media message's file as a history line shows it: `[photo cat.jpg, 12.30 KiB]`.
pub fn media_tag(media: &MessageMedia) -> String {
    let kind = match media.kind {
        MediaKind::Photo => "photo",
        MediaKind::Document => "document",
    };
    // The name is the uploader's text: no control characters reach the terminal.
    let name: String =
        media.name.chars().map(|character| if character.is_control() { '?' } else { character }).collect();
    let name = if name.is_empty() { String::new() } else { format!(" {name}") };
    format!("[{kind}{name}, {}]", human_bytes(media.size))
}

/// `HH:MM:SS` of `date`, `offset_s` east of UTC.
pub fn clock(date: UnixMs, offset_s: i64) -> String {
    let seconds = local_seconds(date, offset_s).rem_euclid(SECONDS_PER_DAY);
    format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// `YYYY-MM-DD HH:MM` of `date`, `offset_s` east of UTC.
pub fn date_time(date: UnixMs, offset_s: i64) -> String {
    let seconds = local_seconds(date, offset_s);
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", of_day / 3600, of_day / 60 % 60)
}

/// The local time zone's offset from UTC at `date`, in seconds east; 0 if unknown.
pub fn local_offset_s(date: UnixMs) -> i64 {
    let Ok(seconds) = libc::time_t::try_from(date.0 / 1000) else { return 0 };
    // SAFETY: `tm` is plain integers and one pointer, for which all-zero bytes are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r writes only `tm` and, unlike
    // localtime, keeps no shared buffer.
    let converted = unsafe { libc::localtime_r(&seconds, &mut tm) };
    if converted.is_null() {
        return 0;
    }
    // `c_long` is i64 here but i32 on 32-bit targets; the conversion is for those.
    #[allow(clippy::useless_conversion)]
    i64::from(tm.tm_gmtoff)
}

fn local_seconds(date: UnixMs, offset_s: i64) -> i64 {
    i64::try_from(date.0 / 1000).unwrap_or(i64::MAX - SECONDS_PER_DAY).saturating_add(offset_s)
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogram_net::{ChatId, FileId, FileRef, ForwardedFrom, MessageId};

    fn message(date_ms: u64, text: &str) -> Message {
        Message {
            id: MessageId(1),
            chat: ChatId(1),
            sender: UserId(2),
            date: UnixMs(date_ms),
            random_id: 0,
            text: text.into(),
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: None,
        }
    }

    // A history line shows the local wall-clock time, the sender and the text on one line,
    // and marks edited, forwarded and deleted messages.
    #[test]
    fn history_lines_read_like_a_chat() {
        // 2024-03-01 13:04:05 UTC.
        let date_ms = 1_709_298_245_000;
        assert_eq!(history_line(&message(date_ms, "hi there"), "Ada", 0), "[13:04:05] Ada: hi there");
        assert_eq!(history_line(&message(date_ms, "hi"), "Ada", 2 * 3600), "[15:04:05] Ada: hi");
        assert_eq!(history_line(&message(date_ms, "hi"), "Ada", -14 * 3600), "[23:04:05] Ada: hi");
        assert_eq!(history_line(&message(date_ms, "two\nlines"), "Ada", 0), "[13:04:05] Ada: two ↵ lines");

        let edited = Message { edit_date: Some(UnixMs(date_ms + 1000)), ..message(date_ms, "fixed") };
        assert_eq!(history_line(&edited, "Ada", 0), "[13:04:05] Ada: fixed (edited)");
        let from = ForwardedFrom { chat: ChatId(9), message: MessageId(3), sender: UserId(4), date: UnixMs(0) };
        let forwarded = Message { forwarded_from: Some(from), ..message(date_ms, "look") };
        assert_eq!(history_line(&forwarded, "Ada", 0), "[13:04:05] Ada: (forwarded) look");
        let deleted = Message { deleted: true, ..message(date_ms, "") };
        assert_eq!(history_line(&deleted, "Ada", 0), "[13:04:05] Ada: (deleted)");
    }

    // A media message shows its kind, file name and size before the caption, on one line, and
    // without a caption only the file.
    #[test]
    fn media_messages_show_their_file() {
        let date_ms = 1_709_298_245_000;
        let media = MessageMedia {
            kind: MediaKind::Photo,
            file: FileRef { id: FileId(1), access_hash: 2 },
            size: 12_595,
            name: "cat.jpg".into(),
            mime_type: "image/jpeg".into(),
        };
        let photo = Message { media: Some(media.clone()), ..message(date_ms, "our cat") };
        assert_eq!(history_line(&photo, "Ada", 0), "[13:04:05] Ada: [photo cat.jpg, 12.30 KiB] our cat");
        let bare = Message { media: Some(media.clone()), ..message(date_ms, "") };
        assert_eq!(history_line(&bare, "Ada", 0), "[13:04:05] Ada: [photo cat.jpg, 12.30 KiB]");
        let document = MessageMedia { kind: MediaKind::Document, name: "a\nb.txt".into(), size: 300, ..media.clone() };
        let line = history_line(&Message { media: Some(document), ..message(date_ms, "notes") }, "Ada", 0);
        assert_eq!(line, "[13:04:05] Ada: [document a?b.txt, 300 B] notes");
        let unnamed = MessageMedia { name: String::new(), ..media };
        assert_eq!(media_tag(&unnamed), "[photo, 12.30 KiB]");
    }

    // Dates convert correctly across a leap day and the epoch.
    #[test]
    fn dates_follow_the_calendar() {
        assert_eq!(date_time(UnixMs(0), 0), "1970-01-01 00:00");
        assert_eq!(date_time(UnixMs(1_709_164_800_000), 0), "2024-02-29 00:00");
        assert_eq!(date_time(UnixMs(1_709_251_199_000), 0), "2024-02-29 23:59");
        assert_eq!(date_time(UnixMs(1_709_251_199_000), 60), "2024-03-01 00:00");
        assert_eq!(date_time(UnixMs(1_735_689_600_000), -3600), "2024-12-31 23:00");
    }

    // Users are shown by name, then username, then id.
    #[test]
    fn users_are_named_by_what_they_have() {
        let mut user = User {
            id: UserId(7),
            phone: String::new(),
            first_name: "Ada".into(),
            last_name: String::new(),
            username: None,
        };
        assert_eq!(display_name(&user), "Ada");
        user.last_name = "Lovelace".into();
        assert_eq!(display_name(&user), "Ada Lovelace");
        user.first_name.clear();
        user.last_name.clear();
        user.username = Some("ada".into());
        assert_eq!(display_name(&user), "@ada");
        user.username = None;
        assert_eq!(display_name(&user), "user 7");
    }
}
