// A token the provider reports dead (the relay's and APNs' 410 Gone, FCM's 404 UNREGISTERED)
// is reported to the host as InvalidToken with its user and device, without retrying, while
// the user's other devices still get the push and the job completes.

mod push_support;

use std::sync::Arc;
use std::time::Duration;

use engine::messaging::UserId;
use ferrogram_gateway_shim::push::{
    ApnsAuth, ApnsConfig, ApnsTransport, DeviceKind, FcmConfig, NoDirectory, PushDispatcher, PushJobKind, PushReport,
};
use push_support::*;

#[test]
fn dead_tokens_are_reported() {
    let receiver = Receiver::start(Arc::new(|request: &Request| {
        if request.path.starts_with("/3/device/dead") {
            (410, r#"{"reason":"Unregistered"}"#.into())
        } else if request.path.starts_with("/v1/") && request.json()["message"]["token"] == "fcm-dead" {
            (404, r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}"#.into())
        } else if request.path == "/relay" && request.json()["token"] == "relay-dead" {
            (410, "{}".into())
        } else {
            (200, "{}".into())
        }
    }));
    let mut config = config(&receiver.url("/relay"));
    config.apns = Some(ApnsConfig {
        endpoint_production: receiver.url(""),
        endpoint_sandbox: receiver.url(""),
        topic: "org.example.app".into(),
        auth: ApnsAuth::ProviderToken("provider-token".into()),
        transport: ApnsTransport::Http1ForTests,
    });
    config.fcm = Some(FcmConfig {
        endpoint: receiver.url(""),
        project_id: "my-project".into(),
        access_token: "access-token".into(),
    });
    let dispatcher = PushDispatcher::start(config, Arc::new(NoDirectory)).unwrap();

    let dead = [
        device(DeviceKind::Apns, "deadbeef"),
        device(DeviceKind::Fcm, "fcm-dead"),
        device(DeviceKind::Webhook, "relay-dead"),
    ];
    let mut job = message_job(1, 10, 20, 1, 1);
    if let PushJobKind::Message(push) = &mut job.kind {
        push.devices = dead.to_vec();
        push.devices.push(device(DeviceKind::Fcm, "fcm-alive"));
    }
    dispatcher.sender().try_send_job(job).unwrap();
    let got = reports(&dispatcher.reports(), 4, Duration::from_secs(10));
    for device in dead {
        assert!(got.contains(&PushReport::InvalidToken { user: UserId(10), device: device.clone() }), "{got:?}");
    }
    assert_eq!(got.last(), Some(&PushReport::Completed { job: job_id(1) }), "the job completes after its devices");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count(), 4, "one request per device, no retry of a dead token");
}
