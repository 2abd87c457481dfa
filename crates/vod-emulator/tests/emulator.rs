//! The emulator behaves like VOD: signed API calls only, queue semantics over HTTP, faults,
//! push mode; exercised with the bridge's own VOD client.

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use vod_emulator::{Emulator, EmulatorConfig, Faults, RunningEmulator};
use vodbridge_tencent::{
    api::{ClientConfig, ErrorClass, VodClient},
    tc3::{Credentials, SignRequest},
    Error,
};

const ID: &str = "AKIDTEST";
const KEY: &str = "test-secret-key";

async fn start(visibility: Duration) -> RunningEmulator {
    let mut config = EmulatorConfig::new(ID, KEY);
    config.visibility = visibility;
    config.long_poll = Duration::from_millis(300);
    Emulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("serves")
}

fn client(emulator: &RunningEmulator, key: &str, sub_app_id: Option<u64>) -> VodClient {
    let mut config = ClientConfig::new(emulator.endpoint(), Credentials::new(ID, key));
    config.sub_app_id = sub_app_id;
    VodClient::new(config).expect("client")
}

fn handle(event: &[u8]) -> String {
    let v: Value = serde_json::from_slice(event).expect("json");
    v["EventHandle"].as_str().expect("EventHandle").to_owned()
}

fn api_code(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Api(e)) => e.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pull_confirm_round_trip_through_the_real_client() {
    let emu = start(Duration::from_secs(30)).await;
    emu.emulator.generate(
        1_500_000_001,
        20,
        &["NewFileUpload".into(), "FileDeleted".into()],
    );
    emu.emulator.generate(0, 3, &["PullComplete".into()]);
    let vod = client(&emu, KEY, Some(1_500_000_001));
    // VOD's count runs about 3 minutes behind: events queued just now are not in it yet.
    assert_eq!(vod.describe_events_state().await.expect("state"), 0);
    let first = vod.pull_events().await.expect("pull");
    assert_eq!(first.len(), 16, "at most 16 per pull");
    let second = vod.pull_events().await.expect("pull");
    assert_eq!(second.len(), 4);
    let handles: Vec<String> = first.iter().chain(&second).map(|e| handle(e)).collect();
    for chunk in handles.chunks(16) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        vod.confirm_events(&refs).await.expect("confirm");
    }
    assert!(
        vod.pull_events().await.expect("pull").is_empty(),
        "confirmed events never come back"
    );
    let default_app = client(&emu, KEY, None);
    assert_eq!(
        default_app.pull_events().await.expect("pull").len(),
        3,
        "the default application is separate"
    );
    let stats = emu.emulator.stats();
    assert_eq!((stats.enqueued, stats.confirmed), (23, 20));
    let ledger = emu.emulator.ledger();
    assert!(ledger
        .iter()
        .filter(|e| e.sub_app_id == 1_500_000_001)
        .all(|e| e.confirmed_at.is_some() && e.delivered == 1));
}

