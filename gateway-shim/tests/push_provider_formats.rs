// Each provider's request has its documented shape, as a receiver on 127.0.0.1 sees it: the
// relay's JSON with a valid HMAC-SHA256 signature; APNs' path, apns-* headers, ES256 bearer JWT
// and aps payload (over HTTP/1.1 in test mode and over h2c HTTP/2); FCM v1's path, bearer
// access token (renewable) and message fields.

mod push_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferrogram_gateway_shim::push::{
    ApnsAuth, ApnsConfig, ApnsTransport, DeviceKind, FcmConfig, NoDirectory, PushConfig, PushDispatcher, PushJob,
    PushJobKind, SIGNATURE_HEADER,
};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use push_support::*;
use sha2::Sha256;

fn with_devices(mut job: PushJob, devices: Vec<ferrogram_gateway_shim::push::Device>) -> PushJob {
    if let PushJobKind::Message(push) = &mut job.kind {
        push.devices = devices;
    }
    job
}

fn unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn deliver(config: PushConfig, job: PushJob) -> PushDispatcher {
    let dispatcher = PushDispatcher::start(config, Arc::new(NoDirectory)).unwrap();
    dispatcher.sender().try_send_job(job).unwrap();
    reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    dispatcher
}

#[test]
fn relay_requests_are_signed_json() {
    let receiver = Receiver::start(always_ok());
    let job =
        with_devices(message_job(1, 10, 20, 3, 4), vec![device(DeviceKind::WebPush, "https://push.example/sub/1")]);
    let _dispatcher = deliver(config(&receiver.url("/relay")), job);
    let request = &receiver.requests()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/relay"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let signature = request.header(SIGNATURE_HEADER).expect("signed").strip_prefix("sha256=").expect("sha256=");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
    mac.update(&request.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(signature, expected, "HMAC-SHA256 of the exact body");
    let json = request.json();
    assert_eq!(json["kind"], "webpush");
    assert_eq!(json["token"], "https://push.example/sub/1");
    assert_eq!(json["app_sandbox"], false);
    assert_eq!(
        (json["user"].as_str(), json["chat"].as_str(), json["message"].as_str()),
        (Some("10"), Some("20"), Some("3"))
    );
    assert_eq!((json["count"].as_u64(), json["badge"].as_u64()), (Some(1), Some(4)));
    assert_eq!(
        (json["title"].as_str(), json["text"].as_str(), json["body"].as_str()),
        (Some("Ann"), Some("message 3"), Some("message 3"))
    );
    assert_eq!(json["collapse_id"], "chat-20");
    assert_eq!(json["date"], 1_700_000_000_003u64);
    assert!(json["sent_at"].as_u64().unwrap() >= unix_s() * 1000 - 60_000);
}

fn apns_config(production: String, sandbox: String, transport: ApnsTransport, key: &SigningKey) -> ApnsConfig {
    ApnsConfig {
        endpoint_production: production,
        endpoint_sandbox: sandbox,
        topic: "org.example.messenger".into(),
        auth: ApnsAuth::SigningKey {
            team_id: "TEAM123456".into(),
            key_id: "KEY1234567".into(),
            private_key_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        },
        transport,
    }
}

/// Checks APNs' headers and body, and that the bearer token is an ES256 JWT by `key`.
fn check_apns_request(request: &Request, key: &SigningKey) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("apns-topic"), Some("org.example.messenger"));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    assert_eq!(request.header("apns-collapse-id"), Some("chat-20"));
    let expiration: u64 = request.header("apns-expiration").unwrap().parse().unwrap();
    assert!(expiration.abs_diff(unix_s() + 24 * 3600) < 120, "a day from now: {expiration}");
    let jwt = request.header("authorization").unwrap().strip_prefix("bearer ").expect("bearer");
    let parts: Vec<&str> = jwt.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": "KEY1234567"}));
    assert_eq!(claims["iss"], "TEAM123456");
    assert!(claims["iat"].as_u64().unwrap().abs_diff(unix_s()) < 120);
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    VerifyingKey::from(key)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("ES256 verifies");
    let json = request.json();
    assert_eq!(json["aps"]["alert"], serde_json::json!({"title": "Ann", "body": "message 3"}));
    assert_eq!(json["aps"]["badge"], 4);
    assert_eq!(json["aps"]["sound"], "default");
    assert_eq!(
        (json["chat"].as_str(), json["message"].as_str(), json["count"].as_u64()),
        (Some("20"), Some("3"), Some(1))
    );
}

