//! Login and sessions are guarded: wrong codes are refused and limited, revoked tokens stop
//! working at once (live connections too), unauthorized requests are refused, and floods get
//! `FLOOD_WAIT` with the seconds to wait.

mod support;

use std::time::Duration;

use ferrogram_net::client::SignInOutcome;
use ferrogram_net::{ErrorCode, LiveEvent, Request, Response};
use support::{collect_updates, Server};

// A wrong code is refused; after five wrong tries even the right code no longer works, and a
// fresh code does.
#[test]
fn wrong_codes_are_refused_and_limited() {
    let server = Server::start("login-codes", &["--cores", "1"]);
    let client = server.connect();
    let phone = "+15550000601";
    client.send_code(phone).expect("send code");
    let code = server.code_for(phone);
    let wrong = if code == "00000" { "11111" } else { "00000" };
    for attempt in 0..5 {
        let error = client.sign_in(phone, wrong).expect_err("a wrong code");
        assert_eq!(error.code(), Some(ErrorCode::PhoneCodeInvalid), "attempt {attempt}");
    }
    let error = client.sign_in(phone, &code).expect_err("the code is spent after five wrong tries");
    assert_eq!(error.code(), Some(ErrorCode::PhoneCodeInvalid));

    client.send_code(phone).expect("a new code");
    let code = server.code_for(phone);
    assert!(matches!(client.sign_in(phone, &code).expect("the new code works"), SignInOutcome::SignUpRequired));
    let error = client.call(Request::SignUp {
        phone: phone.into(),
        code: "99999".into(),
        first_name: "Eve".into(),
        last_name: String::new(),
    });
    assert_eq!(error.expect_err("sign-up checks the code too").code(), Some(ErrorCode::PhoneCodeInvalid));
    let authorized = client.sign_up(phone, &code, "Ann", "Other").expect("sign up");
    assert_eq!(authorized.user.first_name, "Ann");
    let error = client.sign_in(phone, &code).expect_err("a connection logs in once");
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
}

// Revoking a device's authorization ends its live connection with `Revoked` and its token is
// refused afterwards; logging out revokes one's own; a made-up token is refused.
#[test]
fn revoked_tokens_are_refused() {
    let server = Server::start("login-revoke", &["--cores", "2"]);
    let (laptop, laptop_login) = server.login("+15550000701", "Rev Oker");
    let (phone, phone_login) = server.login("+15550000701", "Rev Oker");
    let listed = laptop.get_authorizations().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|a| a.id == laptop_login.authorization && a.current));
    assert!(listed.iter().any(|a| a.id == phone_login.authorization && !a.current));

    laptop.revoke_authorization(phone_login.authorization).expect("revoke the phone");
    let events = collect_updates(&phone, Duration::from_secs(10), |events| events.contains(&LiveEvent::Revoked));
    assert!(events.contains(&LiveEvent::Revoked), "the phone's live connection is told: {events:?}");
    let (_, refused) = reconnect_error(&server, &phone_login.token);
    assert_eq!(refused, ErrorCode::AuthInvalid, "the revoked token is refused");

    let (client, response) = server.reconnect(&laptop_login.token);
    assert!(matches!(response, Response::Authorized { .. }), "the laptop's token still works");
    client.log_out().expect("log out");
    assert_eq!(client.get_state().expect_err("logged out").code(), Some(ErrorCode::AuthRequired));
    let (_, refused) = reconnect_error(&server, &laptop_login.token);
    assert_eq!(refused, ErrorCode::AuthInvalid, "a logged-out token is refused");

    let mut forged = laptop_login.token.clone();
    forged[20] ^= 1;
    assert_eq!(reconnect_error(&server, &forged).1, ErrorCode::AuthInvalid, "a forged secret is refused");
    assert_eq!(reconnect_error(&server, &forged[..10]).1, ErrorCode::AuthInvalid, "a short token is refused");
    let anonymous = server.connect();
    assert_eq!(anonymous.get_state().expect_err("no login").code(), Some(ErrorCode::AuthRequired));
}

fn reconnect_error(server: &Server, token: &[u8]) -> (ferrogram_net::client::BlockingClient, ErrorCode) {
    let client = server.connect();
    let error = client.call(Request::Authenticate { token: token.to_vec() }).expect_err("refused");
    let code = error.code().expect("a server error");
    (client, code)
}

// Asking for codes too often for one phone, or flooding sends on one session, gets
// FLOOD_WAIT with a positive wait, and other phones are not affected.
#[test]
fn floods_get_flood_wait() {
    let server = Server::start("login-flood", &["--cores", "1"]);
    let client = server.connect();
    let mut flood = None;
    for attempt in 0..20 {
        if let Err(error) = client.send_code("+15550000801") {
            flood = Some((attempt, error));
            break;
        }
    }
    let (attempt, error) = flood.expect("twenty codes in a row for one phone are not all sent");
    assert_eq!(attempt, 10, "ten codes per phone per hour");
    assert_eq!(error.code(), Some(ErrorCode::FloodWait));
    assert!(error.retry_after().is_some_and(|wait| wait >= Duration::from_secs(1)), "{error:?}");
    client.send_code("+15550000802").expect("another phone is not limited");

    let (sender, _) = server.login("+15550000803", "Flo Oder");
    let (_, peer) = server.login("+15550000804", "Pat Ient");
    let chat = sender.open_private(peer.user.id).expect("open");
    let requests: Vec<Request> = (1..=600)
        .map(|i| Request::SendMessage { chat, random_id: i, text: format!("flood {i}"), reply_to: None })
        .collect();
    let answers = sender.call_many(requests);
    let waits: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
    assert!(!waits.is_empty(), "600 sends at once exceed 200 per second");
    assert!(waits.iter().all(|error| error.code() == Some(ErrorCode::FloodWait)), "{:?}", waits.first());
    let acked = answers.iter().filter(|answer| matches!(answer, Ok(Response::Sent(_)))).count();
    assert!(acked >= 200, "the burst allowance is served: {acked}");
}
