//! Event ids are a contract with consumers (they drop duplicates by id): the id of every sample
//! body is pinned here, as derived before the tape canonicalizer replaced the tree one, so no
//! change to parsing or canonical writing can move an id unnoticed.

use bytes::Bytes;
use time::OffsetDateTime;
use vodbridge_core::Ingress;
use vodbridge_tencent::{Normalizer, RawEvent};

const PINNED: &[(&str, &str)] = &[
    ("EditMediaComplete", "b7d13bc01df578f879ec9839b35f626a"),
    ("FileDeleted", "0dce97b37c25fbca2c7a6d668b0b46f0"),
    ("NewFileUpload", "5c241fc1b5df2c5c5fdf4ae39ffefd3a"),
    ("ProcedureStateChanged", "6a6054d91fee241b3535fb95bb8f619d"),
    ("PullComplete", "90cbcc167f9ac4777fcd8059d77d7a48"),
    ("WechatPublishComplete", "2c7906777e1aa226cb1e6bdca334609f"),
    ("legacy_v2", "dec2391a89e7e5d51ed813b208ff27f0"),
    ("nulls_miniprogram", "7fb4fb963f38b68c9b342d369fb208c1"),
    ("pulled_element", "dab3d50f1c1321e863bc537a57ab83bf"),
    ("signed_callback", "0d2fa02e617c1eeb50617d86006b60e2"),
];

fn id(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let body = Bytes::from(std::fs::read(&path).expect("fixture"));
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Push,
    );
    let event = RawEvent::parse(&body).expect("parses");
    normalizer
        .normalize(event, OffsetDateTime::UNIX_EPOCH)
        .expect("normalizes")
        .id
        .to_string()
}

#[test]
fn sample_ids_do_not_move() {
    for (name, want) in PINNED {
        assert_eq!(id(name), *want, "{name}");
    }
}
