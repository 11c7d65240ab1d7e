//! The account subcommands: `login`, `logout`, `whoami`, `username`, `sessions`.

use std::io::{BufRead, Read, Write};

use anyhow::{bail, Context};
use ferrogram_net::client::{Authorized, SignInOutcome};
use ferrogram_net::AuthorizationId;

use super::format::{date_time, display_name, local_offset_s};
use super::peer::parse_phone;
use super::profile::{self, Profile};
use super::{connect, server_address, Common, Session};

/// The longest login code read from standard input.
const CODE_BYTES_MAX: usize = 16;

/// `login`: SendCode, the code (from `--code` or standard input), SignIn, and SignUp with
/// `--name` if the phone is new; then the login is saved in the profile.
pub fn login(common: &Common, phone: &str, code: Option<&str>, name: Option<&str>) -> anyhow::Result<()> {
    let phone = parse_phone(phone)?;
    let profiles = profile::profiles_directory()?;
    let saved = profile::load(&profiles, &common.profile)?.unwrap_or_default();
    let client = connect(common, &saved)?;
    client.send_code(&phone)?;
    let code = match code {
        Some(code) => code.trim().to_owned(),
        None => read_code()?,
    };
    let authorized = match client.sign_in(&phone, &code)? {
        SignInOutcome::Authorized(authorized) => authorized,
        SignInOutcome::SignUpRequired => {
            let Some(name) = name else {
                bail!("{phone} has no account yet: run login again with --name \"First Last\" to sign up");
            };
            let (first_name, last_name) = split_name(name);
            if first_name.is_empty() {
                bail!("--name needs at least a first name");
            }
            client.sign_up(&phone, &code, first_name, last_name)?
        }
    };
    let Authorized { user, token, .. } = &authorized;
    let mut profile = Profile {
        server: Some(server_address(common, &saved)),
        user: Some(user.id.0),
        phone: Some(phone),
        name: Some(display_name(user)),
        token: None,
    };
    profile.set_token(token);
    profile::save(&profiles, &common.profile, &profile)?;
    println!("logged in as {} (user {})", display_name(user), user.id);
    Ok(())
}

/// `logout`: revokes the login on the server, then forgets the token (the profile keeps its
/// server and phone for the next login).
pub fn logout(common: &Common) -> anyhow::Result<()> {
    let Session { client, mut profile, profiles, .. } = Session::open(common)?;
    client.log_out()?;
    profile.token = None;
    profile::save(&profiles, &common.profile, &profile)?;
    println!("logged out");
    Ok(())
}

/// `whoami`: the account the profile is logged in as.
pub fn whoami(common: &Common) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let user = &session.me.user;
    let username = user.username.as_ref().map(|username| format!(" @{username}")).unwrap_or_default();
    let phone = if user.phone.is_empty() { String::new() } else { format!(" {}", user.phone) };
    println!("{} (user {}){username}{phone}", display_name(user), user.id);
    Ok(())
}

/// `username set NAME` / `username clear`.
pub fn set_username(common: &Common, username: Option<&str>) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let username = username.map(|name| name.strip_prefix('@').unwrap_or(name));
    session.client.set_username(username)?;
    match username {
        Some(username) => println!("username set to @{username}"),
        None => println!("username cleared"),
    }
    Ok(())
}

/// `sessions`: one line per login, the current one marked; `--revoke ID` revokes one.
pub fn sessions(common: &Common, revoke: Option<u64>) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    if let Some(id) = revoke {
        session.client.revoke_authorization(AuthorizationId(id))?;
        println!("revoked login {id}");
        return Ok(());
    }
    for authorization in session.client.get_authorizations()? {
        let created = date_time(authorization.created, local_offset_s(authorization.created));
        let current = if authorization.current { "  (current)" } else { "" };
        println!("{}  {}  since {created}{current}", authorization.id, authorization.device);
    }
    Ok(())
}

/// Asks for the login code on standard input.
fn read_code() -> anyhow::Result<String> {
    print!("code sent; enter it: ");
    std::io::stdout().flush().context("writing the prompt")?;
    let mut line = String::new();
    // `take` bounds the read: a code is a few digits, not a whole piped file.
    let read = std::io::stdin().lock().take(CODE_BYTES_MAX as u64 * 4).read_line(&mut line);
    if read.context("reading the code")? == 0 {
        bail!("no code given: standard input ended");
    }
    let code = line.trim();
    if code.is_empty() || code.len() > CODE_BYTES_MAX {
        bail!("a login code is 1 to {CODE_BYTES_MAX} characters");
    }
    Ok(code.to_owned())
}

/// "First Last Names" → ("First", "Last Names").
fn split_name(name: &str) -> (&str, &str) {
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((first, last)) => (first, last.trim()),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A full name splits into a first name and the rest, whatever the spacing.
    #[test]
    fn names_split_at_the_first_space() {
        assert_eq!(split_name("Ada Lovelace"), ("Ada", "Lovelace"));
        assert_eq!(split_name("  Ada   King Lovelace "), ("Ada", "King Lovelace"));
        assert_eq!(split_name("Ada"), ("Ada", ""));
        assert_eq!(split_name("   "), ("", ""));
    }
}