#[tokio::test]
async fn unconfirmed_events_come_back_and_expired_handles_are_refused() {
    let emu = start(Duration::from_millis(400)).await;
    emu.emulator.generate(0, 2, &["NewFileUpload".into()]);
    let vod = client(&emu, KEY, None);
    let first = vod.pull_events().await.expect("pull");
    assert_eq!(first.len(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old: Vec<String> = first.iter().map(|e| handle(e)).collect();
    let refs: Vec<&str> = old.iter().map(String::as_str).collect();
    let refused = vod.confirm_events(&refs).await;
    assert!(
        matches!(&refused, Err(e) if e.class() == ErrorClass::ExpiredHandle),
        "{refused:?}"
    );
    let again = vod.pull_events().await.expect("pull");
    assert_eq!(again.len(), 2, "redelivered after the visibility timeout");
    let fresh: Vec<String> = again.iter().map(|e| handle(e)).collect();
    assert_ne!(fresh, old);
    let refs: Vec<&str> = fresh.iter().map(String::as_str).collect();
    vod.confirm_events(&refs)
        .await
        .expect("fresh handles confirm");
    assert!(emu
        .emulator
        .ledger()
        .iter()
        .all(|e| e.delivered == 2 && e.confirmed_at.is_some()));
}

#[tokio::test]
async fn long_poll_waits_and_wakes_on_enqueue() {
    let emu = start(Duration::from_secs(30)).await;
    let vod = client(&emu, KEY, None);
    let started = std::time::Instant::now();
    assert!(vod.pull_events().await.expect("pull").is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "an empty pull waits the long poll"
    );
    let waiting = tokio::spawn({
        let vod = vod.clone();
        async move { vod.pull_events().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    emu.emulator.enqueue(
        0,
        &json!({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["1"]}}),
    );
    let events = waiting.await.expect("task").expect("pull");
    assert_eq!(events.len(), 1, "the waiting pull got the new event");
}

#[tokio::test]
async fn only_correctly_signed_requests_are_served() {
    let emu = start(Duration::from_secs(30)).await;
    emu.emulator.generate(0, 1, &["NewFileUpload".into()]);
    assert_eq!(
        api_code(client(&emu, "wrong-key", None).pull_events().await),
        "AuthFailure.SignatureFailure"
    );
    let stranger = VodClient::new(ClientConfig::new(
        emu.endpoint(),
        Credentials::new("AKIDOTHER", KEY),
    ))
    .expect("client");
    assert_eq!(
        api_code(stranger.pull_events().await),
        "AuthFailure.SecretIdNotFound"
    );

    // Hand-made requests: a stale timestamp, and a body altered after signing.
    let http = reqwest::Client::new();
    let host = emu.addr.to_string();
    let send = |timestamp: i64, signed_body: &'static [u8], sent_body: &'static [u8]| {
        let headers = [
            ("content-type", "application/json"),
            ("host", host.as_str()),
        ];
        let request = SignRequest {
            method: "POST",
            query: "",
            headers: &headers,
            payload: signed_body,
            service: "vod",
            timestamp,
        };
        let authorization = Credentials::new(ID, KEY)
            .authorize(&request)
            .expect("signs");
        http.post(emu.endpoint())
            .header("content-type", "application/json")
            .header("x-tc-action", "PullEvents")
            .header("x-tc-version", "2018-07-17")
            .header("x-tc-timestamp", timestamp.to_string())
            .header("authorization", authorization)
            .body(sent_body)
            .send()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let code = |v: Value| {
        v["Response"]["Error"]["Code"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    };
    let stale: Value = send(now - 600, b"{}", b"{}")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(code(stale), "AuthFailure.SignatureExpire");
    let altered: Value = send(now, b"{}", br#"{"SubAppId":1}"#)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(code(altered), "AuthFailure.SignatureFailure");
    let fine: Value = send(now, b"{}", b"{}")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        fine["Response"]["EventSet"].as_array().map(Vec::len),
        Some(1),
        "{fine}"
    );
    assert!(fine["Response"]["RequestId"].is_string());
    assert_eq!(emu.emulator.stats().auth_failures, 4);
}

#[tokio::test]
async fn faults_are_injected() {
    let emu = start(Duration::from_secs(30)).await;
    let vod = client(&emu, KEY, None);
    emu.emulator.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let result = vod.describe_events_state().await;
    assert!(
        matches!(&result, Err(e) if e.class() == ErrorClass::Transient),
        "{result:?}"
    );
    emu.emulator.set_faults(Faults {
        throttle_rps: 2,
        ..Faults::default()
    });
    let mut throttled = 0;
    for _ in 0..6 {
        if matches!(vod.describe_events_state().await, Err(e) if e.class() == ErrorClass::Throttled)
        {
            throttled += 1;
        }
    }
    assert!(
        throttled >= 3,
        "calls beyond 2/s are throttled, got {throttled}"
    );
    emu.emulator.set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    vod.describe_events_state().await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The admin API sets faults too.
    let http = reqwest::Client::new();
    let answer = http
        .put(format!("{}/emulator/faults", emu.endpoint()))
        .body(r#"{"error_rate":2}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 400);
}

#[tokio::test]
async fn admin_api_enqueues_and_reports() {
    let emu = start(Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let base = emu.endpoint();
    let body = r#"[{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"}},{"EventType":"Brand-new"}]"#;
    let keys: Value = http
        .post(format!("{base}/emulator/events?sub_app_id=7"))
        .body(body)
        .send()
        .await
        .expect("ok")
        .json()
        .await
        .expect("json");
    assert_eq!(keys["Keys"].as_array().map(Vec::len), Some(2));
    let generated: Value = http
        .post(format!(
            "{base}/emulator/events?sub_app_id=7&generate=5&types=all"
        ))
        .send()
        .await
        .expect("ok")
        .json()
        .await
        .expect("json");
    assert_eq!(generated["Keys"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        http.post(format!("{base}/emulator/events"))
            .body("[1]")
            .send()
            .await
            .expect("answer")
            .status(),
        400
    );
    let ledger: Value = http
        .get(format!("{base}/emulator/ledger"))
        .send()
        .await
        .expect("ok")
        .json()
        .await
        .expect("json");
    let ledger = ledger.as_array().cloned().unwrap_or_default();
    assert_eq!(ledger.len(), 7);
    assert_eq!(ledger[1]["event_type"], "Brand-new");
    assert!(ledger
        .iter()
        .all(|e| e["confirmed_at"].is_null() && e["delivered"] == 0 && e["sub_app_id"] == 7));
    let stats: Value = http
        .get(format!("{base}/emulator/stats"))
        .send()
        .await
        .expect("ok")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (stats["enqueued"].as_u64(), stats["pending"].as_u64()),
        (Some(7), Some(7))
    );
}

#[tokio::test]
async fn push_mode_posts_like_vod_with_sign_and_t() {
    use axum::{routing::post, Router};
    let received = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<Value>::new()));
    let app = Router::new().route(
        "/cb",
        post({
            let received = received.clone();
            move |body: String| async move {
                received
                    .lock()
                    .await
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let emu = start(Duration::from_secs(30)).await;
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/emulator/push?url={url}&generate=5&sign_key=abcXYZ123",
            emu.endpoint()
        ))
        .send()
        .await
        .expect("ok")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["Keys"].as_array().map(Vec::len), Some(5));
    for _ in 0..100 {
        if emu.emulator.stats().confirmed == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emu.emulator.stats().confirmed, 5);
    let received = received.lock().await;
    assert_eq!(received.len(), 5);
    let key = vodbridge_tencent::SignKey::new("abcXYZ123");
    for event in received.iter() {
        let t = event["T"].as_i64().expect("T");
        key.verify(
            event["Sign"].as_str().expect("Sign"),
            t,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            0,
        )
        .expect("a valid Sign");
    }
    assert!(emu
        .emulator
        .ledger()
        .iter()
        .all(|e| e.mode == "push" && e.delivered == 1));
}

/// `DescribeSubAppIds` through the client: every page read (450 sub-apps are three calls), a
/// change made over the admin API seen on the next listing, and the limit refused above 200.
#[tokio::test]
async fn sub_apps_are_listed_page_by_page_and_follow_changes() {
    let emu = start(Duration::from_secs(30)).await;
    for i in 0..450 {
        emu.emulator.add_sub_app(vod_emulator::sub_app(
            1_500_000_000 + i,
            &format!("tenant-{i}"),
        ));
    }
    let vod = client(&emu, KEY, None);
    let all = vod.all_sub_app_ids().await.expect("lists");
    assert_eq!(all.len(), 450);
    assert_eq!(all[449].sub_app_id, 1_500_000_449);
    assert!(all.iter().all(|s| s.status.is_on()));

    // Over HTTP, as a test of another process would: one disabled, one removed, one added.
    let http = reqwest::Client::new();
    let mut off = vod_emulator::sub_app(1_500_000_007, "tenant-7");
    off.status = vod_emulator::SubAppStatus::Off;
    let put = http
        .put(format!("{}/emulator/sub-apps", emu.endpoint()))
        .json(&off)
        .send()
        .await
        .expect("answers");
    assert!(put.status().is_success());
    let deleted = http
        .delete(format!("{}/emulator/sub-apps/1500000008", emu.endpoint()))
        .send()
        .await
        .expect("answers");
    assert_eq!(deleted.status().as_u16(), 204);
    emu.emulator
        .add_sub_app(vod_emulator::sub_app(1_600_000_000, "late"));
    let all = vod.all_sub_app_ids().await.expect("lists");
    assert_eq!(all.len(), 450);
    let find = |id| all.iter().find(|s| s.sub_app_id == id).map(|s| s.status);
    assert_eq!(find(1_500_000_007), Some(vod_emulator::SubAppStatus::Off));
    assert_eq!(find(1_500_000_008), None);
    assert_eq!(find(1_600_000_000), Some(vod_emulator::SubAppStatus::On));

    let too_many = vod
        .describe_sub_app_ids(&vodbridge_tencent::sub_apps::DescribeSubAppIds {
            limit: Some(201),
            ..Default::default()
        })
        .await;
    assert_eq!(api_code(too_many), "InvalidParameterValue.Limit");
}