#[test]
fn apns_requests_follow_apples_shape() {
    let receiver = Receiver::start(always_ok());
    let key = SigningKey::from_slice(&[9; 32]).unwrap();
    let mut config = config(&receiver.url("/relay"));
    config.apns =
        Some(apns_config(receiver.url("/production"), receiver.url("/sandbox"), ApnsTransport::Http1ForTests, &key));
    let mut sandbox = device(DeviceKind::Apns, "00ff00ff");
    sandbox.app_sandbox = true;
    let job = with_devices(message_job(1, 10, 20, 3, 4), vec![device(DeviceKind::Apns, "a1b2c3d4"), sandbox]);
    let _dispatcher = deliver(config, job);
    let mut requests = receiver.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = requests.iter().map(|request| request.path.as_str()).collect();
    assert_eq!(paths, ["/production/3/device/a1b2c3d4", "/sandbox/3/device/00ff00ff"]);
    for request in &requests {
        check_apns_request(request, &key);
    }
}

#[test]
fn apns_speaks_http2_to_a_cleartext_endpoint() {
    let receiver = H2Receiver::start(200);
    let key = SigningKey::from_slice(&[11; 32]).unwrap();
    let mut config = config("http://127.0.0.1:9/unused");
    config.apns = Some(apns_config(receiver.url(), receiver.url(), ApnsTransport::Http2, &key));
    let job = with_devices(message_job(1, 10, 20, 3, 4), vec![device(DeviceKind::Apns, "a1b2c3d4")]);
    let dispatcher = deliver(config, job);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].version, "HTTP/2.0");
    assert_eq!(requests[0].path, "/3/device/a1b2c3d4");
    check_apns_request(&requests[0], &key);
    assert_eq!(dispatcher.metrics().pushes_sent.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn fcm_requests_follow_the_v1_shape() {
    let receiver = Receiver::start(always_ok());
    let mut config = config(&receiver.url("/relay"));
    config.fcm = Some(FcmConfig {
        endpoint: receiver.url(""),
        project_id: "my-project".into(),
        access_token: "ya29.first".into(),
    });
    let job = with_devices(message_job(1, 10, 20, 3, 4), vec![device(DeviceKind::Fcm, "fcm-token:1")]);
    let dispatcher = deliver(config, job);
    let request = &receiver.requests()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/projects/my-project/messages:send"));
    assert_eq!(request.header("authorization"), Some("Bearer ya29.first"));
    assert!(request.header("content-type").unwrap().starts_with("application/json"));
    let message = &request.json()["message"];
    assert_eq!(message["token"], "fcm-token:1");
    assert_eq!(message["notification"], serde_json::json!({"title": "Ann", "body": "message 3"}));
    for (key, value) in message["data"].as_object().unwrap() {
        assert!(value.is_string(), "FCM data values are strings: {key}");
    }
    assert_eq!((message["data"]["chat"].as_str(), message["data"]["badge"].as_str()), (Some("20"), Some("4")));
    assert_eq!(message["android"]["priority"], "high");
    assert_eq!(message["android"]["ttl"], "86400s");
    assert_eq!(message["android"]["collapse_key"], "chat-20");
    assert_eq!(message["android"]["notification"]["notification_count"], 4);
    assert_eq!(message["apns"]["headers"]["apns-collapse-id"], "chat-20");
    assert_eq!(message["apns"]["payload"]["aps"]["badge"], 4);

    // A renewed access token is used from the next request on.
    dispatcher.set_fcm_access_token("ya29.second".into());
    let job = with_devices(message_job(2, 11, 20, 4, 1), vec![device(DeviceKind::Fcm, "fcm-token:2")]);
    dispatcher.sender().try_send_job(job).unwrap();
    reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    assert_eq!(receiver.requests()[1].header("authorization"), Some("Bearer ya29.second"));
}
